"""Word classes of the caption grammar, in both languages (for compare's figures)."""
import pytest

from mmdesc.corpora import synth


@pytest.mark.parametrize("word, cls", [("circle", "shape"), ("étoile", "shape"), ("violette", "colour"),
                                       ("grande", "size"), ("left", "relation"), ("au-dessus", "relation"),
                                       ("d'une", "function"), ("a", "function"), ("zebra", "other")])
def test_word_classes(word, cls):
    assert synth.word_class(word) == cls


def test_every_caption_word_has_a_class():
    import random

    rng = random.Random(4)
    for _ in range(50):
        english = synth.captions(synth.sample_scene(rng))[0]
        french, _ = synth.translate_fr(english)
        assert all(synth.word_class(w) in synth.WORD_CLASSES[:-1] for w in (english + " " + french).split())
