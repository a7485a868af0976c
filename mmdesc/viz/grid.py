"""Attention over an image grid: one panel per word, the heatmap laid over the image."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from mmdesc.errors import MediaError
from mmdesc.viz import canvas as cv

PANEL = 128       # longest side of each panel, px
COLUMNS = 6       # panels per row
GAP = 10          # between panels, px
BLEND = 0.6       # weight of the heatmap colour over the image


def _interp(knots: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation weights: value(p) = v[i0] * (1 - w) + v[i1] * w, clamped at the ends.

    knots: (K,) increasing sample positions; positions: (P,). Returns i0, i1 (P,) int, w (P,).
    """
    if len(knots) == 1:
        zeros = np.zeros(len(positions), dtype=np.int64)
        return zeros, zeros, np.zeros(len(positions))
    i1 = np.clip(np.searchsorted(knots, positions), 1, len(knots) - 1)
    i0 = i1 - 1
    span = np.maximum(knots[i1] - knots[i0], 1e-9)
    w = np.clip((positions - knots[i0]) / span, 0.0, 1.0)
    return i0, i1, w


def cell_axes(layout: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where the grid's columns and rows lie, as shares of the input's width and height.

    Returns ``col_x`` (gw,) and ``row_y`` (gh,) increasing, with ``col_order`` and ``row_order``:
    the cell columns/rows in that order (uneven grids are drawn where their cells are).
    The PNG heatmap and the HTML report's heatmap both interpolate between these centres.
    """
    gh, gw = layout.grid
    centres = np.array([layout.center(n) for n in range(len(layout))]).reshape(gh, gw, 2)  # (gh, gw, 2)
    col_x = centres[..., 0].mean(axis=0) / layout.size[0]  # (gw,)
    row_y = centres[..., 1].mean(axis=1) / layout.size[1]  # (gh,)
    col_order, row_order = np.argsort(col_x), np.argsort(row_y)
    return col_x[col_order], row_y[row_order], col_order, row_order


def heatmap(layout: Any, values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Cell values (N,) -> a smooth (height, width) map over an image drawn at ``size``.

    Bilinear interpolation between the cell centres of :func:`cell_axes`.
    """
    gh, gw = layout.grid
    width, height = size
    col_x, row_y, col_order, row_order = cell_axes(layout)
    grid = values.reshape(gh, gw)[row_order][:, col_order]  # (gh, gw)
    x0, x1, wx = _interp(col_x * width, np.arange(width) + 0.5)
    y0, y1, wy = _interp(row_y * height, np.arange(height) + 0.5)
    across = grid[:, x0] * (1 - wx) + grid[:, x1] * wx  # (gh, width)
    return across[y0] * (1 - wy)[:, None] + across[y1] * wy[:, None]  # (height, width)


def _overlay(base: Image.Image, layout: Any, row: np.ndarray) -> Image.Image:
    """``base`` with the attention ``row`` (N,) as a heatmap and the argmax cell framed."""
    peak = float(row.max())
    norm = row / peak if peak > 0 else row
    heat = heatmap(layout, norm, base.size)  # (h, w)
    rgb = np.asarray(base, dtype=np.float64)
    mixed = rgb * (1 - BLEND) + cv.colormap_array(heat, "inferno") * BLEND
    panel = Image.fromarray(np.rint(mixed).astype(np.uint8), "RGB")
    sx, sy = base.size[0] / layout.size[0], base.size[1] / layout.size[1]
    bx0, by0, bx1, by1 = layout.boxes[int(np.argmax(row))]
    box = (bx0 * sx, by0 * sy, bx1 * sx - 1, by1 * sy - 1)
    draw = ImageDraw.Draw(panel)
    draw.rectangle(box, outline=(0, 0, 0), width=3)
    draw.rectangle((box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1), outline=(255, 255, 255), width=1)
    return panel


def load_image(path: str) -> Image.Image:
    """The input image itself: what a grid's attention is drawn over when the modality
    offers no ``backdrop``. Raises MediaError when it cannot be read."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise MediaError(path, f"cannot read image: {err}") from err


def where(layout: Any, n: int) -> str:
    """Position n in words: its grid row and column (1-based)."""
    r, c = divmod(int(n), layout.grid[1])
    return f"row {r + 1}, col {c + 1}"


def view(layout: Any, source: str, backdrop: Image.Image | None) -> dict:
    """What the HTML report needs to draw a grid's heatmaps: the picture and the cell geometry
    (shares of the picture's width and height, as :func:`cell_axes` gives them)."""
    picture = backdrop if backdrop is not None else load_image(source)
    col_x, row_y, col_order, row_order = cell_axes(layout)
    w, h = layout.size
    boxes = [[round(x0 / w, 4), round(y0 / h, 4), round(x1 / w, 4), round(y1 / h, 4)]
             for x0, y0, x1, y1 in layout.boxes]
    return {"picture": picture, "grid": list(layout.grid), "blend": BLEND,
            "col_x": [round(float(v), 4) for v in col_x], "row_y": [round(float(v), 4) for v in row_y],
            "col_order": col_order.tolist(), "row_order": row_order.tolist(), "boxes": boxes}


def draw_grid(layout: Any, source: str, words: Sequence[str], alpha: Any, out_path: Path,
              backdrop: Image.Image | None = None, panel: int = PANEL, columns: int = COLUMNS) -> Path:
    """Panels: the picture, then one per word with its attention heatmap; a caption on top.

    The picture is ``backdrop`` (the modality's), else the image at ``source``.
    alpha: (T_words, N) with N >= len(layout); extra rows/columns are ignored.
    Raises MediaError when there is no backdrop and ``source`` is not a readable image.
    """
    a = cv.fit_rows(cv.as_matrix(alpha), words, len(layout))
    image = backdrop.convert("RGB") if backdrop is not None else load_image(source)
    scale = panel / max(image.size)
    pw, ph = max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))
    base = image.resize((pw, ph), Image.Resampling.BICUBIC)
    panels = [(base, "input", cv.MUTED)] + [(_overlay(base, layout, a[t]), w, cv.INK)
                                            for t, w in enumerate(words)]

    label_font, title_font = cv.font(14), cv.font(15, bold=True)
    draw = cv.measure()
    col_w = max([pw] + [cv.text_size(draw, w, label_font)[0] for _, w, _ in panels])
    label_h = cv.line_height(label_font) + 4
    ncol = min(columns, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    width = 2 * cv.MARGIN + ncol * col_w + (ncol - 1) * GAP
    title = cv.wrap(" ".join(words), title_font, width - 2 * cv.MARGIN) if words else []
    title_h = len(title) * cv.line_height(title_font) + (8 if title else 0)
    cell_h = ph + label_h
    height = 2 * cv.MARGIN + title_h + nrow * cell_h + (nrow - 1) * GAP

    page, draw, y = cv.page(width, height, title, title_font)
    top = cv.MARGIN + title_h
    for k, (img, label, colour) in enumerate(panels):
        r, c = divmod(k, ncol)
        x = cv.MARGIN + c * (col_w + GAP)
        y = top + r * (cell_h + GAP)
        page.paste(img, (x + (col_w - pw) // 2, y))
        cv.draw_text(draw, (x + col_w / 2, y + ph + 3), label, label_font, fill=colour, anchor="ma")
    return cv.save_png(page, out_path)
