"""Alignment statistics: how an attention matrix spreads over its input, for every layout kind.

One implementation for every modality: the statistics read only the attention of each
output word over the input's positions, ``alpha`` (W, N) with rows summing to 1, and its
layout's ``kind`` and length.

Per output word:

- ``entropy``: the row's entropy divided by ``log N`` - 0 when one position takes all the
  attention, 1 when it is spread evenly (so inputs of different length compare);
- ``peak``: the largest weight of the row (peak mass);
- ``position``: the most attended position (argmax).

Per sentence (and, pooled, per corpus):

- ``coverage``: share of the input ever attended - positions whose column sum
  ``sum_t alpha[t, n]`` (the doubly-stochastic sum of Xu et al. 2015) reaches half the even
  share ``W / N``; ``ds_gap``: the mean of ``(1 - column_sum * N / W) ** 2``, 0 when every
  position gets exactly its share;
- for layouts whose positions follow the input in order (``ORDERED_KINDS``: time, tokens):
  ``backward``, the share of steps (%) where the attended position moves back, and ``jump``,
  the mean distance it moves per step as a share of the input's length.

Ground-truth scores (box or time-span hits, alignment error rate) stay in
:mod:`mmdesc.metrics`; :func:`grounding_by` splits grounding over groups of words.
Nothing here imports torch; matrices may be numpy arrays or torch tensors.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from mmdesc import metrics

ORDERED_KINDS = frozenset({"time", "tokens"})  # layout kinds whose positions are in input order
COVERED = 0.5  # a position is covered when its column sum reaches this share of W / N

STATISTICS = ("entropy", "peak", "coverage", "ds_gap", "backward", "jump")
LABELS = {"entropy": "entropy (0-1)", "peak": "peak mass", "coverage": "coverage",
          "ds_gap": "DS gap", "backward": "backward (%)", "jump": "mean jump"}

__all__ = ["ORDERED_KINDS", "STATISTICS", "LABELS", "Batch", "pad", "word_statistics",
           "corpus_statistics", "grounding_by"]


def _as_numpy(alpha: Any) -> np.ndarray:
    if hasattr(alpha, "detach"):  # a torch tensor, without importing torch
        alpha = alpha.detach().float().cpu().numpy()
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"alpha must be (W, N), got shape {a.shape}")
    return a


class Batch:
    """Ragged attention matrices padded into one array, so every statistic is one numpy pass.

    alpha: (S, W, N) zero-padded; words: (S,) real rows; positions: (S,) real columns;
    ordered: (S,) whether the sentence's layout kind is in ``ORDERED_KINDS``.
    """

    def __init__(self, alpha: np.ndarray, words: np.ndarray, positions: np.ndarray, ordered: np.ndarray):
        self.alpha, self.words, self.positions, self.ordered = alpha, words, positions, ordered

    @property
    def word_mask(self) -> np.ndarray:
        """(S, W) True on real rows."""
        return np.arange(self.alpha.shape[1])[None, :] < self.words[:, None]

    @property
    def position_mask(self) -> np.ndarray:
        """(S, N) True on real columns."""
        return np.arange(self.alpha.shape[2])[None, :] < self.positions[:, None]


def pad(pairs: Iterable[tuple[Any, Any]]) -> Batch:
    """``(alpha (W, N_real or more), layout)`` per sentence -> one padded :class:`Batch`.

    Columns past ``len(layout)`` are dropped (padding), rows are taken as they are.
    """
    mats, kinds = [], []
    for alpha, layout in pairs:
        a = _as_numpy(alpha)
        n = len(layout)
        if a.shape[1] < n:
            raise ValueError(f"alpha of shape {a.shape} for a layout of {n} positions")
        mats.append(a[:, :n])
        kinds.append(getattr(layout, "kind", None))
    s = len(mats)
    w = max((m.shape[0] for m in mats), default=0)
    n = max((m.shape[1] for m in mats), default=0)
    out = np.zeros((s, w, n))
    for i, m in enumerate(mats):
        out[i, :m.shape[0], :m.shape[1]] = m
    words = np.array([m.shape[0] for m in mats], dtype=np.int64)
    positions = np.array([m.shape[1] for m in mats], dtype=np.int64)
    ordered = np.array([k in ORDERED_KINDS for k in kinds], dtype=bool)
    return Batch(out, words, positions, ordered)


def word_statistics(batch: Batch) -> dict[str, np.ndarray]:
    """Per output word: ``entropy``, ``peak``, ``position`` (S, W); padded rows hold 0 / -1."""
    a = batch.alpha  # (S, W, N)
    logs = np.log(np.where(a > 0, a, 1.0))  # (S, W, N), 0 where alpha is 0
    nats = -(a * logs).sum(axis=2)  # (S, W)
    scale = np.log(np.maximum(batch.positions, 1)).astype(np.float64)[:, None]  # (S, 1)
    entropy = np.where(scale > 0, nats / np.where(scale > 0, scale, 1.0), 0.0)
    mask = batch.word_mask
    peak = a.max(axis=2, initial=0.0) if a.shape[2] else np.zeros(mask.shape)
    position = a.argmax(axis=2) if a.shape[2] else np.zeros(mask.shape, dtype=np.int64)
    return {"entropy": np.where(mask, np.clip(entropy, 0.0, 1.0), 0.0),
            "peak": np.where(mask, peak, 0.0),
            "position": np.where(mask, position, -1)}


def sentence_statistics(batch: Batch) -> dict[str, np.ndarray]:
    """Per sentence (S,): ``coverage``, ``ds_gap``; and the step counts behind ``backward``
    and ``jump``: ``steps``, ``back_steps``, ``jump_sum`` (0 for unordered layouts)."""
    a = batch.alpha
    wmask, nmask = batch.word_mask, batch.position_mask
    words = batch.words.astype(np.float64)
    n = np.maximum(batch.positions, 1).astype(np.float64)
    share = words / n  # (S,) the even share W / N of one position
    columns = a.sum(axis=1)  # (S, N) doubly-stochastic column sums
    covered = (columns >= COVERED * share[:, None]) & nmask & (words[:, None] > 0)
    coverage = covered.sum(axis=1) / n
    rel = columns / np.where(share > 0, share, 1.0)[:, None]  # (S, N) 1 = exactly the even share
    ds_gap = np.where(nmask, (1.0 - rel) ** 2, 0.0).sum(axis=1) / n
    ds_gap = np.where(words > 0, ds_gap, 0.0)

    pos = word_statistics(batch)["position"].astype(np.float64)  # (S, W)
    step_ok = (wmask[:, 1:] & wmask[:, :-1]) & batch.ordered[:, None]  # (S, W-1)
    diff = pos[:, 1:] - pos[:, :-1]  # (S, W-1)
    length = np.maximum(batch.positions - 1, 1).astype(np.float64)[:, None]
    return {"coverage": coverage, "ds_gap": ds_gap,
            "steps": step_ok.sum(axis=1),
            "back_steps": ((diff < 0) & step_ok).sum(axis=1),
            "jump_sum": np.where(step_ok, np.abs(diff) / length, 0.0).sum(axis=1)}


def corpus_statistics(pairs: Iterable[tuple[Any, Any]]) -> dict[str, float]:
    """The statistics of a corpus: ``(alpha (W, N), layout)`` per output sentence.

    ``entropy`` and ``peak`` are means over all output words, ``coverage`` and ``ds_gap``
    means over sentences, ``backward`` (%) and ``jump`` pooled over the steps of ordered
    layouts (absent when no sentence has an ordered layout and two words). Sentences with no
    words count for nothing; an empty corpus gives ``{}``.
    """
    batch = pad(pairs)
    wmask = batch.word_mask
    if not wmask.any():
        return {}
    per_word = word_statistics(batch)
    per_sentence = sentence_statistics(batch)
    spoken = batch.words > 0
    out = {"entropy": float(per_word["entropy"][wmask].mean()),
           "peak": float(per_word["peak"][wmask].mean()),
           "coverage": float(per_sentence["coverage"][spoken].mean()),
           "ds_gap": float(per_sentence["ds_gap"][spoken].mean())}
    steps = int(per_sentence["steps"].sum())
    if steps:
        out["backward"] = 100.0 * float(per_sentence["back_steps"].sum()) / steps
        out["jump"] = float(per_sentence["jump_sum"].sum()) / steps
    return out


def grounding_by(items: Sequence[tuple[Sequence[str], Any, Any, dict]],
                 group: Callable[[str], str]) -> dict[str, dict[str, float]]:
    """:func:`mmdesc.metrics.grounding` split by ``group(word)`` (e.g. a word class).

    items as for ``metrics.grounding``; returns ``{group: {"grounding", "grounding_n"}}`` for
    every group that has at least one grounded word.
    """
    groups = sorted({group(w) for _, _, _, regions in items for w in regions})
    out = {}
    for g in groups:
        part = [(words, alpha, layout, {w: r for w, r in regions.items() if group(w) == g})
                for words, alpha, layout, regions in items]
        scored = metrics.grounding(part)
        if scored["grounding_n"]:
            out[g] = scored
    return out
