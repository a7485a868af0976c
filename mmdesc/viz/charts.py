"""Small comparison charts drawn with Pillow: lines over x, and grouped bars per category.

Each series is one model (a modality); colours come from one categorical palette in series
order, and a legend names them. Missing values (None) are left out (a gap, no bar).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from mmdesc.viz import canvas as cv

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
PLOT_W, PLOT_H = 520, 240
AXIS = (60, 28, 150, 48)  # left, top, right (legend), bottom margins, px


def _frame(title: str, ylabel: str, xlabel: str, y_max: float):
    f, small, bold = cv.font(12), cv.font(11), cv.font(14, bold=True)
    width, height = AXIS[0] + PLOT_W + AXIS[2], AXIS[1] + PLOT_H + AXIS[3] + cv.line_height(bold)
    page, draw, y = cv.page(width, height, [title], bold)
    x0, y0 = AXIS[0], y + AXIS[1] - cv.MARGIN
    draw.rectangle((x0, y0, x0 + PLOT_W, y0 + PLOT_H), outline=cv.RULE)
    step = _step(y_max)
    k = 0
    while k * step <= y_max + 1e-9:
        yy = y0 + PLOT_H - k * step / y_max * PLOT_H
        draw.line((x0, yy, x0 + PLOT_W, yy), fill=(235, 235, 235))
        cv.draw_text(draw, (x0 - 6, yy), f"{k * step:g}", small, fill=cv.MUTED, anchor="rm")
        k += 1
    cv.draw_text(draw, (x0 + PLOT_W / 2, y0 + PLOT_H + 26), xlabel, f, fill=cv.MUTED, anchor="ma")
    label, mask = cv.vertical_label(ylabel, f, cv.MUTED)
    page.paste(label, (6, int(y0 + PLOT_H / 2 - label.height / 2)), mask)
    return page, draw, x0, y0, small


def _step(y_max: float) -> float:
    raw = y_max / 5
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def _legend(draw, names: Sequence[str], x: float, y: float, f) -> None:
    for k, name in enumerate(names):
        yy = y + k * (cv.line_height(f) + 4)
        draw.rectangle((x, yy + 2, x + 12, yy + 12), fill=PALETTE[k % len(PALETTE)])
        cv.draw_text(draw, (x + 18, yy), name, f)


def _y_max(values: Sequence[float | None], y_max: float | None) -> float:
    if y_max:
        return y_max
    top = max([v for v in values if v is not None] + [0.0])
    return top * 1.1 if top > 0 else 1.0


def line_chart(out_path: str | Path, title: str, series: dict[str, Sequence[float | None]],
               x_labels: Sequence[str], xlabel: str, ylabel: str, y_max: float | None = None) -> Path:
    """One line per series over the points ``x_labels`` (every series has one value per point)."""
    ym = _y_max([v for vs in series.values() for v in vs], y_max)
    page, draw, x0, y0, small = _frame(title, ylabel, xlabel, ym)
    n = max(len(x_labels), 1)
    xs = [x0 + (k + 0.5) * PLOT_W / n for k in range(n)]
    every = max(1, math.ceil(n / 16))
    for k, lab in enumerate(x_labels):
        if k % every == 0:
            cv.draw_text(draw, (xs[k], y0 + PLOT_H + 6), lab, small, fill=cv.MUTED, anchor="ma")
    for s, values in enumerate(series.values()):
        colour = PALETTE[s % len(PALETTE)]
        pts = [(xs[k], y0 + PLOT_H - min(v, ym) / ym * PLOT_H) if v is not None else None
               for k, v in enumerate(values)]
        for a, b in zip(pts, pts[1:]):
            if a is not None and b is not None:
                draw.line((a, b), fill=colour, width=2)
        for p in pts:
            if p is not None:
                draw.ellipse((p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3), fill=colour)
    _legend(draw, list(series), x0 + PLOT_W + 16, y0, small)
    return cv.save_png(page, out_path)


def bar_chart(out_path: str | Path, title: str, series: dict[str, Sequence[float | None]],
              categories: Sequence[str], xlabel: str, ylabel: str, y_max: float | None = None) -> Path:
    """Grouped bars: for each category, one bar per series."""
    ym = _y_max([v for vs in series.values() for v in vs], y_max)
    page, draw, x0, y0, small = _frame(title, ylabel, xlabel, ym)
    n, m = max(len(categories), 1), max(len(series), 1)
    slot = PLOT_W / n
    bar = slot * 0.8 / m
    for k, cat in enumerate(categories):
        cv.draw_text(draw, (x0 + (k + 0.5) * slot, y0 + PLOT_H + 6), cat, small, fill=cv.MUTED, anchor="ma")
        for s, values in enumerate(series.values()):
            v = values[k]
            if v is None or not math.isfinite(v):
                continue
            left = x0 + k * slot + slot * 0.1 + s * bar
            top = min(y0 + PLOT_H - max(0.0, min(v, ym)) / ym * PLOT_H, y0 + PLOT_H - 1)  # bars start at 0
            draw.rectangle((left, top, left + bar - 2, y0 + PLOT_H - 1), fill=PALETTE[s % len(PALETTE)])
    _legend(draw, list(series), x0 + PLOT_W + 16, y0, small)
    return cv.save_png(page, out_path)
