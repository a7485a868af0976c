"""Exit codes and output that scripts can trust: any failed input makes the exit code non-zero,
a closed pipe ends quietly (141), odd file names keep one line per file, pictures are never
overwritten, and options are range-checked before any work."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, mmdesc


def test_translate_with_one_bad_line_translates_the_rest_and_exits_2(tiny_text_run):
    r = mmdesc("translate", "-c", tiny_text_run, input=b"a red circle\na bad \x07 line\na blue star\n")
    assert r.code == 2, r.err
    out = r.out.split("\n")
    assert len(out) == 4 and out[0] and out[1] == "" and out[2], r.out  # every other line translated
    assert "error: line 2: invalid character U+0007" in r.err and "1 of 3 lines failed" in r.err


def test_evaluate_fails_without_usable_inputs_and_says_when_some_were_skipped(tiny_image_run, tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    run = tmp_path / "run"
    shutil.copytree(tiny_image_run / "best", run)
    meta = json.loads((run / "meta.json").read_text())
    meta["recipe"]["data"]["root"] = str(data)
    (run / "meta.json").write_text(json.dumps(meta))
    (data / "images" / "test_000002.png").write_bytes(b"broken")
    r = mmdesc("evaluate", "-c", run, "--json")
    assert r.code == 2, r.err
    assert json.loads(r.out)["n"] == 5 and json.loads(r.out)["skipped"] == 1  # the scores of the others
    assert "1 of 6 inputs could not be read" in r.err
    for k in range(6):
        (data / "images" / f"test_{k:06d}.png").write_bytes(b"")
    r = mmdesc("evaluate", "-c", run)
    assert r.code == 2 and not r.out and "none of its 6 inputs can be read" in r.err, r.err


def test_a_closed_pipe_ends_quietly_with_141(tiny_text_run):
    proc = subprocess.Popen([sys.executable, "-m", "mmdesc", "translate", "-c", str(tiny_text_run)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    proc.stdin.write(b"a red circle\n")
    proc.stdin.flush()
    assert proc.stdout.readline()  # like `head -1`: read one line, then go away
    proc.stdout.close()
    try:
        for _ in range(50):  # the next lines' output meets the closed pipe
            proc.stdin.write(b"a blue star\n")
            proc.stdin.flush()
            time.sleep(0.02)
        proc.stdin.close()
    except BrokenPipeError:  # it already ended
        pass
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err


def test_file_names_with_tabs_and_newlines_keep_one_line_per_file(tiny_image_run, tiny_data, tmp_path):
    odd, bad = tmp_path / "tab\there, new\nline, back\\slash.png", tmp_path / "bad\nname.png"
    shutil.copyfile(tiny_data / "images" / "test_000000.png", odd)
    bad.write_bytes(b"")
    r = mmdesc("describe", odd, bad, "-c", tiny_image_run)
    assert r.code == 2
    lines = r.out.splitlines()
    assert len(lines) == 1 and len(lines[0].split("\t")) == 2, r.out
    assert lines[0].split("\t")[0] == f"{tmp_path}/tab\\there, new\\nline, back\\\\slash.png"
    errors = [l for l in r.err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "bad\\nname.png: empty file" in errors[0]
    assert all(l.startswith(("error:", "  ", "1 of 2")) for l in r.err.splitlines()), r.err  # one line each


def test_attention_pictures_are_never_overwritten(tiny_image_run, tiny_data, tmp_path):
    img = tiny_data / "images" / "test_000001.png"
    pics = tmp_path / "att"
    for _ in range(2):
        r = mmdesc("describe", img, "-c", tiny_image_run, "--attention", pics)
        assert r.code == 0, r.err
    assert sorted(p.name for p in pics.iterdir()) == ["test_000001-1.png", "test_000001.png"]
    assert "test_000001.png exists; wrote test_000001-1.png" in r.err


OPTIONS = {  # kind -> (arguments, words of the one error line)
    "beam 0": (["--beam", "0"], "'--beam': 0 is not in the range 1<=x<=256"),
    "beam 10^12": (["--beam", str(10 ** 12)], "'--beam'"),
    "max-len 0": (["--max-len", "0"], "'--max-len'"),
    "max-len 10^9": (["--max-len", str(10 ** 9)], "1<=x<=10000"),
    "batch-size 10^9": (["--batch-size", str(10 ** 9)], "'--batch-size'"),
    "device that does not exist": (["--device", "cuda:99"], "cuda:99: this machine has"),
    "device that is no device": (["--device", "toaster"], "'toaster' is not a device name"),
    "attention folder that is a file": (["--attention", "{tmp}/a-file"], "is a file"),
    "attention folder on a read-only file system": (["--attention", "/proc/mmdesc-att"], "cannot write in /proc"),
}


@pytest.mark.parametrize("kind", OPTIONS)
def test_bad_options_are_one_line_before_any_work(kind, tmp_path):
    (tmp_path / "a-file").write_text("x")
    args, expected = OPTIONS[kind]
    start = time.monotonic()
    # the checkpoint does not exist: an option error shows that the options were checked first
    r = mmdesc("describe", tmp_path / "x.png", "-c", tmp_path / "no-checkpoint",
               *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.code == 2 and time.monotonic() - start < 10
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "no such checkpoint" not in r.err, r.err


def test_evaluate_hypotheses_path_is_checked_first(tmp_path):
    r = mmdesc("evaluate", "-c", tmp_path / "no-checkpoint", "--hypotheses", tmp_path / "no-dir" / "h.txt")
    assert r.code == 2 and "'--hypotheses'" in r.err and "is not an existing folder" in r.err, r.err
