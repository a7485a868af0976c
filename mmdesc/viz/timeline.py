"""Attention over time (video clips, speech frames): one strip per word on a time axis."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from mmdesc.viz import canvas as cv

AXIS_W = 640  # width of the time axis, px
BAND = 22     # height of one word's strip, px
GAP = 6       # between strips, px
TRACK = (244, 244, 244)
BACKDROP_H = 72  # height of the backdrop (frame strip, spectrogram) above the strips, px


def nice_step(span: float, target: int = 8) -> float:
    """A tick spacing of 1, 2 or 5 x 10^k giving about ``target`` ticks over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def _tick_label(t: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{t:.{decimals}f}"


def duration_of(layout: Any) -> float:
    """The time axis's length in seconds: the layout's duration, else its last segment's end."""
    spans = np.array(layout.spans, dtype=np.float64).reshape(-1, 2)  # (N, 2)
    duration = float(layout.duration) if layout.duration > 0 else float(spans.max(initial=0.0))
    return duration if duration > 0 else 1.0


def where(layout: Any, n: int) -> str:
    """Position n in words: its time span."""
    s, e = layout.spans[int(n)]
    return f"{s:.2f}\u2013{e:.2f} s"


def where_grid(layout: Any, n: int) -> str:
    """Position n of a time x grid layout in words: its time span and its cell."""
    t, cell = layout.split(int(n))
    cols = layout.grid.grid[1]
    return f"{where(layout.time, t)}, cell {cell // cols + 1},{cell % cols + 1}"


def per_segment(layout: Any, alpha: np.ndarray) -> tuple[Any, np.ndarray]:
    """A time x grid layout seen on the time axis: ``(layout.time, alpha summed over each
    segment's cells)``. alpha: (W, T * cells) -> (W, T)."""
    a = np.asarray(alpha)
    return layout.time, a.reshape(a.shape[0], len(layout.time), -1).sum(axis=2)  # (W, T, cells) -> (W, T)


def view(layout: Any, source: str, backdrop: Image.Image | None) -> dict:
    """What the HTML report needs to draw attention over time: the segments as shares of the
    duration, the duration, its ticks, and the backdrop picture when the modality has one."""
    duration = duration_of(layout)
    step = nice_step(duration)
    ticks = [round(k * step, 6) for k in range(int(math.floor(duration / step + 1e-9)) + 1)]
    return {"picture": backdrop, "duration": duration, "ticks": ticks,
            "tick_labels": [_tick_label(t, step) for t in ticks],
            "spans": [[round(s / duration, 5), round(e / duration, 5)] for s, e in layout.spans]}


def draw_time(layout: Any, source: str, words: Sequence[str], alpha: Any, out_path: Path,
              backdrop: Image.Image | None = None) -> Path:
    """A strip per word over [0, duration]; each segment shaded by its attention.

    Shading is normalised per word (the word's peak is darkest) and the peak segment is
    framed. ``backdrop`` (the modality's picture of the input over time: key frames, a
    spectrogram) is drawn above the strips on the same time axis when given.
    ``source`` (a media path) only names the picture. alpha: (T_words, N).
    """
    a = cv.fit_rows(cv.as_matrix(alpha), words, len(layout))  # (T_words, N)
    spans = np.array(layout.spans, dtype=np.float64).reshape(-1, 2)  # (N, 2)
    duration = duration_of(layout)
    top_h = BACKDROP_H + GAP if backdrop is not None else 0
    label_font, small, title_font = cv.font(14), cv.font(11), cv.font(15, bold=True)
    draw = cv.measure()

    row_w = max([0] + [cv.text_size(draw, w, label_font)[0] for w in words]) + 10
    width = 2 * cv.MARGIN + row_w + AXIS_W + 20
    title = cv.wrap(" ".join(words), title_font, width - 2 * cv.MARGIN)
    subtitle = f"{Path(source).name} \u2014 {duration:g} s, {len(layout)} segments, shade normalised per word"
    sub_lines = cv.wrap(subtitle, small, width - 2 * cv.MARGIN)
    head_h = (len(title) * cv.line_height(title_font) + len(sub_lines) * cv.line_height(small) + 10)
    bands_h = len(words) * (BAND + GAP)
    axis_h = 8 + cv.line_height(small) + 4 + cv.line_height(small)
    height = 2 * cv.MARGIN + head_h + top_h + bands_h + axis_h

    page, draw, y = cv.page(width, height, title, title_font)
    for line in sub_lines:
        cv.draw_text(draw, (cv.MARGIN, y), line, small, fill=cv.MUTED)
        y += cv.line_height(small)

    x0, top = cv.MARGIN + row_w, cv.MARGIN + head_h + top_h
    px = AXIS_W / duration  # pixels per second
    if backdrop is not None:
        strip = backdrop.convert("RGB").resize((AXIS_W, BACKDROP_H), Image.Resampling.BICUBIC)
        page.paste(strip, (x0, top - top_h))

    def xpos(t: float) -> float:
        return x0 + min(max(t, 0.0), duration) * px

    step = nice_step(duration)
    ticks = [k * step for k in range(int(math.floor(duration / step + 1e-9)) + 1)]
    for t in ticks:  # light vertical guides behind the strips
        draw.line((xpos(t), top - 2, xpos(t), top + bands_h - GAP + 2), fill=(225, 225, 225))

    for r, word in enumerate(words):
        y0 = top + r * (BAND + GAP)
        y1 = y0 + BAND - 1
        draw.rectangle((x0, y0, x0 + AXIS_W, y1), fill=TRACK)
        row = a[r]
        peak = float(row.max()) if row.size else 0.0
        shades = cv.colormap(row / peak if peak > 0 else row, "blues")
        for (s, e), colour in zip(spans, shades):
            draw.rectangle((xpos(s), y0, max(xpos(e) - 1, xpos(s)), y1), fill=colour)
        draw.rectangle((x0, y0, x0 + AXIS_W, y1), outline=cv.RULE)
        if row.size:
            s, e = spans[int(np.argmax(row))]
            draw.rectangle((xpos(s) - 1, y0 - 1, max(xpos(e), xpos(s) + 1), y1 + 1),
                           outline=cv.ACCENT, width=2)
        cv.draw_text(draw, (x0 - 8, (y0 + y1) / 2), word, label_font, anchor="rm")

    ya = top + bands_h
    draw.line((x0, ya, x0 + AXIS_W, ya), fill=cv.INK)
    for t in ticks:
        draw.line((xpos(t), ya, xpos(t), ya + 5), fill=cv.INK)
        cv.draw_text(draw, (xpos(t), ya + 7), _tick_label(t, step), small, fill=cv.MUTED, anchor="ma")
    cv.draw_text(draw, (x0 + AXIS_W, ya + 9 + cv.line_height(small)), "time (s)", small,
                 fill=cv.MUTED, anchor="ra")
    return cv.save_png(page, out_path)


def draw_time_grid(layout: Any, source: str, words: Sequence[str], alpha: Any, out_path: Path,
                   backdrop: Image.Image | None = None) -> Path:
    """Attention over time segments x grid cells (``layout.time``, ``layout.grid``), drawn on the
    time axis: each word's attention summed over the cells of a segment. alpha: (T_words, N)."""
    a = cv.fit_rows(cv.as_matrix(alpha), words, len(layout))  # (T_words, N)
    time_layout, per_time = per_segment(layout, a)
    return draw_time(time_layout, source, words, per_time, out_path, backdrop=backdrop)
