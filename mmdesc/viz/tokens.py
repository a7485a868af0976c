"""Attention over a source sentence: the matrix of output words x source tokens."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from mmdesc.viz import canvas as cv

CELL = 26   # side of one matrix cell, px
BAR_H = 120  # colour bar height, px (at most the matrix height)


def _piece_label(piece: str, continues: bool) -> str:
    """A piece as shown: without sentencepiece's word-start mark; "·" before a piece that
    continues the previous piece's word."""
    text = piece.replace("\u2581", "") or "\u2581"
    return "\u00b7" + text if continues else text


def source_labels(layout: Any, n_columns: int) -> list[str]:
    """Column labels: the layout's tokens, or its words when alpha has one column per word.

    Labels drop sentencepiece's word-start mark; a piece continuing a word gets a "·".
    """
    tokens = list(layout.tokens)
    if n_columns >= len(tokens):
        return [_piece_label(tok, k > 0 and layout.words[k] == layout.words[k - 1])
                for k, tok in enumerate(tokens)]
    n_words = max(layout.words) + 1 if layout.words else 0
    if n_columns == n_words:
        words = [""] * n_words
        for piece, w in zip(tokens, layout.words):
            words[w] += piece
        return [w.replace("\u2581", "") or "\u2581" for w in words]
    raise ValueError(f"alpha has {n_columns} columns for {len(tokens)} tokens ({n_words} words)")


def where(layout: Any, n: int) -> str:
    """Position n in words: the source token."""
    return _piece_label(layout.tokens[int(n)], False)


def view(layout: Any, source: str, backdrop: Any = None) -> dict:
    """What the HTML report needs to highlight the source: its tokens as labels (a "·" before a
    piece that continues a word) and each token's word index."""
    return {"picture": None, "labels": source_labels(layout, len(layout)), "words": list(layout.words)}


def link_keys(layout: Any, alpha: np.ndarray) -> list[str]:
    """For each output word (row of ``alpha`` (W, N)), the source word its attention peaks on:
    what links a word of a translation to the same word in views of other inputs."""
    words: dict[int, str] = {}
    for piece, w in zip(layout.tokens, layout.words):
        words[w] = words.get(w, "") + piece
    clean = {w: text.replace("\u2581", "") for w, text in words.items()}
    if not len(alpha):
        return []
    return [clean[layout.words[int(n)]] for n in np.argmax(alpha[:, :len(layout)], axis=1)]


def draw_tokens(layout: Any, source: str, words: Sequence[str], alpha: Any, out_path: Path,
                backdrop: Any = None) -> Path:
    """Rows: output words; columns: ``layout.tokens`` (or source words, see ``source_labels``).

    Cells are shaded by the raw attention weight (0 white, 1 dark blue) so rows compare;
    the source sentence is the title. alpha: (T_words, N); extra rows/columns are ignored.
    A text has no backdrop (``backdrop`` is accepted and ignored).
    """
    a = cv.as_matrix(alpha)
    columns = source_labels(layout, a.shape[1])
    a = np.clip(cv.fit_rows(a, words, len(columns)), 0.0, 1.0)  # (T_words, S)
    label_font, small, title_font = cv.font(14), cv.font(11), cv.font(15, bold=True)
    draw = cv.measure()

    row_w = max([0] + [cv.text_size(draw, w, label_font)[0] for w in words]) + 8
    col_h = max([0] + [cv.text_size(draw, t, label_font)[0] for t in columns]) + 8
    mat_w, mat_h = CELL * len(columns), CELL * len(words)
    bar_h = max(40, min(BAR_H, mat_h))
    bar_w = 12 + 6 + cv.text_size(draw, "1.0", small)[0]
    width = max(2 * cv.MARGIN + row_w + mat_w + 16 + bar_w, 320)
    title = cv.wrap(source, title_font, width - 2 * cv.MARGIN)
    title_h = len(title) * cv.line_height(title_font) + (10 if title else 0)
    height = 2 * cv.MARGIN + title_h + col_h + max(mat_h, bar_h)

    page, draw, y = cv.page(width, height, title, title_font)
    x0, y0 = cv.MARGIN + row_w, cv.MARGIN + title_h + col_h  # top-left of the matrix

    if mat_w and mat_h:
        cells = cv.colormap_array(a, "blues")  # (T_words, S, 3)
        big = Image.fromarray(cells, "RGB").resize((mat_w, mat_h), Image.Resampling.NEAREST)
        page.paste(big, (x0, y0))
    for j in range(len(columns) + 1):
        draw.line((x0 + j * CELL, y0, x0 + j * CELL, y0 + mat_h), fill=cv.RULE)
    for t in range(len(words) + 1):
        draw.line((x0, y0 + t * CELL, x0 + mat_w, y0 + t * CELL), fill=cv.RULE)

    for t, w in enumerate(words):
        cv.draw_text(draw, (x0 - 6, y0 + t * CELL + CELL / 2), w, label_font, anchor="rm")
    for j, tok in enumerate(columns):
        img, mask = cv.vertical_label(tok, label_font)
        page.paste(img, (x0 + j * CELL + (CELL - img.width) // 2, y0 - 6 - img.height), mask)

    bx = x0 + mat_w + 16
    page.paste(cv.colorbar(bar_h), (bx, y0))
    cv.draw_text(draw, (bx + 18, y0), "1.0", small, fill=cv.MUTED, anchor="lt")
    cv.draw_text(draw, (bx + 18, y0 + bar_h), "0", small, fill=cv.MUTED, anchor="lb")
    return cv.save_png(page, out_path)
