"""Training with several processes (torchrun, gloo on CPU), mixed precision and accumulation.

The two-process runs need a model whose step does not depend on how its batch is split:
dropout off (each process draws its own masks) and the image backbone frozen (its BatchNorm
in training mode normalizes over each process's share; SyncBatchNorm does the whole batch,
on CUDA only)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import RECIPES, ROOT, mmdesc
from mmdesc import checkpoint
from mmdesc.config import load_recipe
from mmdesc.distributed import DIE_AT_STEP

RECIPE = RECIPES / "tiny" / "image.yaml"
STEPS = 4
SPLIT_FREE = ["decoder.dropout=0", "encoder.finetune=none"]


def settings(data: Path, out: Path, *extra: str) -> list[str]:
    return [str(RECIPE), f"data.root={data}", f"out={out}", f"train.max_steps={STEPS}", "train.valid_every=2",
            "train.save_every=1", "train.keep_last=10", "train.log_every=1", "train.valid_size=3", *SPLIT_FREE,
            *extra]


def env(**extra: str) -> dict:
    out = {k: v for k, v in os.environ.items() if k != DIE_AT_STEP}
    return {**out, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def torchrun(data: Path, out: Path, **extra_env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "mmdesc", "train", *settings(data, out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(**extra_env), timeout=180)


def weights(out: Path, step: int) -> dict:
    return load_file(str(out / f"ckpt-{step:07d}" / checkpoint.MODEL))


@pytest.fixture(scope="module")
def two_process_run(tiny_data, tmp_path_factory) -> Path:
    """``mmdesc train --nproc 2``, checkpointed after every step."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    cmd = [sys.executable, "-m", "mmdesc", "train", *settings(tiny_data, out), "--nproc", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=180)
    assert done.returncode == 0, done.stderr
    assert "2 processes" in done.stderr and "best bleu" in done.stdout
    return out


