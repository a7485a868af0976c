"""A corpus of malformed inputs: each gets a correct result or one clear line, never a traceback."""
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from conftest import mmdesc


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb's calling card)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def saved(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def make_images(src: Path) -> dict[str, tuple[str, bytes, str]]:
    """kind -> (file name, bytes, expected: 'ok' or 'error')."""
    good = Image.open(src).convert("RGB")
    png, jpg = saved(good, "PNG"), saved(good, "JPEG")
    rgba = good.convert("RGBA")
    rgba.putalpha(128)
    return {
        "zero bytes": ("empty.png", b"", "error"),
        "truncated png": ("trunc.png", png[: len(png) // 2], "error"),
        "truncated jpeg": ("trunc.jpg", jpg[: len(jpg) // 3], "error"),
        "text renamed as image": ("notes.png", b"just some text, not pixels\n" * 5, "error"),
        "html renamed as jpeg": ("page.jpg", b"<html><body>hello</body></html>", "error"),
        "random bytes": ("noise.webp", bytes(range(256)) * 8, "error"),
        "decompression bomb header": ("bomb.png", png_header(20000, 20000), "error"),
        "huge declared size 65535x65535": ("huge.png", png_header(65535, 65535), "error"),
        "png with wrong extension": ("actually_png.jpg", png, "ok"),
        "1x1 pixel": ("dot.png", saved(Image.new("RGB", (1, 1), (200, 0, 0)), "PNG"), "ok"),
        "grayscale": ("gray.png", saved(good.convert("L"), "PNG"), "ok"),
        "cmyk jpeg": ("cmyk.jpg", saved(good.convert("CMYK"), "JPEG"), "ok"),
        "16-bit grayscale": ("deep.png", saved(good.convert("L").convert("I;16"), "PNG"), "ok"),
        "alpha channel": ("alpha.png", saved(rgba, "PNG"), "ok"),
        "palette gif": ("pal.gif", saved(good.convert("P"), "GIF"), "ok"),
        "very wide": ("wide.png", saved(good.resize((1200, 8)), "PNG"), "ok"),
    }


TEXT_CASES = {  # kind -> (stdin bytes, expected output line or None for "an error line")
    "empty line": (b"\n", ""),
    "only spaces": (b"   \n", ""),
    "non-UTF-8 bytes": (b"\xff\xfe\xfa red circle\n", None),
    "control characters": (b"a red\x07 circle\n", None),
    "over-long line": ((b"a small red circle " * 200).strip() + b"\n", "any"),
    "unknown words and emoji": ("a gigantic \U0001F600 dodecahedron\n".encode(), "any"),
}


def test_every_bad_image_gets_a_result_or_one_clear_line(tiny_image_run, tiny_data, tmp_path):
    cases = make_images(tiny_data / "images" / "test_000000.png")
    (tmp_path / "folder.png").mkdir()
    cases["a folder named like an image"] = ("folder.png", None, "error")
    cases["missing file"] = ("missing.png", None, "error")
    import os

    os.mkfifo(tmp_path / "fifo.png")
    cases["a FIFO named like an image"] = ("fifo.png", None, "error")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    cases["a link to /dev/zero"] = ("zero.png", None, "error")
    got = {}
    for kind, (name, data, expected) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        r = mmdesc("describe", tmp_path / name, "-c", tiny_image_run)
        assert "Traceback" not in r.err, kind
        if expected == "ok":
            assert r.code == 0, f"{kind}: {r.err}"
            assert r.out.startswith(f"{tmp_path / name}\t") and r.out.split("\t")[1].strip(), kind
            got[kind] = "described, exit 0"
        else:
            assert r.code == 2, f"{kind}: expected a clear error, got {r.out!r}"
            lines = [l for l in r.err.splitlines() if l.startswith("error:")]
            assert len(lines) == 1 and str(tmp_path / name) in lines[0], f"{kind}: {r.err!r}"
            got[kind] = f"exit 2: {lines[0].split(': ', 2)[-1]}"
    report("image", got)
    assert len(cases) >= 20


def report(what: str, got: dict) -> None:
    """Print what each kind of bad input got (shown with pytest -s)."""
    print(f"\nbad-input corpus, {what}: {len(got)} kinds tried")
    for kind, outcome in got.items():
        print(f"  {kind}: {outcome}")


def test_every_bad_text_line_gets_a_result_or_one_clear_line(tiny_text_run):
    got = {}
    for kind, (data, expected) in TEXT_CASES.items():
        r = mmdesc("translate", "-c", tiny_text_run, input=b"a red circle\n" + data + b"a blue star\n")
        assert "Traceback" not in r.err, f"{kind}: {r.err}"
        assert r.code == (2 if expected is None else 0), f"{kind}: {r.err}"  # a failed line fails the run
        lines = r.out.split("\n")
        assert len(lines) == 4 and lines[0] and lines[2], f"{kind}: {r.out!r}"  # neighbours untouched
        if expected is None:
            assert lines[1] == "" and "line 2" in r.err, f"{kind}: {r.err!r}"
            got[kind] = f"empty output line, exit 2: {r.err.splitlines()[0].split('line 2: ')[-1]}"
        elif expected == "":
            assert lines[1] == "", kind
            got[kind] = "empty output line, exit 0"
        else:
            assert lines[1], kind
            got[kind] = "translated, exit 0" + (" (warning: truncated)" if "truncat" in r.err else "")
    report("text", got)


def test_describe_a_folder_with_bad_files_finishes_the_good_ones(tiny_image_run, tiny_data, tmp_path):
    for k in range(4):
        (tmp_path / f"good{k}.png").write_bytes((tiny_data / "images" / f"test_00000{k}.png").read_bytes())
    (tmp_path / "bad1.png").write_bytes(b"")
    (tmp_path / "bad2.jpg").write_bytes(b"GIF89a broken")
    r = mmdesc("describe", tmp_path, "-c", tiny_image_run)
    assert r.code == 2
    assert sorted(Path(l.split("\t")[0]).name for l in r.out.splitlines()) == [f"good{k}.png" for k in range(4)]
    tail = r.err.splitlines()[-3:]
    assert tail[0] == "2 of 6 files failed:" and "bad1.png" in r.err and "bad2.jpg" in r.err
