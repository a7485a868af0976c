"""Attention pictures, one kind per layout kind, drawn with Pillow.

``draw_attention(layout, source, words, alpha, out_path)`` picks the picture from
``layout.kind``:

- ``grid``   (images): the image, then one panel per word with its heatmap (``viz/grid.py``);
- ``tokens`` (text): the output-word x source-token matrix (``viz/tokens.py``);
- ``time``   (video, speech): one strip per word on a time axis (``viz/timeline.py``);
- ``time_grid`` (time segments x grid cells): the same, each segment's cells summed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from mmdesc.viz.canvas import colormap
from mmdesc.viz.grid import draw_grid
from mmdesc.viz.timeline import draw_time, draw_time_grid
from mmdesc.viz.tokens import draw_tokens

__all__ = ["DRAWERS", "colormap", "draw_attention", "draw_grid", "draw_time", "draw_time_grid", "draw_tokens"]

DRAWERS: dict[str, Callable[..., Path]] = {
    "grid": draw_grid,
    "tokens": draw_tokens,
    "time": draw_time,
    "time_grid": draw_time_grid,
}


def draw_attention(layout: Any, source: str, words: Sequence[str], alpha: Any,
                   out_path: str | Path) -> Path:
    """Draw the attention of each output word over ``layout`` and write a PNG.

    source: the image path (grid), the source sentence (tokens, the title) or the media
    path (time, only named). words: the output words. alpha: (T_words, N) numpy array or
    torch tensor, row t the attention of ``words[t]`` over the layout's N positions
    (rows past ``len(words)`` and columns past ``len(layout)`` are ignored).
    Returns ``out_path``; raises ValueError for an unknown layout kind or a too small
    alpha, MediaError for an unreadable image.
    """
    kind = getattr(layout, "kind", None)
    if kind not in DRAWERS:
        raise ValueError(f"layout kind {kind!r} is not one of {{{', '.join(DRAWERS)}}}")
    return DRAWERS[kind](layout, source, list(words), alpha, Path(out_path))
