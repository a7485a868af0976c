"""Attention pictures, one kind per layout kind, drawn with Pillow, and the HTML report.

``draw_attention(layout, source, words, alpha, out_path)`` picks the picture from
``layout.kind``:

- ``grid``   (images): the image, then one panel per word with its heatmap (``viz/grid.py``);
- ``tokens`` (text): the output-word x source-token matrix (``viz/tokens.py``);
- ``time``   (video, speech): one strip per word on a time axis (``viz/timeline.py``);
- ``time_grid`` (time segments x grid cells): the same, each segment's cells summed; the HTML
  report draws it as a time view (``SEEN_AS``) and names each position's segment and cell.

The same module per kind gives the HTML report (``viz/html.py``) what it draws in the
browser (``VIEWS``) and how a position is named (``WHERE``); the picture under the attention
comes from the modality's optional ``backdrop(source, layout)`` hook (:func:`backdrop_for`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from mmdesc.viz import grid, timeline, tokens
from mmdesc.viz.canvas import colormap
from mmdesc.viz.grid import draw_grid
from mmdesc.viz.timeline import draw_time, draw_time_grid
from mmdesc.viz.tokens import draw_tokens

__all__ = ["DRAWERS", "LINKS", "SEEN_AS", "VIEWS", "WHERE", "backdrop_for", "colormap", "draw_attention", "draw_grid",
           "draw_time", "draw_time_grid", "draw_tokens"]

DRAWERS: dict[str, Callable[..., Path]] = {
    "grid": draw_grid,
    "tokens": draw_tokens,
    "time": draw_time,
    "time_grid": draw_time_grid,
}
VIEWS: dict[str, Callable[..., dict]] = {"grid": grid.view, "tokens": tokens.view, "time": timeline.view}
WHERE: dict[str, Callable[[Any, int], str]] = {
    "grid": grid.where, "tokens": tokens.where, "time": timeline.where, "time_grid": timeline.where_grid}
# Kinds the report draws through another kind's view: (layout, (W, N) alpha) -> the other
# kind's layout and alpha (a video's time x grid attention, each segment's cells summed).
SEEN_AS: dict[str, Callable[[Any, Any], tuple[Any, Any]]] = {"time_grid": timeline.per_segment}
# What links an output word to the same word in views of other inputs of one scene: the word
# itself, except where the kind says otherwise (a translation: the source word it looks at).
LINKS: dict[str, Callable[[Any, Any], list[str]]] = {"tokens": tokens.link_keys}


def check_kind(layout: Any) -> str:
    """``layout.kind``; raises ValueError naming the known kinds when it is not one."""
    kind = getattr(layout, "kind", None)
    if kind not in DRAWERS:
        raise ValueError(f"layout kind {kind!r} is not one of {{{', '.join(DRAWERS)}}}")
    return kind


def backdrop_for(modality: str | None, source: str, layout: Any):
    """The picture a modality draws attention over (``backdrop(source, layout)`` of its module),
    or None when it has no such hook (each kind then falls back to its own default)."""
    if modality is None:
        return None
    from mmdesc.modalities import MODALITIES

    hook = getattr(MODALITIES[modality], "backdrop", None)
    return hook(source, layout) if hook is not None else None


def draw_attention(layout: Any, source: str, words: Sequence[str], alpha: Any,
                   out_path: str | Path, backdrop: Any = None) -> Path:
    """Draw the attention of each output word over ``layout`` and write a PNG.

    source: the image path (grid), the source sentence (tokens, the title) or the media
    path (time, only named). words: the output words. alpha: (T_words, N) numpy array or
    torch tensor, row t the attention of ``words[t]`` over the layout's N positions
    (rows past ``len(words)`` and columns past ``len(layout)`` are ignored). backdrop: a
    PIL image to draw under the attention (see :func:`backdrop_for`), else the kind's default.
    Returns ``out_path``; raises ValueError for an unknown layout kind or a too small
    alpha, MediaError for an unreadable image.
    """
    kind = check_kind(layout)
    return DRAWERS[kind](layout, source, list(words), alpha, Path(out_path), backdrop=backdrop)