def test_two_processes_write_one_run_folder_with_loadable_checkpoints(two_process_run):
    from mmdesc.build import load_trained

    out = two_process_run
    assert sorted(p.name for p in out.iterdir()) == [".lock", "best", *(f"ckpt-{s:07d}" for s in range(1, 5)),
                                                     "metrics.jsonl"]
    steps = [line.split(",")[0] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == STEPS + 2  # one record per step and per validation: written by one process
    trained = load_trained(out / f"ckpt-{STEPS:07d}")
    assert trained.meta["step"] == STEPS
    _, info = checkpoint.load_train_state(out / f"ckpt-{STEPS:07d}")
    assert info["processes"] == 2 and "rank1" in info["rng"]  # each process's random state, for resuming


def test_two_processes_take_the_step_one_process_takes_with_the_whole_batch(two_process_run, tiny_data, tmp_path):
    one = tmp_path / "one"
    r = mmdesc("train", *settings(tiny_data, one, "train.max_steps=1"))
    assert r.code == 0, r.err
    a, b = weights(one, 1), weights(two_process_run, 1)
    step = max((weights(two_process_run, 2)[k] - b[k]).abs().max().item() for k in b)
    assert step > 1e-4  # a step moves the weights far more than the tolerance below
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_a_dead_process_stops_the_other_with_a_clear_error_then_the_run_resumes(two_process_run, tiny_data, tmp_path):
    out = tmp_path / "killed"
    died = torchrun(tiny_data, out, **{DIE_AT_STEP: "1:3"})  # process 1 ends abruptly before step 3
    assert died.returncode != 0
    assert "error: process 0 of 2: lost contact with the other processes of the run" in died.stderr
    assert "run the same command again to resume" in died.stderr
    last = checkpoint.list_checkpoints(out)[-1]
    assert last.name == "ckpt-0000002"
    resumed = torchrun(tiny_data, out)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {last} (step 2)" in resumed.stderr
    a, b = weights(out, STEPS), weights(two_process_run, STEPS)
    for k in a:
        assert torch.equal(a[k], b[k]), k  # resumed exactly: as the run that was never stopped


def test_the_distributed_sampler_shares_every_batch_and_keeps_the_buckets():
    from mmdesc.data import BucketSampler, bucket_batches

    lengths = [(i * 7919) % 53 for i in range(197)]  # 12 batches of 16 and one of 5
    whole = BucketSampler(lengths, 16, seed=3, epoch=2)
    assert whole.batches == bucket_batches(lengths, 16, seed=3, epoch=2)
    shares = [BucketSampler(lengths, 16, 3, 2, rank=r, world=3, accumulate=2) for r in range(3)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == 2 * len(shares[0].steps)
    for k, step in enumerate(shares[0].steps):
        parts = [s.batches[2 * k + m] for s in shares for m in range(2)]
        assert sorted(i for part in parts for i in part) == sorted(step) and all(parts)
    assert [len(b) for b in whole.batches if len(b) < 6]  # a batch too small for 6 shards exists ...
    assert all(len(b) >= 6 for b in shares[0].steps)  # ... and is left out on every process alike


def test_accumulated_micro_batches_take_the_step_of_the_whole_batch(tiny_data, tmp_path):
    import copy

    from mmdesc.train import Trainer

    r = load_recipe(RECIPE, [f"data.root={tiny_data}", f"out={tmp_path}", *SPLIT_FREE, "train.accumulate=2"])
    t = Trainer(r, say=lambda m: None, resume=False)
    start = copy.deepcopy((t.model.state_dict(), t.opt.state_dict(), t.sched.state_dict()))
    pairs = list(range(0, 40, 3))
    loss = t.step(t.batch(pairs))["loss"]
    whole = {k: v.detach().clone() for k, v in t.model.named_parameters()}
    t.model.load_state_dict(start[0])
    t.opt.load_state_dict(start[1])
    t.sched.load_state_dict(start[2])
    assert t.step(t.batch(pairs[::2]), t.batch(pairs[1::2]))["loss"] == pytest.approx(loss, rel=1e-5)
    for k, v in t.model.named_parameters():
        assert not torch.equal(v, start[0][k]) or not v.requires_grad, k  # the step moved it ...
        torch.testing.assert_close(v, whole[k], rtol=0, atol=1e-6, msg=k)  # ... as the whole batch did


@pytest.mark.skipif(not __import__("mmdesc.devices", fromlist=["x"]).cpu_has_bf16(),
                    reason="this CPU has no bfloat16 instructions")
def test_bf16_autocast_trains_on_cpu(tiny_data, tmp_path):
    out = tmp_path / "bf16"
    r = mmdesc("train", RECIPE, f"data.root={tiny_data}", f"out={out}", "train.precision=bf16",
               "train.max_steps=3", "train.valid_every=3", "train.valid_size=2", "train.log_every=1",
               "train.device=cpu")
    assert r.code == 0, r.err
    assert "device cpu, bf16" in r.err
    losses = [line for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 3 and "NaN" not in "".join(losses)


def test_auto_precision_is_bf16_where_the_device_has_it(tiny_data, tmp_path, monkeypatch):
    from mmdesc import devices

    r = mmdesc("train", RECIPE, f"data.root={tiny_data}", f"out={tmp_path / 'a'}",
               "train.precision=auto", "train.max_steps=2", "train.valid_every=2", "train.valid_size=2",
               "train.device=cpu")
    assert r.code == 0, r.err
    assert ("device cpu, bf16" in r.err) == devices.cpu_has_bf16()
    assert devices.training_precision("auto", "cpu") == ("bf16" if devices.cpu_has_bf16() else "fp32")
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)  # as on a CPU without AVX-512 BF16
    assert devices.training_precision("auto", "cpu") == "fp32"
    assert devices.precision_problem("auto", "cpu") is None  # never refused: it falls back
    assert [devices.training_precision(p, "cpu") for p in ("fp32", "bf16")] == ["fp32", "bf16"]


def test_fp16_on_cpu_is_refused_in_one_line(tiny_data, tmp_path):
    r = mmdesc("train", RECIPE, f"data.root={tiny_data}", f"out={tmp_path / 'x'}", "train.precision=fp16",
               "train.device=cpu")
    assert r.code == 2 and "train.precision: fp16 trains on a CUDA GPU only" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "x").exists()


def test_recipes_and_checkpoints_that_say_amp(tmp_path):
    from mmdesc.config import recipe_from_dict, recipe_to_dict

    old = recipe_to_dict(load_recipe(RECIPE))
    del old["train"]["precision"]
    old["train"]["amp"] = True  # a checkpoint saved before train.precision
    assert recipe_from_dict(old).train.precision == "bf16"
    r = mmdesc("train", RECIPE, "train.amp=true", f"out={tmp_path}")
    assert r.code == 2 and "train.amp: replaced by train.precision" in r.err


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_fp16_with_a_grad_scaler_and_bf16_train_on_the_gpu(tiny_data, tmp_path):
    for precision in ("fp16", "bf16"):
        out = tmp_path / precision
        r = mmdesc("train", RECIPE, f"data.root={tiny_data}", f"out={out}", f"train.precision={precision}",
                   "train.max_steps=4", "train.valid_every=4", "train.log_every=1", "train.device=cuda")
        assert r.code == 0, r.err
        assert f"device cuda, {precision}" in r.err
        _, info = checkpoint.load_train_state(out / "ckpt-0000004")
        assert ("scaler" in info) == (precision == "fp16")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (NCCL)")
def test_two_processes_on_two_gpus(tiny_data, tmp_path):
    out = tmp_path / "nccl"
    cmd = [sys.executable, "-m", "mmdesc", "train", *settings(tiny_data, out), "--nproc", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "device cuda:0, 2 processes" in done.stderr
