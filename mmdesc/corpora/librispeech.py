"""Transcribed audio corpora: mmdesc's manifest TSV, LibriSpeech folders, Common Voice TSVs.

Manifest (what the synthetic corpus writes; any tool can write one)::

    path<TAB>transcript<TAB>spans<TAB>...
    audio/u1.wav<TAB>a red circle<TAB>0.120-0.300 0.300-0.610 0.610-1.020

``path`` and ``transcript`` are required; ``spans`` (optional, may be empty) holds one
``start-end`` pair in seconds per whitespace word of the transcript and becomes
``Example.meta["spans"]``; other columns go into ``meta`` as strings. Paths are relative to
the manifest's folder unless an audio folder is given.

LibriSpeech: a split folder (e.g. ``LibriSpeech/dev-clean``) of ``SPEAKER/CHAPTER/`` folders,
each with ``SPEAKER-CHAPTER.trans.txt`` (lines ``ID WORDS...``) and ``ID.flac``. Transcripts
are upper case; they are lowercased.

Common Voice: a TSV with a header naming at least ``path`` and ``sentence`` (``train.tsv``,
``test.tsv``, ...) and the MP3 clips in ``clips/`` beside it. Sentences are kept as written.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Sequence

from mmdesc.corpora import Example
from mmdesc.errors import DataError

csv.field_size_limit(1 << 24)


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a TSV without quoting (transcripts may hold quote marks)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    lines = [row for row in lines if any(cell.strip() for cell in row)]
    if not lines:
        raise DataError(f"{path}: empty file, expected a header line")
    return [h.strip() for h in lines[0]], lines[1:]


def _columns(path: Path, header: list[str], needed: Sequence[str]) -> dict[str, int]:
    index = {name: i for i, name in enumerate(header)}
    missing = [n for n in needed if n not in index]
    if missing:
        raise DataError(f"{path}: the header line has no {', '.join(repr(m) for m in missing)} column "
                        f"(it has {', '.join(repr(h) for h in header)})")
    return index


def parse_spans(text: str, where: str) -> list[list[float]]:
    """``"0.1-0.3 0.3-0.7"`` -> ``[[0.1, 0.3], [0.3, 0.7]]``; raises DataError."""
    out = []
    for pair in text.split():
        start, sep, end = pair.partition("-")
        try:
            s, e = float(start), float(end)
        except ValueError:
            s = e = float("nan")
        if not sep or not (0 <= s <= e):
            raise DataError(f"{where}: span {pair!r} is not start-end in seconds (0 <= start <= end)")
        out.append([s, e])
    return out


def read_manifest(path: str | os.PathLike, audio: str | os.PathLike | None = None) -> list[Example]:
    """Examples of a manifest TSV (see the module docstring); raises DataError."""
    path = Path(path)
    base = Path(audio) if audio is not None else path.parent
    header, rows = _rows(path)
    col = _columns(path, header, ("path", "transcript"))
    out = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}, line {line}"
        if len(row) < len(header):
            row = row + [""] * (len(header) - len(row))
        if len(row) > len(header):
            raise DataError(f"{where}: {len(row)} fields for {len(header)} columns")
        rel, transcript = row[col["path"]].strip(), " ".join(row[col["transcript"]].split())
        if not rel:
            raise DataError(f"{where}: empty path")
        meta: dict = {h: row[i] for h, i in col.items() if h not in ("path", "transcript", "spans")}
        if "spans" in col and row[col["spans"]].strip():
            spans = parse_spans(row[col["spans"]], where)
            if len(spans) != len(transcript.split()):
                raise DataError(f"{where}: {len(spans)} spans for {len(transcript.split())} words")
            meta["spans"] = spans
        out.append(Example(Path(rel).stem, str(base / rel), [transcript], meta))
    return out


def write_manifest(path: str | os.PathLike, rows: Iterable[tuple[str, str, Sequence[Sequence[float]], str]]) -> None:
    """Write ``(path, transcript, spans, voice)`` rows as a manifest TSV (atomically)."""
    path = Path(path)
    lines = ["path\ttranscript\tspans\tvoice\n"]
    for rel, transcript, spans, voice in rows:
        cells = (rel, transcript, " ".join(f"{s:.3f}-{e:.3f}" for s, e in spans), voice)
        if any("\t" in c or "\n" in c for c in cells):
            raise ValueError(f"manifest cells may not hold tabs or newlines: {cells!r}")
        lines.append("\t".join(cells) + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def read_librispeech(folder: str | os.PathLike) -> list[Example]:
    """Every utterance under a LibriSpeech split folder, sorted by id; raises DataError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (expected a LibriSpeech split such as dev-clean)")
    out = []
    for trans in sorted(folder.rglob("*.trans.txt")):
        for line_no, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            uid, _, words = line.strip().partition(" ")
            if not words.strip():
                raise DataError(f"{trans}, line {line_no}: expected 'ID TRANSCRIPT'")
            out.append(Example(uid, str(trans.parent / f"{uid}.flac"), [" ".join(words.lower().split())],
                               {"speaker": uid.split("-")[0]}))
    if not out:
        raise DataError(f"{folder}: no *.trans.txt files below it")
    return out


def read_commonvoice(tsv: str | os.PathLike, clips: str | os.PathLike | None = None) -> list[Example]:
    """The clips of a Common Voice TSV (``clips/`` beside it unless given); raises DataError."""
    tsv = Path(tsv)
    clips = Path(clips) if clips is not None else tsv.parent / "clips"
    header, rows = _rows(tsv)
    col = _columns(tsv, header, ("path", "sentence"))
    out = []
    for line, row in enumerate(rows, start=2):
        if len(row) <= max(col["path"], col["sentence"]):
            raise DataError(f"{tsv}, line {line}: {len(row)} fields, the header has {len(header)}")
        name, sentence = row[col["path"]].strip(), " ".join(row[col["sentence"]].split())
        if not name:
            raise DataError(f"{tsv}, line {line}: empty path")
        meta = {"speaker": row[col["client_id"]]} if "client_id" in col and len(row) > col["client_id"] else {}
        out.append(Example(Path(name).stem, str(clips / name), [sentence], meta))
    return out
