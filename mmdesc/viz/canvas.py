"""What every attention picture shares: fonts, colour maps, text layout and saving.

Pillow only. Fonts: DejaVu Sans when the system has it (it covers accented and most
non-Latin letters), else Pillow's built-in font.
"""
from __future__ import annotations

import os
import tempfile
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Anchor colours of two sequential maps, evenly spaced over [0, 1].
# inferno: matplotlib's perceptually uniform black -> purple -> orange -> pale yellow.
# blues: white -> dark blue, for cells and strips drawn on a white page.
_MAPS: dict[str, np.ndarray] = {
    "inferno": np.array([
        (0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
        (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164),
    ], dtype=np.float64),
    "blues": np.array([
        (255, 255, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
        (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107),
    ], dtype=np.float64),
}

INK = (33, 33, 33)
MUTED = (110, 110, 110)
PAPER = (255, 255, 255)
RULE = (200, 200, 200)
ACCENT = (230, 85, 13)
MARGIN = 14


def colormap_array(values: Any, name: str = "inferno") -> np.ndarray:
    """uint8 RGB array of shape ``values.shape + (3,)``; values are clipped to [0, 1]."""
    if name not in _MAPS:
        raise ValueError(f"colour map {name!r} is not one of {{{', '.join(sorted(_MAPS))}}}")
    anchors = _MAPS[name]
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    pos = v * (len(anchors) - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), len(anchors) - 2)
    w = (pos - i0)[..., None]
    rgb = anchors[i0] * (1 - w) + anchors[i0 + 1] * w
    return np.rint(rgb).astype(np.uint8)


def colormap_anchors() -> dict[str, list[list[int]]]:
    """The anchor colours of every map, for drawing the same maps elsewhere (the HTML report)."""
    return {k: v.astype(int).tolist() for k, v in _MAPS.items()}


def colormap(values: Any, name: str = "inferno") -> list[tuple[int, int, int]]:
    """One ``(r, g, b)`` per value in [0, 1] (flattened); maps: ``inferno``, ``blues``."""
    rgb = colormap_array(np.ravel(np.asarray(values, dtype=np.float64)), name)
    return [tuple(int(c) for c in px) for px in rgb]


def as_matrix(alpha: Any) -> np.ndarray:
    """(T, N) float64 numpy array from numpy, a nested list or a torch tensor."""
    if hasattr(alpha, "detach"):  # torch tensor, without importing torch
        alpha = alpha.detach().float().cpu().numpy()
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"alpha must be (T_words, N), got shape {a.shape}")
    return np.nan_to_num(a)


def fit_rows(a: np.ndarray, words: Sequence[str], n: int) -> np.ndarray:
    """The first ``len(words)`` rows and ``n`` columns of ``a`` (extra rows: the end step;
    extra columns: padding). Raises ValueError when ``a`` is too small."""
    if a.shape[0] < len(words) or a.shape[1] < n:
        raise ValueError(f"alpha of shape {a.shape} for {len(words)} words over {n} positions")
    return a[:len(words), :n]


@lru_cache(maxsize=None)
def font(size: int, bold: bool = False) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (bold) at ``size`` px if installed, else Pillow's default font."""
    for name in (("DejaVuSans-Bold.ttf",) if bold else ()) + ("DejaVuSans.ttf",):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _has_wide_glyphs(f: Any) -> bool:
    return "DejaVu" in str(getattr(f, "path", ""))


def display(text: str, f: Any) -> str:
    """``text`` as the font can draw it: the built-in font lacks accents, so strip them."""
    if _has_wide_glyphs(f):
        return text
    text = text.replace("\u2581", "_")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def text_size(draw: ImageDraw.ImageDraw, text: str, f: Any) -> tuple[int, int]:
    """Width and height in pixels of ``text`` drawn at (0, 0) (ink box, from the origin)."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), display(text, f), font=f)
    return int(np.ceil(x1)), int(np.ceil(y1))


def line_height(f: Any) -> int:
    """Height of one line of text, the same for every string (ascent + descent)."""
    try:
        ascent, descent = f.getmetrics()
        return int(ascent + descent)
    except AttributeError:
        return int(f.getbbox("Ag")[3])


def measure() -> ImageDraw.ImageDraw:
    """A scratch drawing context for measuring text before the canvas size is known."""
    return ImageDraw.Draw(Image.new("RGB", (1, 1)))


def wrap(text: str, f: Any, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` px (a longer word stays whole)."""
    draw = measure()
    lines: list[str] = []
    for word in text.split():
        if lines and text_size(draw, lines[-1] + " " + word, f)[0] <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, f: Any,
              fill: tuple[int, int, int] = INK, anchor: str = "la") -> None:
    draw.text(xy, display(text, f), font=f, fill=fill, anchor=anchor)


def vertical_label(text: str, f: Any, fill: tuple[int, int, int] = INK) -> tuple[Image.Image, Image.Image]:
    """Text rotated to read bottom-to-top: (colour image, mask) ready for ``Image.paste``."""
    draw = measure()
    w, _ = text_size(draw, text, f)
    h = line_height(f)
    mask = Image.new("L", (max(w, 1), h), 0)
    ImageDraw.Draw(mask).text((0, 0), display(text, f), font=f, fill=255)
    mask = mask.rotate(90, expand=True)
    return Image.new("RGB", mask.size, fill), mask


def save_png(image: Image.Image, out_path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG atomically (a temporary file renamed into place)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG", optimize=True)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def colorbar(height: int, width: int = 12, name: str = "blues") -> Image.Image:
    """A vertical colour bar, 1 at the top and 0 at the bottom, with a thin frame."""
    v = np.linspace(1.0, 0.0, height)[:, None].repeat(width, axis=1)  # (height, width)
    bar = Image.fromarray(colormap_array(v, name), "RGB")
    ImageDraw.Draw(bar).rectangle((0, 0, width - 1, height - 1), outline=RULE)
    return bar


def page(width: int, height: int, title: Sequence[str], title_font: Any) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    """A blank page with its title lines drawn; returns the page, its drawer and the y below the title."""
    img = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(img)
    y = MARGIN
    for line in title:
        draw_text(draw, (MARGIN, y), line, title_font)
        y += line_height(title_font)
    return img, draw, y
