"""Corpus readers for public formats, and the synthetic multimodal corpus generator."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
