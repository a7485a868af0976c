"""The self-contained HTML report: every input's sentence, and where the model looked per word.

One file that opens with no network: the script, the style and every picture are inline
(pictures as JPEG/PNG ``data:`` URIs, downsampled), and a Content-Security-Policy meta tag
forbids the page any request of its own. Attention is stored compactly: per output word, its
weights quantised to uint8 relative to the word's peak (plus that peak), base64-encoded.

The page is made of *groups* (one input for ``describe``; one scene, seen by several models,
for ``compare``), each holding *views* (one model's reading of one input). A view shows the
generated sentence; hovering a word shows its attention, clicking selects it (and, in a
group, the same word in every other view), a play button steps through the words. What is
drawn is keyed by the layout kind: the per-kind modules in :mod:`mmdesc.viz` give the
geometry (``VIEWS``), and ``report.js`` draws it in the browser.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from mmdesc import alignment
from mmdesc.files import write_text_atomic
from mmdesc.viz import LINKS, SEEN_AS, VIEWS, WHERE, check_kind
from mmdesc.viz.canvas import as_matrix, colormap_anchors

PICTURE_SIDE = {"grid": 240, "time": 640}  # longest side of a view's picture, px (never enlarged)
PICTURE_HEIGHT = 120  # a time view's picture is at most this high, px
JPEG_QUALITY = 82
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def data_uri(image: Image.Image, fmt: str = "JPEG") -> str:
    """``image`` inline: ``data:image/jpeg;base64,...`` (or PNG)."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        image.save(buf, format=fmt, optimize=True)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def shrink(image: Image.Image, side: int, height: int | None = None) -> Image.Image:
    """``image`` scaled down (never up) so its longest side is at most ``side`` px (and its
    height at most ``height``)."""
    w, h = image.size
    scale = min(1.0, side / max(w, h), (height / h) if height else 1.0)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)  # box-reduce first: fast


def quantise(alpha: np.ndarray) -> tuple[str, list[float]]:
    """(W, N) attention -> base64 of uint8 ``round(255 * a / peak)`` row by row, and each row's peak."""
    peak = alpha.max(axis=1, initial=0.0) if alpha.size else np.zeros(len(alpha))  # (W,)
    safe = np.where(peak > 0, peak, 1.0)[:, None]
    q = np.rint(np.clip(alpha / safe, 0.0, 1.0) * 255).astype(np.uint8)  # (W, N)
    return base64.b64encode(q.tobytes()).decode("ascii"), [round(float(p), 5) for p in peak]


def view(described: Sequence[Any], source: str, *, modality: str, model: str = "", label: str | None = None,
         backdrop: Image.Image | None = None, reference: str | None = None) -> dict:
    """One model's reading of one input, as the report's JSON: the n-best list (best first,
    each with ``text`` and ``score``), the best hypothesis's words and their attention over
    the layout, per-word statistics, and what the layout kind needs to draw it.

    described: the input's n-best ``Described`` (``mmdesc.predict``); source: its file path
    or text line; backdrop: the modality's picture (else the kind's default).
    Raises ValueError for an unknown layout kind, MediaError for an unreadable picture.
    """
    best = described[0]
    layout = best.layout
    kind = check_kind(layout)
    n = len(layout)
    a = as_matrix(best.alpha)[:len(best.words), :n]  # (W, N) over the real positions
    shown_layout, shown = SEEN_AS[kind](layout, a) if kind in SEEN_AS else (layout, a)
    shown_kind = check_kind(shown_layout)
    geometry = VIEWS[shown_kind](shown_layout, source, backdrop)
    picture = geometry.pop("picture")
    if picture is not None:
        picture = shrink(picture, PICTURE_SIDE.get(shown_kind, 240), PICTURE_HEIGHT if shown_kind == "time" else None)
    batch = alignment.pad([(a, layout)])
    per_word = alignment.word_statistics(batch)
    sentence = alignment.corpus_statistics([(a, layout)])
    att, scale = quantise(np.asarray(shown))
    positions = per_word["position"][0].tolist() if len(best.words) else []
    link = LINKS[kind](layout, a) if kind in LINKS else list(best.words)
    return {
        "modality": modality, "model": model, "kind": shown_kind, "layout_kind": kind,
        "label": label if label is not None else (Path(source).name if os.path.exists(source) else ""),
        "reference": reference, "words": list(best.words), "n": len(shown_layout), "att": att, "scale": scale,
        "link": [str(k).lower() for k in link],
        "nbest": [{"text": d.text, "score": round(float(d.score), 4)} for d in described],
        "stats": {"entropy": [round(float(v), 3) for v in per_word["entropy"][0][:len(best.words)]],
                  "peak": [round(float(v), 3) for v in per_word["peak"][0][:len(best.words)]],
                  "where": [WHERE[kind](layout, p) for p in positions],
                  "sentence": {k: round(v, 3) for k, v in sentence.items()}},
        "geometry": geometry,
        "picture": data_uri(picture) if picture is not None else None,
        "picture_size": list(picture.size) if picture is not None else None,
    }


def table_html(columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    """A plain HTML table (cells escaped; floats with 2 decimals; None as a dash)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "\u2014"
        return f"{v:.2f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<table class="stats">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def figure_html(path: str | os.PathLike, caption: str) -> str:
    """A PNG figure inline, with its caption."""
    with Image.open(path) as im:
        uri = data_uri(im.convert("RGB"), "PNG")
    return (f'<figure><img alt="{html.escape(caption)}" src="{uri}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _asset(name: str) -> str:
    return resources.files("mmdesc.viz").joinpath(name).read_text(encoding="utf-8")


def render(title: str, groups: Sequence[dict], sections: Sequence[str] = ()) -> str:
    """The whole page as a string. groups: ``{"id", "title", "caption"?, "views": [view, ...]}``;
    sections: HTML fragments (tables, figures) shown above the groups."""
    data = {"title": title, "maps": colormap_anchors(),
            "groups": list(groups)}
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    intro = "".join(f'<section class="summary">{s}</section>' for s in sections)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_asset('report.css')}</style></head>"
        f"<body><header><h1>{html.escape(title)}</h1>"
        "<p class=\"help\">Hover a word to see where the model looked; click to keep it (and to show the "
        "same word in every view of the input); \u25b6 steps through the sentence.</p></header>"
        f"{intro}<main id=\"groups\"></main>"
        f'<script type="application/json" id="mmdesc-data">{payload}</script>'
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )


def write_report(path: str | os.PathLike, title: str, groups: Sequence[dict],
                 sections: Sequence[str] = ()) -> Path:
    """Write the report atomically (a temporary file renamed into place); returns its path."""
    return write_text_atomic(path, render(title, groups, sections))


def model_view(trained: Any, source: str, described: Sequence[Any], label: str | None = None,
               reference: str | None = None) -> dict:
    """:func:`view` of a trained model's n-best for ``source``, over its modality's backdrop."""
    from mmdesc.viz import backdrop_for

    layout = described[0].layout
    return view(described, source, modality=trained.modality, model=trained.recipe.name, label=label,
                backdrop=backdrop_for(trained.modality, source, layout), reference=reference)


def group(gid: str, title: str, views: Sequence[dict], caption: str | None = None) -> dict:
    """A group of views of one input (or one scene) for :func:`render`."""
    return {"id": gid, "title": title, "caption": caption, "views": list(views)}
