"""Training survives crashes: SIGKILL + resume is exact, SIGTERM checkpoints, NaN steps are skipped."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import RECIPES, mmdesc, needs_cxx
from mmdesc import checkpoint
from mmdesc.config import load_recipe
from mmdesc.errors import DataError, MmdescError

STEPS = 10


def train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmdesc", "train", str(RECIPES / "tiny" / "image.yaml"), f"data.root={data}",
            f"out={out}", f"train.max_steps={STEPS}", "train.save_every=2", "train.valid_every=5",
            "train.keep_last=3", *extra]


def final_weights(out: Path) -> dict:
    return load_file(str(out / f"ckpt-{STEPS:07d}" / "model.safetensors"))


KILL_AFTER = 4  # the checkpoint after which the run is killed: always mid-run, always resumed from


def test_sigkill_then_resume_ends_with_identical_weights(tiny_data, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(train_cmd(tiny_data, straight), check=True, capture_output=True)
    proc = subprocess.Popen(train_cmd(tiny_data, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / f"ckpt-{KILL_AFTER:07d}").exists():  # watch for the chosen checkpoint, then kill
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the chosen checkpoint"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = checkpoint.list_checkpoints(killed)
    assert at_kill and at_kill[-1].name < f"ckpt-{STEPS:07d}"  # killed mid-run: there is something to resume
    resumed = subprocess.run(train_cmd(tiny_data, killed), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {at_kill[-1]}" in resumed.stderr
    a, b = final_weights(straight), final_weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    best_a = checkpoint.read_meta(straight / "best")["best"]
    assert best_a == checkpoint.read_meta(killed / "best")["best"]
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (straight / "metrics.jsonl").read_text().splitlines()]


def test_sigterm_writes_a_loadable_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = train_cmd(tiny_data, out, "train.max_steps=100000", "train.save_every=100000",
                    "train.valid_every=100000", "train.log_every=1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.05)
    while time.monotonic() < deadline and not (out / "metrics.jsonl").read_text():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint written to" in err and "Traceback" not in err
    from mmdesc.build import load_trained

    trained = load_trained(out)
    assert trained.meta["step"] >= 1


def test_non_finite_loss_steps_are_skipped_then_training_stops(tiny_data, tmp_path):
    from mmdesc.train import MAX_BAD_STEPS, Trainer

    r = load_recipe(RECIPES / "tiny" / "image.yaml", [f"data.root={tiny_data}", f"out={tmp_path}"])
    t = Trainer(r, say=lambda m: None, resume=False)
    with torch.no_grad():
        t.model.decoder.proj.bias.fill_(float("nan"))
    before = {k: v.detach().clone() for k, v in t.model.named_parameters()}
    for i in range(MAX_BAD_STEPS - 1):
        t.step(t.batch([0, 1, 2]))
    assert t.progress.bad_steps == MAX_BAD_STEPS - 1
    for k, v in t.model.named_parameters():
        assert torch.equal(v, before[k]) or torch.isnan(v).all(), k  # no optimizer step was taken
    with pytest.raises(MmdescError, match="diverged"):
        t.step(t.batch([0, 1, 2]))


@needs_cxx
def test_train_compile_trains_through_the_fused_score(tiny_data, tmp_path, monkeypatch):
    from mmdesc.decoder import attention
    from mmdesc.train import Trainer

    calls, compiled = [], attention.fused_score
    monkeypatch.setattr(attention, "fused_score", lambda *a: calls.append(1) or compiled(*a))
    plain = load_recipe(RECIPES / "tiny" / "image.yaml", [f"data.root={tiny_data}", f"out={tmp_path / 'a'}"])
    assert not Trainer(plain, say=lambda m: None, resume=False).model.decoder.att.fused
    r = load_recipe(RECIPES / "tiny" / "image.yaml",
                    [f"data.root={tiny_data}", f"out={tmp_path / 'b'}", "train.compile=true"])
    t = Trainer(r, say=lambda m: None, resume=False)
    before = t.model.decoder.att.query.weight.detach().clone()
    t.step(t.batch([0, 1, 2]))
    assert calls and t.progress.bad_steps == 0
    assert not torch.equal(t.model.decoder.att.query.weight, before)  # gradients flowed through it


def test_unreadable_training_files_stop_training_unless_skip_bad(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "images" / "train_000003.png").write_bytes(b"not an image")
    (data / "images" / "train_000007.png").unlink()
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={data}", f"out={tmp_path / 'a'}")
    assert r.code == 2 and "2 of 48 train inputs cannot be read" in r.err
    assert "train_000003.png" in r.err and "train_000007.png" in r.err and "skip_bad" in r.err
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={data}", f"out={tmp_path / 'b'}",
               "--skip-bad", "train.max_steps=2", "train.valid_every=2")
    assert r.code == 0, r.err
    assert "skipping 2 unreadable train inputs" in r.err


def test_best_checkpoint_follows_the_metric_direction(tiny_data, tmp_path):
    """A lower-is-better score keeps the lowest validation (not the first, not the highest)."""
    import json

    metric, out = "wer", tmp_path / "wer"
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={out}",
               f"train.metric={metric}", "train.max_steps=30", "train.valid_every=3", "train.save_every=30")
    assert r.code == 0, r.err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    valid = [(rec["step"], rec["valid"][metric]) for rec in records if "valid" in rec]
    assert valid[0][1] > min(v for _, v in valid), "WER never fell below the first: the test would prove nothing"
    best_value = min(v for _, v in valid)
    first_best = next(step for step, v in valid if v == best_value)
    meta = checkpoint.read_meta(out / "best")
    assert meta["step"] == first_best and meta["best"] == pytest.approx(best_value)


def test_sigterm_to_the_whole_process_group_still_checkpoints(tiny_data, tmp_path):
    """`kill` of the group reaches the DataLoader workers too: they leave it to the trainer,
    which writes its checkpoint, instead of dying first and failing the step in progress."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mmdesc", "train", str(RECIPES / "tiny" / "image.yaml"),
                             f"data.root={tiny_data}", f"out={out}", "train.max_steps=100000", "train.log_every=1",
                             "train.valid_every=100000", "train.save_every=100000", "train.workers=2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    log = out / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None and not (log.exists() and log.read_text().strip()):
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before the kill"
    os.killpg(proc.pid, signal.SIGTERM)  # a step has been logged: the workers are running
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "checkpoint written" in err
    assert checkpoint.list_checkpoints(out)


