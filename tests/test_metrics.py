"""mmdesc.metrics: text scores against known values and properties; attention scores."""
import math

import numpy as np
import pytest

from mmdesc import metrics as m
from mmdesc.contexts import GridLayout, TimeLayout


# ------------------------------------------------------------------- BLEU / chrF

def test_bleu_identical_is_100():
    hyps = ["a red circle left of a blue square", "two green stars"]
    assert m.bleu(hyps, [[h] for h in hyps]) == pytest.approx(100.0)
    assert m.chrf(hyps, [[h] for h in hyps]) == pytest.approx(100.0)


def test_bleu_variable_reference_counts():
    import sacrebleu

    hyps = ["a red circle left of a blue square", "a big green star"]
    refs = [["a red circle next to a blue square", "a red circle left of a blue square", "a circle"],
            ["a large green star"]]
    score = m.bleu(hyps, refs)
    padded = [[refs[0][k], refs[1][k] if k < 1 else None] for k in range(3)]
    assert score == pytest.approx(sacrebleu.corpus_bleu(hyps, padded, tokenize="13a").score)
    # one more matching reference can only help
    assert score >= m.bleu(hyps, [[refs[0][0]], refs[1]])
    scores = m.corpus_scores(hyps, refs)
    assert "nrefs:var" in scores["bleu_signature"] and "tok:13a" in scores["bleu_signature"]
    assert "nrefs:var" in scores["chrf_signature"]


def test_bleu_orders_decrease_for_partial_match():
    hyps, refs = ["the cat sat on a mat today"], [["the cat sat on the mat"]]
    scores = m.corpus_scores(hyps, refs)
    assert set(scores) == {"bleu1", "bleu2", "bleu3", "bleu4", "chrf", "cider_d", "rouge_l",
                           "wer", "cer", "substitutions", "deletions", "insertions", "ref_words",
                           "bleu_signature", "chrf_signature"}
    # "a" for "the" and an extra "today": 2 edits over 6 reference words
    assert (scores["substitutions"], scores["deletions"], scores["insertions"]) == (1, 0, 1)
    assert scores["wer"] == pytest.approx(100 * 2 / 6)
    assert scores["bleu1"] >= scores["bleu2"] >= scores["bleu3"] >= scores["bleu4"] > 0
    assert scores["bleu4"] == pytest.approx(m.bleu(hyps, refs))


def test_bad_shapes_are_value_errors():
    with pytest.raises(ValueError):
        m.bleu(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError):
        m.bleu(["a"], [[]])
    with pytest.raises(ValueError):
        m.cider_d(["a"], ["a"])  # a string, not a list of references


# ------------------------------------------------------------------- CIDEr-D

def test_cider_d_hand_computed_two_images():
    # idf of every n-gram: log 2 - log 1. Image 1 matches on 1- and 2-grams (3-, 4-grams: no
    # vector, 0) -> (1 + 1 + 0 + 0) / 4 * 10 = 5. Image 2: unigram cosine 1/sqrt(2), one
    # bigram fewer -> penalty exp(-1 / 72).
    got = m.cider_d(["a b", "c"], [["a b"], ["c d"]])
    want = (5.0 + 2.5 * math.exp(-1 / 72) / math.sqrt(2)) / 2
    assert got == pytest.approx(want)


def test_cider_d_hand_computed_unseen_ngram_and_empty_hypothesis():
    # 3 images; df(a) = 2. Hypothesis 1 "a x": x and (a, x) appear in no reference and get
    # the full idf log 3 but no overlap; only "a" counts in the unigram cosine.
    got = m.cider_d(["a x", "d", ""], [["a b"], ["a c"], ["d"]])
    ia, i3 = math.log(3) - math.log(2), math.log(3)
    uni = ia * ia / (ia * ia + i3 * i3)
    assert got == pytest.approx(uni / 4 * 10 / 3)


def test_cider_d_prefers_the_right_caption_and_lowercases():
    refs = [["a red circle", "the red circle"], ["a blue square", "one blue square"],
            ["a green star", "a small green star"]]
    right = ["A red circle", "a blue square", "a green star"]
    wrong = ["a green star", "a red circle", "a blue square"]
    assert m.cider_d(right, refs) > m.cider_d(wrong, refs) >= 0
    assert m.cider_d(right, refs) > 0
    assert m.cider_d(["a red circle"], [["a red circle"]]) == 0.0  # one image: every idf is 0


# ------------------------------------------------------------------- WER / CER

