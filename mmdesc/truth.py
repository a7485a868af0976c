"""Where each word of a target is in its input, from the ground truth an example carries.

Two conventions of ``Example.meta``, the ones ``mmdesc evaluate`` scores against:

- ``spans``: one ``(start_s, end_s)`` per whitespace word of the (single) reference, in order
  (speech: when each word is spoken);
- ``regions``: word -> its regions, in the layout's units (image boxes, video time spans):
  every mention of that word refers to them.

``piece_regions`` turns either into one tuple of regions per target piece (empty: no ground
truth for it); ``region_mask`` says which positions of a layout lie in them
(``layout.contains``), so the objective's ``att_truth`` term can ask the attention of each
piece to fall there. Nothing here knows a modality.
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import torch
from torch import Tensor

Regions = tuple  # tuple of regions, each a tuple of floats


def word_regions(meta: Mapping, words: Sequence[str]) -> list[Regions] | None:
    """One tuple of regions per word of ``words`` (empty for a word without any), or None
    when ``meta`` has no ground truth for this sentence (spans of another word count, say)."""
    if "spans" in meta:
        spans = meta["spans"]
        if len(spans) != len(words):
            return None
        return [(tuple(float(x) for x in s),) for s in spans]
    if "regions" in meta:
        regions = meta["regions"]
        return [tuple(tuple(float(x) for x in r) for r in regions.get(w, ())) for w in words]
    return None


def piece_regions(meta: Mapping, tokenizer, ids: Sequence[int]) -> tuple[Regions, ...] | None:
    """The regions of each target piece ``ids`` (those of the whitespace word it is part of),
    or None when the example has no ground truth for it."""
    words = tokenizer.decode(list(ids)).split()
    per_word = word_regions(meta, words)
    if per_word is None:
        return None
    index = tokenizer.word_index(list(ids))
    return tuple(per_word[w] if w < len(per_word) else () for w in index)


@functools.lru_cache(maxsize=1 << 16)
def region_mask(layout, regions: Regions) -> Tensor:
    """(len(layout),) bool: the positions inside one of ``regions``."""
    return torch.tensor([any(layout.contains(n, r) for r in regions) for n in range(len(layout))],
                        dtype=torch.bool)


def truth_masks(truth: Sequence[Sequence[Regions] | None], layouts: Sequence, steps: int,
                positions: int) -> tuple[Tensor, Tensor]:
    """Per batch row b and target step t, the positions where piece t is: ``(mask (B, T, N) bool,
    supervised (B, T) bool)``; a step is supervised when its piece has regions holding at least
    one position."""
    mask = torch.zeros(len(truth), steps, positions, dtype=torch.bool)
    for b, (pieces, layout) in enumerate(zip(truth, layouts)):
        if not pieces or layout is None:
            continue
        for t, regions in enumerate(pieces[:steps]):
            if regions:
                m = region_mask(layout, regions)
                mask[b, t, : m.numel()] = m[:positions]
    return mask, mask.any(-1)


def truth_term(alphas: Tensor, mask: Tensor, supervised: Tensor) -> Tensor:
    """Supervised attention: the mean over supervised steps of ``-log`` (the attention mass
    inside the piece's regions); 0 when it all lies there. alphas (B, T, N)."""
    inside = (alphas.float() * mask.to(alphas.device)).sum(-1)  # (B, T)
    sup = supervised.to(alphas.device)
    nll = -inside.clamp(min=1e-6).log()
    return torch.where(sup, nll, torch.zeros_like(nll)).sum() / sup.sum().clamp(min=1)