def test_time_annealing_ends_a_time_limited_run_at_the_floor_rate(tiny_data, tmp_path):
    """train.anneal=time: the cosine decays over the time limit, so a run the clock stops long
    before max_steps still ends at the schedule's lowest rate, having decayed all the way."""
    out = tmp_path / "timed"
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={out}",
               "train.anneal=time", "train.max_minutes=0.1", "train.max_steps=1000000", "train.warmup=0",
               "train.lr=0.004", "train.log_every=1", "train.valid_every=1000000", "train.save_every=1000000")
    assert r.code == 0, r.err
    lrs = [rec["lr"] for rec in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "lr" in rec]
    assert len(lrs) > 3, f"only {len(lrs)} steps in 6 s: nothing to see decay"
    assert lrs[-1] == pytest.approx(0.004 * 0.05), "the last step is not at the floor rate"
    assert lrs[0] > 0.004 * 0.5, "the rate began low: the decay was not over the time limit"
    assert all(a >= b for a, b in zip(lrs, lrs[1:])), "the rate went up while the clock went on"


def test_time_annealing_needs_a_time_limit(tiny_data, tmp_path):
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={tmp_path / 'x'}",
               "train.anneal=time")
    assert r.code == 2 and "anneal: time needs a time limit" in r.err, r.err


def test_lr_lambda_decays_over_whichever_budget_runs_out_first():
    from mmdesc.train import Budget, lr_lambda

    budget = Budget()
    f = lr_lambda("cosine", 0, 100, budget)
    assert f(50) == pytest.approx(0.05 + 0.95 * 0.5)  # half the steps, no time spent
    budget.share = 0.9
    assert f(50) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.9)))  # time is ahead
    budget.share = 2.0
    assert f(10) == pytest.approx(0.05)
    assert lr_lambda("cosine", 0, 100)(50) == pytest.approx(0.05 + 0.95 * 0.5)  # no budget: steps alone