def test_wer_cer_known_edits():
    assert m.wer(["a b c"], ["a x c d"]) == pytest.approx(50.0)  # 1 substitution, 1 deletion
    assert m.wer(["a b c", "d"], [["a b c"], ["e f"]]) == pytest.approx(100.0 * 2 / 5)
    assert m.cer(["abc"], ["abd"]) == pytest.approx(100.0 / 3)
    assert m.cer(["a  b"], ["a b"]) == 0.0
    assert m.wer([""], ["one two"]) == pytest.approx(100.0)


def test_error_rates_count_each_kind_of_edit():
    got = m.error_rates(["a b c", "x y z w", ""], [["a x c d"], "x y z", "gone word"])
    # 1 sub + 1 del; 1 ins; 2 del -> 5 edits over 4 + 3 + 2 reference words
    assert (got["substitutions"], got["deletions"], got["insertions"], got["ref_words"]) == (1, 3, 1, 9)
    assert got["wer"] == pytest.approx(100 * 5 / 9)
    assert m.error_rates(["same"], ["same"])["cer"] == 0.0
    assert m.error_rates([""], [""])["wer"] == 0.0 and m.error_rates(["x"], [""])["wer"] == 100.0


def test_time_alignment_centre_of_mass_and_backward_steps():
    from mmdesc.contexts import TimeLayout

    layout = TimeLayout(tuple((0.1 * n, 0.1 * (n + 1)) for n in range(10)), 1.0)  # centres .05 .. .95
    spans = [[0.0, 0.3], [0.3, 0.6], [0.6, 1.0]]
    alpha = np.zeros((4, 12))  # 4 pieces (word 1 has two), 2 padding columns ignored
    alpha[0, 1] = 1.0                      # word 0 at 0.15: in [0, .3]
    alpha[1, 3], alpha[2, 5] = 1.0, 1.0    # word 1: mean of 0.35 and 0.55 = 0.45: in
    alpha[3, 0], alpha[3, 9] = 0.5, 0.5    # word 2: centre of mass 0.5, outside [.6, 1]
    got = m.time_alignment([(alpha, [0, 1, 1, 2], layout, spans)])
    assert got["time_alignment"] == pytest.approx(100 * 2 / 3) and got["time_alignment_n"] == 3
    # positions 1 -> 3 -> 5 -> 4.5: the last step is not more than half a position back
    assert got["backward_steps"] == 0.0
    alpha[3] = 0.0
    alpha[3, 2] = 1.0                      # 5 -> 2: backwards
    got = m.time_alignment([(alpha, [0, 1, 1, 2], layout, spans), (alpha, [0, 1, 1, 2], layout, spans[:2])])
    assert got["backward_steps"] == pytest.approx(100 / 3) and got["time_alignment_skipped"] == 1


# ------------------------------------------------------------------- attention

def test_word_attention_averages_pieces_and_sums_source_words():
    rng = np.random.default_rng(0)
    alpha = rng.random((5, 7))
    alpha /= alpha.sum(1, keepdims=True)
    tgt = [0, 0, 1, 2, 2]
    src = [0, 0, 1, 1, 1, 2, 3]
    words = m.word_attention(alpha, tgt)
    assert words.shape == (3, 7)
    np.testing.assert_allclose(words[0], (alpha[0] + alpha[1]) / 2)
    np.testing.assert_allclose(words.sum(1), 1.0)
    both = m.word_attention(alpha, tgt, src)
    assert both.shape == (3, 4)
    np.testing.assert_allclose(both[:, 1], words[:, 2:5].sum(1))
    np.testing.assert_allclose(both.sum(1), 1.0)
    with pytest.raises(ValueError):
        m.word_attention(alpha, [0, 1])


def test_word_attention_accepts_torch():
    torch = pytest.importorskip("torch")
    alpha = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(m.word_attention(alpha, [0, 0]), [[0.375, 0.625]])


def test_grounding_hit_and_miss_on_a_grid():
    layout = GridLayout.regular((2, 2), (64, 64))  # cell centres (16,16) (48,16) (16,48) (48,48)
    regions = {"circle": [[0, 0, 32, 32]], "square": [[32, 32, 64, 64], [40, 0, 64, 20]]}
    words = ["a", "circle", "and", "square", "circle"]
    alpha = np.array([
        [0.25, 0.25, 0.25, 0.25],
        [0.7, 0.1, 0.1, 0.1],   # circle -> cell 0: hit
        [0.1, 0.1, 0.1, 0.7],
        [0.1, 0.1, 0.7, 0.1],   # square -> cell 2: miss
        [0.1, 0.1, 0.1, 0.7],   # circle -> cell 3: miss
    ])
    out = m.grounding([(words, alpha, layout, regions)])
    assert out == {"grounding": pytest.approx(100 / 3), "grounding_n": 3}
    alpha[3] = [0.1, 0.7, 0.1, 0.1]  # cell 1's centre (48, 16) lies in the second square box
    assert m.grounding([(words, alpha, layout, regions)])["grounding"] == pytest.approx(200 / 3)
    assert m.grounding([]) == {"grounding": 0.0, "grounding_n": 0}


