"""Corpus readers for public formats, and the synthetic multimodal corpus generator."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdesc.errors import DataError


@dataclass
class Example:
    """One input with its reference descriptions.

    source: a file path (image, video, audio) or the source sentence (text).
    references: one or more reference sentences (plain, detokenized text).
    meta: ground truth for alignment scores, relative to ``references[0]`` where it
      concerns words:
      ``regions``: ``{word: [region, ...]}`` - where a word's referent lives in the input
        (image: ``[x0, y0, x1, y1]`` pixels; video/speech: ``[start_s, end_s]``);
      ``alignment``: ``{"sure": [[i, j], ...], "possible": [[i, j], ...]}`` - source word i
        is aligned to target word j (whitespace words, 0-based), ``possible`` ⊇ ``sure``;
      ``objects``: the objects the input shows, ``[{"shape", "colour", "size", "box"}, ...]``
        (box ``[x0, y0, x1, y1]`` pixels) - scored by ``metrics.object_scores``.
    """

    id: str
    source: str
    references: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def load_json(path: Path) -> Any:
    """A corpus JSON file; a DataError naming the file and where it is broken."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def json_key(path: Path, obj: Any, key: str, where: str) -> Any:
    """``obj[key]``, or a DataError saying which object of ``path`` lacks it."""
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{path}: {where} has no key {key!r}")
    return obj[key]
