"""The contract between every encoder and the shared decoder: a set of context vectors.

An encoder turns a batch of inputs into a :class:`ContextSet`: ``vectors`` (B, N, D),
``mask`` (B, N) with True where a vector is real, and one :class:`Layout` per input
that says where each of the N positions lives in that input. The layout is what lets
attention be drawn (heatmap, strip, band, matrix) and scored against ground truth
without the shared code knowing any modality.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union

import torch
from torch import Tensor


@dataclass(frozen=True)
class GridLayout:
    """A H x W grid of cells over an image (or a video frame); cells in row-major order.

    ``boxes[n] = (x0, y0, x1, y1)`` is the pixel box of cell n in the *original* input,
    ``size = (width, height)`` the original input's size in pixels.
    """

    grid: tuple[int, int]
    size: tuple[int, int]
    boxes: tuple[tuple[float, float, float, float], ...]
    kind: str = field(default="grid", init=False)

    @staticmethod
    def regular(grid: tuple[int, int], size: tuple[int, int]) -> "GridLayout":
        """Cells that tile an image of ``size = (width, height)`` evenly."""
        gh, gw = grid
        w, h = size
        boxes = tuple(
            (c * w / gw, r * h / gh, (c + 1) * w / gw, (r + 1) * h / gh)
            for r in range(gh) for c in range(gw)
        )
        return GridLayout(grid=(gh, gw), size=(w, h), boxes=boxes)

    def __len__(self) -> int:
        return len(self.boxes)

    def center(self, n: int) -> tuple[float, float]:
        x0, y0, x1, y1 = self.boxes[n]
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    def contains(self, n: int, region: Sequence[float]) -> bool:
        """Whether the centre of cell n lies inside the box ``region = (x0, y0, x1, y1)``."""
        x, y = self.center(n)
        return region[0] <= x <= region[2] and region[1] <= y <= region[3]


@dataclass(frozen=True)
class TimeLayout:
    """T segments in time (video clips, speech frames): ``spans[n] = (start_s, end_s)``."""

    spans: tuple[tuple[float, float], ...]
    duration: float
    kind: str = field(default="time", init=False)

    def __len__(self) -> int:
        return len(self.spans)

    def center(self, n: int) -> float:
        return (self.spans[n][0] + self.spans[n][1]) / 2

    def contains(self, n: int, region: Sequence[float]) -> bool:
        """Whether the centre of segment n lies inside ``region = (start_s, end_s)``."""
        return region[0] <= self.center(n) <= region[1]


@dataclass(frozen=True)
class TokenLayout:
    """S source tokens (subword pieces); ``words[n]`` is the index of the word piece n belongs to."""

    tokens: tuple[str, ...]
    words: tuple[int, ...]
    kind: str = field(default="tokens", init=False)

    def __len__(self) -> int:
        return len(self.tokens)

    def contains(self, n: int, region: Sequence[int]) -> bool:
        """Whether token n belongs to one of the source word indices in ``region``."""
        return self.words[n] in region


@dataclass(frozen=True)
class TimeGridLayout:
    """T segments in time, each with the same H x W grid of cells (video with a spatial grid).

    Positions are time-major: ``n = t * len(grid) + cell``. A region is a time span
    ``(start_s, end_s)`` or a span and a box ``(start_s, end_s, x0, y0, x1, y1)``.
    """

    time: TimeLayout
    grid: GridLayout
    kind: str = field(default="time_grid", init=False)

    def __len__(self) -> int:
        return len(self.time) * len(self.grid)

    def split(self, n: int) -> tuple[int, int]:
        """(time segment, cell) of position n."""
        return divmod(n, len(self.grid))

    def contains(self, n: int, region: Sequence[float]) -> bool:
        """Whether position n's segment centre lies in the span, and (with a box) its cell centre in the box."""
        t, cell = self.split(n)
        return self.time.contains(t, region[:2]) and (len(region) < 6 or self.grid.contains(cell, region[2:6]))


Layout = Union[GridLayout, TimeLayout, TimeGridLayout, TokenLayout]


@dataclass
class ContextSet:
    """What every encoder returns and the decoder reads.

    vectors: (B, N, D) float; mask: (B, N) bool, True where real; layouts: one per input
    (``len(layouts) == B``), and ``len(layouts[b]) == mask[b].sum()``.
    keys: (B, N, K) or None: what the attention scores each position by, where an encoder
    keeps it apart from what the decoder reads there (``vectors``). None: the vectors
    themselves. An encoder that gives keys says their size in its ``key_dim``.
    """

    vectors: Tensor
    mask: Tensor
    layouts: list[Layout]
    keys: Tensor | None = None

    def __post_init__(self) -> None:
        b, n, _ = self.vectors.shape
        if self.mask.shape != (b, n):
            raise ValueError(f"mask {tuple(self.mask.shape)} does not match vectors {tuple(self.vectors.shape)}")
        if len(self.layouts) != b:
            raise ValueError(f"{len(self.layouts)} layouts for a batch of {b}")
        lengths = self.mask.sum(dim=1).tolist()
        wrong = [(i, len(lay), n_real) for i, (lay, n_real) in enumerate(zip(self.layouts, lengths))
                 if lay is not None and len(lay) != n_real]
        if wrong:
            i, n_lay, n_real = wrong[0]
            raise ValueError(f"layout {i} has {n_lay} positions but its mask row has {n_real} real ones")
        if self.keys is not None and self.keys.shape[:2] != (b, n):
            raise ValueError(f"keys {tuple(self.keys.shape)} do not match vectors {tuple(self.vectors.shape)}")

    @property
    def lengths(self) -> Tensor:
        """(B,) number of real vectors per input."""
        return self.mask.sum(dim=1)

    def select(self, index: Tensor) -> "ContextSet":
        """The inputs at ``index`` (a 1-D long tensor), in that order."""
        idx = index.tolist()
        return ContextSet(self.vectors.index_select(0, index), self.mask.index_select(0, index),
                          [self.layouts[i] for i in idx],
                          None if self.keys is None else self.keys.index_select(0, index))

    @property
    def scored(self) -> Tensor:
        """What the attention scores: the keys, or the vectors where there are none."""
        return self.vectors if self.keys is None else self.keys

    @staticmethod
    def full_mask(b: int, n: int, device: torch.device | None = None) -> Tensor:
        return torch.ones(b, n, dtype=torch.bool, device=device)