def test_grounding_on_time_segments_ignores_padding_columns():
    layout = TimeLayout(spans=((0.0, 1.0), (1.0, 2.0), (2.0, 3.0)), duration=3.0)
    alpha = np.array([[0.1, 0.8, 0.1, 0.0], [0.0, 0.0, 0.1, 0.9]])  # last column: padding
    out = m.grounding([(["red", "star"], alpha, layout, {"red": [[1.0, 2.0]], "star": [[2.0, 3.0]]})])
    assert out == {"grounding": 100.0, "grounding_n": 2}


def test_alignment_error_rate():
    sure = {(0, 0), (1, 1)}
    possible = {(2, 1)}  # not a superset of sure: it is treated as sure | possible
    perfect = m.alignment_error_rate([(sure, sure, possible)])
    assert perfect == {"aer": 0.0, "align_precision": 100.0, "align_recall": 100.0}
    predicted = {(0, 0), (1, 2), (2, 1)}
    # |A∩S| = 1, |A∩P| = 2, |A| + |S| = 5 -> AER = 1 - 3/5
    out = m.alignment_error_rate([(predicted, sure, possible), (set(), set(), set())])
    assert out["aer"] == pytest.approx(40.0)
    assert out["align_precision"] == pytest.approx(200 / 3)
    assert out["align_recall"] == pytest.approx(50.0)
    # JSON-style lists work too
    lists = m.alignment_error_rate([([[0, 0], [1, 2], [2, 1]], [[0, 0], [1, 1]], [[2, 1]])])
    assert lists == out


def test_argmax_alignment_is_perfect_for_a_diagonal():
    alpha = np.eye(3)[[2, 0, 1]] * 0.8 + 0.05  # target word j attends source word perm[j]
    pred = m.argmax_alignment(alpha)
    assert pred == {(2, 0), (0, 1), (1, 2)}
    assert m.alignment_error_rate([(pred, pred, set())])["aer"] == 0.0


def test_metrics_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, mmdesc.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_selection_knows_each_metric_direction():
    scores = {"bleu4": 30.0, "wer": 12.0, "loss": 2.0, "chrf": 50.0}
    assert m.selection_value(scores, "bleu") == 30.0  # "bleu" is BLEU-4
    assert m.improved("wer", 11.0, 12.0) and not m.improved("wer", 13.0, 12.0)
    assert m.improved("loss", 1.0, 2.0) and not m.improved("loss", 3.0, 2.0)
    assert m.improved("bleu", 31.0, 30.0) and not m.improved("chrf", 49.0, 50.0)
    assert m.improved("wer", 80.0, None) and not m.improved("wer", float("nan"), None)
    with pytest.raises(KeyError, match="no 'cider_d' score"):
        m.selection_value(scores, "cider_d")


# ------------------------------------------------------------------- objects

CROSS = [{"shape": "cross", "colour": "green", "size": "large", "box": [10, 10, 30, 30]}]
PAIR = [{"shape": "circle", "colour": "red", "size": "small", "box": [5, 20, 15, 30]},
        {"shape": "square", "colour": "blue", "size": "large", "box": [35, 15, 60, 40]}]
STACK = [{"shape": "square", "colour": "purple", "size": "small", "box": [20, 2, 36, 18]},
         {"shape": "square", "colour": "yellow", "size": "small", "box": [22, 40, 38, 56]}]


def scores(hyp: str, scene: list[dict]) -> dict:
    from mmdesc.corpora.synth import VOCABULARY

    return m.object_scores([hyp], [scene], VOCABULARY)


def test_parse_objects_is_tolerant_of_broken_captions():
    from mmdesc.corpora.synth import VOCABULARY

    mentions, relations = m.parse_objects("cross and a large red cross to the left of", VOCABULARY)
    assert mentions == [{"shape": "cross"}, {"shape": "cross", "size": "large", "colour": "red"}]
    assert relations == []
    mentions, relations = m.parse_objects("there is an orange star above a small blue circle and a red", VOCABULARY)
    assert mentions == [{"colour": "orange", "shape": "star"}, {"size": "small", "colour": "blue", "shape": "circle"}]
    assert relations == [(0, "above", 1)]


def test_the_right_caption_scores_perfectly():
    s = scores("a small red circle to the left of a large blue square", PAIR)
    assert s["chair_i"] == s["chair_s"] == 0.0
    assert s["count_accuracy"] == s["object_recall"] == s["attribute_accuracy"] == s["relation_accuracy"] == 100.0
    assert (s["mentions_n"], s["relations_n"]) == (2, 1)


