"""Transfer learning as recipe settings: an encoder and a decoder started from another
checkpoint, word vectors for the embeddings, a frozen backbone that trains from step N on."""
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import RECIPES, mmdesc
from mmdesc import checkpoint
from mmdesc.tokenize import Tokenizer

TINY = RECIPES / "tiny" / "image.yaml"
QUIET = ("train.valid_size=2", "search.beam=1", "train.log_every=1")
WORDS = ("a", "an", "the", "small", "large", "red", "green", "blue", "yellow", "purple", "orange", "circle", "square", "triangle",
         "star", "cross", "left", "right", "of", "above", "below", "zebra")


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_encoder_and_decoder_start_from_another_checkpoint(tiny_data, tiny_image_run, tmp_path):
    out = tmp_path / "run"
    r = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={out}", f"encoder.init_from={tiny_image_run}",
               f"decoder.init_from={tiny_image_run}", "encoder.finetune=none", "tokenizer.vocab_size=50",
               "train.max_steps=1", "train.lr=1e-9", "train.warmup=0", "train.valid_every=1", *QUIET)
    assert r.code == 0, r.err
    assert f"from {tiny_image_run}" in r.err and "(and its tokenizer)" in r.err
    source = checkpoint.resolve(tiny_image_run)
    ours = checkpoint.read_meta(out / "ckpt-0000001")
    assert ours["tokenizer"] == checkpoint.read_meta(source)["tokenizer"]  # the decoder's vocabulary came along
    assert len(Tokenizer.from_dict(ours["tokenizer"])) != 50
    a, b = weights(source), weights(out / "ckpt-0000001")
    assert a.keys() == b.keys()
    for k in a:  # one step at lr 1e-9 from the other model's weights
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


def test_a_checkpoint_that_does_not_fit_is_one_clear_error(tiny_data, tiny_image_run, tmp_path):
    r = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={tmp_path / 'a'}", f"encoder.init_from={tiny_image_run}",
               "encoder.channels=12", "encoder.grid=3")
    assert r.code == 2 and "Traceback" not in r.err
    line = r.err.splitlines()[-1]
    assert line.startswith("  - encoder.init_from: ") and "does not fit this encoder" in line
    assert "32 mismatches (row (3, 12) here, (4, 8) there; " in line and "running_mean (3,) here, (2,) there" in line
    r = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={tmp_path / 'b'}", f"decoder.init_from={tmp_path}")
    assert r.code == 2 and "decoder.init_from: " in r.err and "not a checkpoint" in r.err


def test_word_vectors_and_a_backbone_that_trains_from_step_n(tiny_data, tmp_path):
    vectors = tmp_path / "vectors.txt"  # word2vec text: a header, then a word and 16 numbers a line
    rows = {w: [10 + i + j / 100 for j in range(16)] for i, w in enumerate(WORDS)}
    vectors.write_text(f"{len(rows)} 16\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in rows.items()))
    out = tmp_path / "run"
    r = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={out}", f"decoder.embeddings={vectors}",
               "encoder.finetune=none", "encoder.unfreeze_at=2", "encoder.backbone_lr=0.01", "train.max_steps=3",
               "train.save_every=1", "train.keep_last=5", "train.valid_every=3", *QUIET)
    assert r.code == 0, r.err
    found, of = map(int, r.err.split("embeddings: ")[1].split(" vocabulary")[0].split(" of "))
    assert 8 <= found < of and f"found in {vectors}" in r.err  # the whole words of a 60-piece vocabulary
    assert "step 2: the encoder's backbone trains from here on" in r.err

    tok = Tokenizer.from_dict(checkpoint.read_meta(out / "ckpt-0000001")["tokenizer"])
    first = weights(out / "ckpt-0000001")
    hits = 0
    for i in range(4, len(tok)):
        word = tok.pieces([i])[0].lstrip("\u2581")
        if word in rows and tok.pieces([i])[0].startswith("\u2581"):
            assert torch.allclose(first["decoder.embed.weight"][i], torch.tensor(rows[word]), atol=0.05), word
            hits += 1
    assert hits == found

    w = [weights(out / f"ckpt-{s:07d}") for s in (1, 2, 3)]
    trunk = [k for k in w[0] if k.startswith("encoder.backbone.") and "running" not in k and "num_batches" not in k]
    assert trunk and all(torch.equal(w[0][k], w[1][k]) for k in trunk)  # frozen for steps 1 and 2
    assert all(not torch.equal(w[1][k], w[2][k]) for k in trunk if k.endswith("weight"))  # trained in step 3
    groups = json.loads((out / "ckpt-0000003" / "train_state.json").read_text())["optimizer"]["param_groups"]
    assert len(groups) == 4 and [g["initial_lr"] for g in groups[2:]] == [0.01, 0.01]


@pytest.mark.parametrize("setting, says", [
    (("decoder.embeddings={vectors}",), "has 5-dimensional vectors but decoder.emb is 16"),
    (("encoder.unfreeze_at=3",), "encoder.unfreeze_at: needs a backbone that starts frozen"),
])
def test_settings_that_cannot_work_are_one_clear_error(tiny_data, tmp_path, setting, says):
    vectors = tmp_path / "glove.txt"
    vectors.write_text("red 0.1 0.2 0.3 0.4 0.5\ncircle 1 2 3 4 5\n")
    r = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={tmp_path / 'run'}",
               *(s.format(vectors=vectors) for s in setting))
    assert r.code == 2 and says in r.err and "Traceback" not in r.err
