"""The run folder through `mmdesc train`: one trainer at a time, a finished run stays finished,
--fresh, changed settings on resume, leftovers of an interrupted checkpoint write, and a
SIGKILL between the two renames that replace best/."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import RECIPES, ROOT, mmdesc
from mmdesc import checkpoint
from mmdesc.runfolder import RunFolder
from mmdesc.train import lr_lambda

TINY = RECIPES / "tiny" / "image.yaml"


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def steps_logged(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def snapshot(run: Path) -> dict:
    """Every file of the run folder (but the lock) -> its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def wait_for(cond, proc, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the trainer ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def test_a_second_trainer_on_the_same_folder_refuses_naming_the_first(tiny_data, tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "mmdesc", "train", str(TINY), f"data.root={tiny_data}", f"out={run}",
         "train.max_steps=100000", "train.log_every=1", "train.valid_every=100000", "train.save_every=100000"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = run / "metrics.jsonl"
        wait_for(lambda: log.exists() and log.read_text().count("\n") >= 1, first, "a training step")
        started = time.monotonic()
        second = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={run}", "train.log_every=1")
        assert time.monotonic() - started < 5  # refused before any data or model work
        assert second.code == 75, second.err
        lines = second.err.strip().splitlines()
        assert len(lines) == 1 and f"PID {first.pid}" in lines[0] and str(run) in lines[0], second.err
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err
    steps = steps_logged(run)
    assert steps and len(steps) == len(set(steps)) and steps == sorted(steps), steps  # one writer only
    with RunFolder(run, say=lambda m: None):  # the lock went with the process that held it
        pass


def test_a_finished_run_stays_finished_and_leftovers_are_cleaned(tiny_image_run, tiny_data, copy_run):
    run = copy_run(tiny_image_run)
    # what a checkpoint write killed at the wrong moment leaves behind
    (run / ".ckpt-0000013.tmp").mkdir()
    (run / ".ckpt-0000013.tmp" / "model.safetensors").write_bytes(b"half")
    (run / ".best.old").mkdir()
    before = snapshot(run)
    r = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={run}")
    assert r.code == 0, r.err
    assert "nothing to do: the run is finished" in r.err and "train.max_steps=12" in r.err
    assert "removed .ckpt-0000013.tmp" in r.err and "removed .best.old" in r.err
    after = snapshot(run)
    assert after == {k: v for k, v in before.items() if not k.startswith((".ckpt", ".best"))}  # weights, log: same bytes
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".lock"]


def test_resuming_applies_new_steps_and_lr_and_refuses_a_new_model(tiny_image_run, tiny_data, copy_run):
    run = copy_run(tiny_image_run)
    r = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={run}", "decoder.hidden=32", "seed=4")
    assert r.code == 2 and "Traceback" not in r.err
    line = [l for l in r.err.splitlines() if l.strip()][-1]
    assert "decoder.hidden 24 -> 32" in line and "seed 3 -> 4" in line and "--fresh" in line, r.err
    assert not (run / "ckpt-0000013").exists()

    r = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={run}", "train.max_steps=13", "train.lr=0.001",
               "train.log_every=1")
    assert r.code == 0, r.err
    assert "resuming with changed settings: train.log_every 4 -> 1, train.lr 0.003 -> 0.001, " \
           "train.max_steps 12 -> 13" in r.err, r.err
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    step13 = [rec for rec in log if rec["step"] == 13 and "lr" in rec]
    assert len(step13) == 1 and abs(step13[0]["lr"] - 0.001 * lr_lambda("cosine", 5, 13)(13)) < 1e-12  # new base rate
    assert (run / "ckpt-0000013").exists()


def test_fresh_starts_a_clean_run_folder(tiny_image_run, tiny_data, copy_run):
    run = copy_run(tiny_image_run)
    (run / "notes.txt").write_text("mine")
    r = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={run}", "--fresh", "train.max_steps=2",
               "train.valid_every=100", "train.log_every=1")
    assert r.code == 0, r.err
    assert "--fresh: removed ckpt-0000006/, ckpt-0000012/, best/, metrics.jsonl" in r.err, r.err
    assert "resuming" not in r.err
    assert sorted(p.name for p in run.iterdir()) == [".lock", "best", "ckpt-0000002", "metrics.jsonl", "notes.txt"]
    assert steps_logged(run) == [1, 2]  # nothing appended to the old log
    assert json.loads((run / "best" / "meta.json").read_text())["step"] == 2  # no old best/


def test_best_survives_a_sigkill_between_its_two_renames(tiny_image_run, tiny_data, copy_run):
    run = copy_run(tiny_image_run)
    script = ("import sys; from pathlib import Path; from mmdesc import build, checkpoint\n"
              "run = Path(sys.argv[1]); t = build.load_trained(run / 'best')\n"
              "checkpoint.save(run / 'best', t.model, {k: v for k, v in t.meta.items() if k not in ('format', 'mmdesc')})\n")
    killed = subprocess.run([sys.executable, "-c", script, str(run)], capture_output=True, text=True, timeout=120,
                            env={**env(), "MMDESC_KILL_BETWEEN_RENAMES": "best"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # it died inside the window, every time
    assert not (run / "best").exists() and (run / ".best.old" / "model.safetensors").exists()
    img = tiny_data / "images" / "test_000000.png"
    r = mmdesc("describe", img, "-c", run / "best")  # best/ is read from the copy the first rename left
    assert r.code == 0 and r.out.startswith(f"{img}\t"), r.err
    assert checkpoint.resolve(run) == run / ".best.old"  # and so is the run folder
    said = []
    with RunFolder(run, say=said.append):  # the next training start puts best/ back
        pass
    assert said == [f"{run}: finished replacing best/ (interrupted between its two renames)",
                    f"{run}: removed .best.old, left by an interrupted checkpoint write"]
    assert (run / "best" / "model.safetensors").exists() and not (run / ".best.old").exists()
