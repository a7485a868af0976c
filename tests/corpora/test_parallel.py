"""Parallel text reader: plain files, TSV, alignments, and its errors."""
from __future__ import annotations

import pytest

from mmdesc.corpora.parallel import parse_pharaoh, read_parallel
from mmdesc.errors import DataError


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_two_files(tmp_path):
    en = write(tmp_path / "train.en", "a red star\n the end \n")
    fr = write(tmp_path / "train.fr", "une étoile rouge\r\nla fin\n")
    ex = read_parallel(en, fr)
    assert [(e.id, e.source, e.references, e.meta) for e in ex] == [
        ("1", "a red star", ["une étoile rouge"], {}), ("2", "the end", ["la fin"], {})]


def test_source_only(tmp_path):
    ex = read_parallel(write(tmp_path / "x.en", "\ufeffone\ntwo"))
    assert [(e.id, e.source, e.references) for e in ex] == [("1", "one", []), ("2", "two", [])]


def test_tsv_and_alignment(tmp_path):
    tsv = write(tmp_path / "d.tsv", "a b c\tx y\nd\te\n")
    align = write(tmp_path / "d.align", "0-0 1?0 2-1\n0-0\n")
    ex = read_parallel(tsv=tsv, align=align)
    assert ex[0].references == ["x y"]
    assert ex[0].meta["alignment"] == {"sure": [[0, 0], [2, 1]], "possible": [[0, 0], [1, 0], [2, 1]]}
    assert ex[1].meta["alignment"] == {"sure": [[0, 0]], "possible": [[0, 0]]}


def test_skips_are_counted_and_ids_are_line_numbers(tmp_path):
    en = write(tmp_path / "train.en", "a\n\nb c d e\nf\n  \n")
    fr = write(tmp_path / "train.fr", "A\nB\nC\n\nE\n")
    with pytest.warns(UserWarning, match=r"train.en: skipped 3 empty and 1 over-long pairs"):
        ex = read_parallel(en, fr, max_words=3)
    assert [e.id for e in ex] == ["1"]


def test_line_count_mismatch(tmp_path):
    en = write(tmp_path / "train.en", "a\nb\nc\n")
    fr = write(tmp_path / "train.fr", "A\nB\n")
    with pytest.raises(DataError, match=r"train.en has 3 lines but .*train.fr has 2"):
        read_parallel(en, fr)


def test_tsv_needs_exactly_one_tab(tmp_path):
    tsv = write(tmp_path / "bad.tsv", "a\tb\na\tb\tc\n")
    with pytest.raises(DataError, match=r"bad.tsv line 2: expected exactly one tab, found 2"):
        read_parallel(tsv=tsv)
    write(tsv, "a b\n")
    with pytest.raises(DataError, match=r"bad.tsv line 1"):
        read_parallel(tsv=tsv)


def test_not_utf8_names_file_and_line(tmp_path):
    en = write(tmp_path / "ok.en", "a\nb\n")
    fr = write(tmp_path / "latin1.fr", b"A\n\xe9t\xe9\n")
    with pytest.raises(DataError, match=r"latin1.fr line 2: not UTF-8"):
        read_parallel(en, fr)


def test_alignment_out_of_range(tmp_path):
    en = write(tmp_path / "s.en", "a b\n")
    fr = write(tmp_path / "s.fr", "x\n")
    align = write(tmp_path / "s.align", "1-1\n")
    with pytest.raises(DataError, match=r"s.align line 1: link '1-1' is out of range"):
        read_parallel(en, fr, align=align)
    write(align, "0-0\n0-0\n")
    with pytest.raises(DataError, match=r"s.en has 1 line but .*s.align has 2"):
        read_parallel(en, fr, align=align)


def test_bad_link_and_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="bad alignment link 'x-1'"):
        parse_pharaoh("x-1", 3, 3, "here")
    with pytest.raises(DataError, match="either src"):
        read_parallel()
