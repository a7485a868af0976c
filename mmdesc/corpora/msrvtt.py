"""Video-caption corpora: MSR-VTT's JSON and MSVD's annotation files.

- MSR-VTT (``train_val_videodatainfo.json``, ``test_videodatainfo.json``): ``{"videos": [{"video_id":
  "video0", "split": "train", ...}], "sentences": [{"video_id": "video0", "caption": "...", "sen_id": 0}]}``;
  clips are ``{video_id}.mp4``. The synthetic corpus writes this format too, with each video's
  ``regions`` (word -> time spans), which become ``Example.meta["regions"]``.
- MSVD (the Microsoft Research Video Description corpus): ``MSR Video Description Corpus.csv``
  (``VideoID,Start,End,WorkerID,Source,AnnotationTime,Language,Description``; English rows are kept,
  clips are ``{VideoID}_{Start}_{End}.avi``), or a descriptions file such as
  ``AllVideoDescriptions.txt`` (``clip description`` per line, ``#`` comments).

The clip of a video id is the file ``{id}.mp4`` in the videos folder, else the first file there
whose name without suffix is the id. Readers never open the clips. Malformed files raise
:class:`DataError` naming the file and the problem.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

from mmdesc.corpora import Example, json_key as _get, load_json as _load_json
from mmdesc.corpora.parallel import read_lines
from mmdesc.errors import DataError


def write_msrvtt(path: Path, videos: list[dict], sentences: list[dict]) -> None:
    """Write MSR-VTT-style JSON (``videos``, ``sentences``), via a temporary name."""
    path = Path(path)
    doc = {"info": {"description": "mmdesc synthetic corpus"}, "videos": videos, "sentences": sentences}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
    os.replace(tmp, path)


def read_video_captions(annotations: Path, videos_dir: Path, split: Sequence[str] = (),
                        ids: Path | None = None) -> list[Example]:
    """One Example per video of an MSR-VTT JSON (``.json``) or an MSVD CSV (``.csv``) or
    descriptions file (anything else).

    ``split``: keep only MSR-VTT videos whose ``split`` is one of these (empty: all).
    ``ids``: keep only the videos listed there (the first field of each line), in that order.
    """
    annotations = Path(annotations)
    if annotations.suffix.lower() == ".json":
        examples = read_msrvtt(annotations, videos_dir, split)
    elif split:
        raise DataError(f"{annotations}: a split {list(split)} is given, but only MSR-VTT JSON has splits "
                        f"(use ids: a file of video ids)")
    elif annotations.suffix.lower() == ".csv":
        examples = read_msvd_csv(annotations, videos_dir)
    else:
        examples = read_msvd_descriptions(annotations, videos_dir)
    if ids is None:
        return examples
    wanted = [line.split()[0] for line in read_lines(Path(ids)) if line.strip() and not line.startswith("#")]
    by_id = {ex.id: ex for ex in examples}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise DataError(f"{ids}: {len(missing)} ids have no captions in {annotations} (first: {missing[0]!r})")
    return [by_id[i] for i in wanted]


class _Clips:
    """Video id -> clip path, from one listing of the videos folder."""

    def __init__(self, folder: Path, default_suffix: str):
        self.folder, self.suffix = Path(folder), default_suffix
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            names = []
        self.names = set(names)
        self.by_stem: dict[str, str] = {}
        for name in names:
            self.by_stem.setdefault(os.path.splitext(name)[0], name)

    def __call__(self, video_id: str) -> str:
        name = video_id + self.suffix
        if name not in self.names:
            name = self.by_stem.get(video_id, name)
        return str(self.folder / name)


def read_msrvtt(path: Path, videos_dir: Path, split: Sequence[str] = ()) -> list[Example]:
    """One Example per video of an MSR-VTT JSON (in the file's order), references in ``sen_id`` order."""
    path = Path(path)
    doc = _load_json(path)
    videos, sentences = _get(path, doc, "videos", "the top level"), _get(path, doc, "sentences", "the top level")
    if not isinstance(videos, list) or not isinstance(sentences, list):
        raise DataError(f"{path}: 'videos' and 'sentences' must be lists")
    keep, seen, order = set(split), set(), []
    for n, v in enumerate(videos):
        vid = str(_get(path, v, "video_id", f"videos[{n}]"))
        seen.add(str(v.get("split", "")))
        if not keep or v.get("split") in keep:
            order.append((vid, v))
    if not order:
        found = ", ".join(sorted(s for s in seen if s)) or "none"
        raise DataError(f"{path}: no videos in split {list(split)} (splits here: {found})")
    caps: dict[str, list[tuple[int, str]]] = {vid: [] for vid, _ in order}
    for n, s in enumerate(sentences):
        vid = str(_get(path, s, "video_id", f"sentences[{n}]"))
        if vid in caps:
            text = str(_get(path, s, "caption", f"sentences[{n}]")).strip()
            caps[vid].append((int(s.get("sen_id", n)), text))
    clip = _Clips(videos_dir, ".mp4")
    out = []
    for vid, v in order:
        refs = [c for _, c in sorted(caps[vid], key=lambda p: p[0]) if c]
        if not refs:
            raise DataError(f"{path}: video {vid!r} has no captions")
        meta = {"regions": v["regions"]} if isinstance(v.get("regions"), dict) else {}
        out.append(Example(vid, clip(vid), refs, meta))
    return out


CSV_COLUMNS = ("VideoID", "Start", "End", "Language", "Description")


def read_msvd_csv(path: Path, videos_dir: Path, language: str = "English") -> list[Example]:
    """One Example per clip of MSVD's CSV, with its descriptions in ``language``, in first-seen order."""
    path = Path(path)
    text = "\n".join(read_lines(path))
    rows = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (rows.fieldnames or [])]
    if missing:
        raise DataError(f"{path}: not an MSVD CSV: no column {', '.join(missing)} (header: {rows.fieldnames})")
    caps: dict[str, list[str]] = {}
    for row in rows:
        if (row.get("Language") or "").strip() != language:
            continue
        clip_id = f"{row['VideoID'].strip()}_{row['Start'].strip()}_{row['End'].strip()}"
        desc = (row.get("Description") or "").strip()
        if desc:
            caps.setdefault(clip_id, []).append(desc)
    if not caps:
        raise DataError(f"{path}: no {language} descriptions")
    clip = _Clips(videos_dir, ".avi")
    return [Example(cid, clip(cid), refs) for cid, refs in caps.items()]


def read_msvd_descriptions(path: Path, videos_dir: Path) -> list[Example]:
    """One Example per clip of a ``clip description`` file (AllVideoDescriptions.txt), in first-seen order."""
    path = Path(path)
    caps: dict[str, list[str]] = {}
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        clip_id, _, desc = line.strip().partition(" ")
        if not desc.strip():
            raise DataError(f"{path} line {n}: expected 'clip_id description'")
        caps.setdefault(clip_id, []).append(desc.strip())
    if not caps:
        raise DataError(f"{path}: no descriptions")
    clip = _Clips(videos_dir, ".avi")
    return [Example(cid, clip(cid), refs) for cid, refs in caps.items()]
