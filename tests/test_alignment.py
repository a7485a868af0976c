"""mmdesc.alignment: the statistics of attention matrices, for every layout kind, batched."""
import numpy as np
import pytest

from mmdesc import alignment, metrics
from mmdesc.alignment import corpus_statistics, grounding_by, pad, word_statistics
from mmdesc.contexts import GridLayout, TimeLayout, TokenLayout


def tokens(n):
    return TokenLayout(tokens=tuple(f"t{k}" for k in range(n)), words=tuple(range(n)))


def times(n):
    return TimeLayout(spans=tuple((k * 0.5, (k + 1) * 0.5) for k in range(n)), duration=n * 0.5)


def test_one_position_per_word_in_order():
    stats = corpus_statistics([(np.eye(5), tokens(5))])
    assert stats["entropy"] == pytest.approx(0.0) and stats["peak"] == pytest.approx(1.0)
    assert stats["coverage"] == pytest.approx(1.0) and stats["ds_gap"] == pytest.approx(0.0)
    assert stats["backward"] == 0.0 and stats["jump"] == pytest.approx(1 / 4)  # one step of 4 per word


def test_even_attention_has_entropy_one_and_full_coverage():
    stats = corpus_statistics([(np.full((3, 7), 1 / 7), times(7))])
    assert stats["entropy"] == pytest.approx(1.0) and stats["peak"] == pytest.approx(1 / 7)
    assert stats["coverage"] == pytest.approx(1.0) and stats["ds_gap"] == pytest.approx(0.0)


def test_reading_backwards_is_all_backward_steps():
    stats = corpus_statistics([(np.eye(4)[::-1], times(4))])
    assert stats["backward"] == pytest.approx(100.0)
    assert stats["jump"] == pytest.approx(1 / 3)


def test_grid_has_no_order_and_one_cell_covers_a_quarter():
    layout = GridLayout.regular((2, 2), (8, 8))
    a = np.zeros((3, 4))
    a[:, 0] = 1.0  # every word on cell 0
    stats = corpus_statistics([(a, layout)])
    assert "backward" not in stats and "jump" not in stats
    assert stats["coverage"] == pytest.approx(0.25)
    # column sums 3, 0, 0, 0 against an even share of 3/4: (1-4)^2 + 1 + 1 + 1, over 4 cells
    assert stats["ds_gap"] == pytest.approx(3.0)


def test_padding_columns_past_the_layout_are_dropped_and_rows_count_once():
    padded = np.hstack([np.eye(3), np.zeros((3, 2))])  # two padding columns
    plain = corpus_statistics([(np.eye(3), tokens(3))])
    assert corpus_statistics([(padded, tokens(3))]) == pytest.approx(plain)
    with pytest.raises(ValueError, match="3 positions"):
        corpus_statistics([(np.ones((2, 2)) / 2, tokens(3))])


def test_a_ragged_batch_gives_what_each_sentence_gives_alone():
    rng = np.random.default_rng(5)
    pairs = []
    for w, n, lay in ((2, 5, tokens(5)), (6, 3, times(3)), (4, 9, GridLayout.regular((3, 3), (30, 30)))):
        a = rng.random((w, n)) ** 4
        pairs.append((a / a.sum(1, keepdims=True), lay))
    together = word_statistics(pad(pairs))
    for s, (a, lay) in enumerate(pairs):
        alone = word_statistics(pad([(a, lay)]))
        w = a.shape[0]
        for key in ("entropy", "peak", "position"):
            np.testing.assert_allclose(together[key][s, :w], alone[key][0, :w])
        np.testing.assert_array_equal(together["position"][s, :w], a.argmax(1))
    pooled = corpus_statistics(pairs)
    words = sum(a.shape[0] for a, _ in pairs)
    entropy = sum(corpus_statistics([p])["entropy"] * p[0].shape[0] for p in pairs) / words
    assert pooled["entropy"] == pytest.approx(entropy)
    assert pooled["backward"] == pytest.approx(  # steps of the two ordered sentences pooled
        100 * sum(np.sum(np.diff(a.argmax(1)) < 0) for a, lay in pairs[:2]) / (1 + 5))


def test_torch_attention_and_empty_outputs():
    torch = pytest.importorskip("torch")
    stats = corpus_statistics([(torch.eye(3), tokens(3)), (torch.zeros(0, 4), tokens(4))])
    assert stats["entropy"] == pytest.approx(0.0) and stats["coverage"] == pytest.approx(1.0)
    assert corpus_statistics([(torch.zeros(0, 4), tokens(4))]) == {}
    assert set(alignment.STATISTICS) >= set(stats)


def test_grounding_by_word_class_splits_the_same_count():
    layout = GridLayout.regular((1, 2), (20, 10))  # cell 0 left, cell 1 right
    words = ["a", "red", "circle", "blue", "square"]
    a = np.array([[0.5, 0.5], [0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    regions = {"circle": [[0, 0, 10, 10]], "square": [[10, 0, 20, 10]], "red": [[0, 0, 10, 10]]}
    items = [(words, a, layout, regions)]
    shapes = {"circle", "square"}
    by = grounding_by(items, lambda w: "shape" if w in shapes else "colour")
    assert by["shape"] == {"grounding": 50.0, "grounding_n": 2}  # circle hit, square missed
    assert by["colour"] == {"grounding": 100.0, "grounding_n": 1}
    assert sum(v["grounding_n"] for v in by.values()) == metrics.grounding(items)["grounding_n"]
