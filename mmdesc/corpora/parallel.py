"""Parallel text: two aligned plain-text files or one TSV, with optional Pharaoh alignments."""
from __future__ import annotations

import warnings
from pathlib import Path

from mmdesc.corpora import Example
from mmdesc.errors import DataError


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file without line endings (a leading BOM dropped).

    Raises DataError naming the file, and the line for bytes that are not UTF-8.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    out = []
    for n, line in enumerate(raw, 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path} line {n}: not UTF-8 (byte {e.start} of the line)") from None
        out.append((text.removeprefix("\ufeff") if n == 1 else text).rstrip("\r"))
    return out


def _lines(n: int) -> str:
    return f"{n} line" if n == 1 else f"{n} lines"


def parse_pharaoh(line: str, n_src: int, n_tgt: int | None, where: str) -> dict:
    """``"0-0 1?0 2-1"`` -> ``{"sure": [[0, 0], [2, 1]], "possible": [[0, 0], [1, 0], [2, 1]]}``.

    ``n_tgt=None`` checks source indices only. Raises DataError(``where``: problem).
    """
    sure, possible = [], []
    for tok in line.split():
        sep = "-" if "-" in tok else "?"
        i, _, j = tok.partition(sep)
        if not (i.isdigit() and j.isdigit()):
            raise DataError(f"{where}: bad alignment link {tok!r} (expected i-j or i?j)")
        i, j = int(i), int(j)
        if i >= n_src or (n_tgt is not None and j >= n_tgt):
            tgt = "?" if n_tgt is None else n_tgt
            raise DataError(f"{where}: link {tok!r} is out of range "
                            f"for {n_src} source and {tgt} target words")
        (sure if sep == "-" else possible).append([i, j])
    return {"sure": sorted(sure), "possible": sorted({tuple(p): p for p in sure + possible}.values())}


def _pairs(src: Path | None, tgt: Path | None, tsv: Path | None) -> tuple[str, list[str], list[str] | None]:
    """(name for messages, sources, targets or None), line-aligned."""
    if (tsv is None) == (src is None):
        raise DataError("parallel text: give either src (and optionally tgt) or tsv, not both or neither")
    if tsv is not None:
        if tgt is not None:
            raise DataError(f"{tsv}: a TSV file holds its targets; do not give tgt as well")
        sources, targets = [], []
        for n, line in enumerate(read_lines(tsv), 1):
            if line.count("\t") != 1:
                raise DataError(f"{tsv} line {n}: expected exactly one tab, found {line.count(chr(9))}")
            s, t = line.split("\t")
            sources.append(s)
            targets.append(t)
        return str(tsv), sources, targets
    sources = read_lines(src)
    if tgt is None:
        return str(src), sources, None
    targets = read_lines(tgt)
    if len(sources) != len(targets):
        raise DataError(f"{src} has {_lines(len(sources))} but {tgt} has {len(targets)}")
    return str(src), sources, targets


def read_parallel(src: Path | None = None, tgt: Path | None = None, tsv: Path | None = None,
                  align: Path | None = None, max_words: int = 0) -> list[Example]:
    """One Example per sentence pair: id = 1-based line number, references = [target].

    Without a target (``tgt=None``, for translating) references are ``[]``. With ``align``
    (Pharaoh: ``i-j`` sure, ``i?j`` possible) ``meta["alignment"]`` holds the links.
    Pairs with an empty side, or (``max_words > 0``) a side longer than ``max_words``
    words, are skipped; one warning reports how many.
    Raises DataError for a line-count mismatch, bytes that are not UTF-8, a TSV line
    without exactly one tab, or an alignment link out of range.
    """
    name, sources, targets = _pairs(src, tgt, tsv)
    links = read_lines(align) if align is not None else None
    if links is not None and len(links) != len(sources):
        raise DataError(f"{name} has {_lines(len(sources))} but {align} has {len(links)}")
    out, empty, long = [], 0, 0
    for n, s in enumerate(sources, 1):
        s = s.strip()
        t = targets[n - 1].strip() if targets is not None else None
        if not s or t == "":
            empty += 1
            continue
        if max_words > 0 and max(len(s.split()), len(t.split()) if t else 0) > max_words:
            long += 1
            continue
        meta = {}
        if links is not None:
            n_tgt = len(t.split()) if t is not None else None
            meta["alignment"] = parse_pharaoh(links[n - 1], len(s.split()), n_tgt, f"{align} line {n}")
        out.append(Example(str(n), s, [t] if t is not None else [], meta))
    if empty or long:
        warnings.warn(f"{name}: skipped {empty} empty and {long} over-long pairs", stacklevel=2)
    return out