def test_an_invented_duplicate_is_a_hallucination_and_a_miscount():
    s = scores("a large green cross and a large green cross", CROSS)
    assert s["chair_i"] == 50.0 and s["chair_s"] == 100.0
    assert s["count_accuracy"] == 0.0 and s["object_recall"] == 100.0
    assert s["attribute_accuracy"] == 100.0  # the one it matched is right


def test_an_invented_shape_is_a_hallucination_and_a_wrong_shape():
    s = scores("a red star", CROSS)
    assert s["chair_i"] == 100.0 and s["chair_s"] == 100.0 and s["count_accuracy"] == 100.0
    assert s["shape_accuracy"] == 0.0 and s["colour_accuracy"] == 0.0 and s["object_recall"] == 0.0


def test_a_missing_object_is_a_miscount_not_a_hallucination():
    s = scores("a small red circle", PAIR)
    assert s["chair_i"] == s["chair_s"] == 0.0
    assert s["count_accuracy"] == 0.0 and s["object_recall"] == 50.0


def test_a_wrong_colour_is_an_attribute_error():
    s = scores("a small red circle to the left of a large green square", PAIR)
    assert s["chair_s"] == 0.0 and s["count_accuracy"] == 100.0
    assert s["colour_accuracy"] == 50.0 and s["shape_accuracy"] == s["size_accuracy"] == 100.0
    assert s["attribute_accuracy"] == pytest.approx(100 * 5 / 6)
    assert s["relation_accuracy"] == 100.0


def test_a_wrong_relation_is_caught_either_way_round():
    assert scores("a purple square to the left of a yellow square", STACK)["relation_accuracy"] == 0.0
    assert scores("a purple square above a yellow square", STACK)["relation_accuracy"] == 100.0
    assert scores("a yellow square below a purple square", STACK)["relation_accuracy"] == 100.0
    assert scores("a yellow square above a purple square", STACK)["relation_accuracy"] == 0.0
    assert scores("a large blue square to the right of a small red circle", PAIR)["relation_accuracy"] == 100.0


def test_object_scores_over_a_corpus_and_empty_captions():
    from mmdesc.corpora.synth import VOCABULARY

    s = m.object_scores(["a large green cross", "", "a small red circle and a large blue square and a red star"],
                        [CROSS, CROSS, PAIR], VOCABULARY)
    assert s["chair_s"] == pytest.approx(100 / 3) and s["chair_i"] == pytest.approx(100 / 4)
    assert s["count_accuracy"] == pytest.approx(100 / 3) and s["mentions_n"] == 4
    assert s["object_recall"] == pytest.approx(100 * 3 / 4)
    with pytest.raises(ValueError):
        m.object_scores(["a red star"], [], VOCABULARY)


def test_object_scores_follow_any_vocabulary():
    fruit = m.ObjectVocabulary(words={"fruit": ("apple", "pear"), "ripe": ("green", "ripe")}, head="fruit",
                               relations={"next to": lambda a, b, boxes: abs(a[0] - b[0]) < 20})
    scene = [{"fruit": "apple", "ripe": "ripe", "box": [0, 0, 5, 5]},
             {"fruit": "pear", "ripe": "green", "box": [10, 0, 15, 5]}]
    s = m.object_scores(["one green apple next to a green pear"], [scene], fruit)
    assert s["ripe_accuracy"] == 50.0 and s["fruit_accuracy"] == 100.0 and s["relation_accuracy"] == 100.0


def test_rouge_l_by_hand():
    assert m.lcs_length("a b c d".split(), "b x d".split()) == 2 and m.lcs_length([], ["a"]) == 0
    # LCS with "a red circle" = 3 of 4 hypothesis words and all 3 reference words: P = 3/4, R = 1;
    # with "a small blue circle left": P = 3/4, R = 3/5. Best P and best R: 3/4 and 1.
    # F = (1 + 1.2^2) * 0.75 * 1 / (1 + 1.2^2 * 0.75) = 1.83 / 2.08
    one = m.rouge_l(["a small red circle"], [["a red circle", "a small blue circle left"]])
    assert one == pytest.approx(100 * 1.83 / 2.08)
    # the best precision and the best recall come from different references, as in coco-caption
    two = m.rouge_l(["a b c d"], [["a b", "a b c d e f g h"]])
    assert two == pytest.approx(100.0)
    assert m.rouge_l(["", "A B"], [["a b"], ["a b"]]) == pytest.approx(50.0)  # empty: 0; case folded
