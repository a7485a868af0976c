"""The benchmark scripts run (--quick), print one valid JSON record per line, and count FLOPs right."""
from __future__ import annotations

import functools
import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, needs_cxx

BENCH = ROOT / "bench"
EXPECTED = {  # figures each script must report
    "decode": {"captions_per_s", "ms_per_input", "peak_rss", "speedup_vs_one_at_a_time"},
    "train": {"captions_per_s", "ms_per_step", "peak_rss", "padding_fraction"},
    "encode": {"inputs_per_s", "load_ms", "collate_ms", "encode_ms", "peak_rss"},
    "flops": {"matmul_gflops", "step_flops", "decode_step_gflops", "train_step_gflops", "fraction_of_matmul"},
    "speech": {"audio_seconds_per_s", "rtf", "rtf_one_by_one", "peak_rss"},
    "cache": {"s_per_step", "steps_per_s", "s_per_epoch", "cache_build_s", "speedup"},
}


@functools.cache  # each script runs once per session
def run_quick(script: str, *options: str) -> tuple[list[dict], str]:
    r = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--quick", "--threads", "1", *options],
                       capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()], r.stderr


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_quick_run_prints_json_records(script):
    records, err = run_quick(script)
    assert {r["what"] for r in records} >= EXPECTED[script]
    for r in records:
        assert {"bench", "what", "config", "value", "unit"} <= r.keys()
        assert r["bench"] == script and r["device"] == "cpu" and r["threads"] == 1
        if r["what"] == "skipped":
            assert r["value"] is None and r["reason"]
        else:
            assert isinstance(r["value"], (int, float)) and math.isfinite(r["value"]) and r["value"] >= 0
    assert f"{script} on cpu, 1 threads:" in err  # the human summary


def test_quick_runs_cover_both_configurations_and_modalities():
    decode, _ = run_quick("decode")
    assert {r["config"] for r in decode} == {"default", "classic"}
    assert {(r["search"], r["beam"]) for r in decode if r["what"] == "captions_per_s"} >= {
        ("greedy", 1), ("beam", 1), ("beam", 3)}
    encode, _ = run_quick("encode")
    measured = {r["config"] for r in encode if r["what"] == "inputs_per_s"}
    skipped = {r["config"] for r in encode if r["what"] == "skipped"}
    from mmdesc.modalities import MODALITIES

    assert measured == set(MODALITIES) and not skipped  # every registered modality, by its own inputs


def test_bucketed_batches_pad_less_than_shuffled_ones():
    train, _ = run_quick("train")
    waste = {r["batches"]: r["value"] for r in train if r["what"] == "padding_fraction"}
    assert 0 <= waste["bucketed"] < waste["shuffled"] / 4


@needs_cxx
def test_compile_option_measures_the_fused_score():
    records, err = run_quick("flops", "--compile")
    assert records and all(r["compile"] is True for r in records)
    assert "fused attention score (--compile)" in err
    assert "cannot compile" not in err  # it compiled rather than falling back
    plain, _ = run_quick("flops")
    assert not any(r["compile"] for r in plain)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_help_does_not_import_torch(script):
    code = (f"import runpy, sys; sys.path.insert(0, {str(BENCH)!r}); sys.argv = ['{script}', '--help']\n"
            f"try: runpy.run_path({str(BENCH / (script + '.py'))!r}, run_name='__main__')\n"
            "except SystemExit: pass\n"
            "sys.exit(3 if 'torch' in sys.modules else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr or f"{script}.py --help imported torch"
    assert "--quick" in r.stdout and "--threads" in r.stdout


@pytest.mark.parametrize("gate", [False, True])
def test_step_flops_match_torch_flop_counter(gate, monkeypatch):
    """The analytic per-hypothesis count equals what torch counts for a real Decoder.step."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mmdesc.contexts import ContextSet
    from mmdesc.decoder import Decoder

    monkeypatch.syspath_prepend(str(BENCH))
    from flops import input_macs, step_macs

    sizes = dict(vocab_size=23, ctx_dim=11, cell="lstm", attention="mlp", emb=5, hidden=7, att=3, out=13,
                 dropout=0.0)
    decoder = Decoder(**sizes, gate=gate).eval()
    b, k, n = 2, 3, 17
    ctx = ContextSet(torch.randn(b, n, 11), ContextSet.full_mask(b, n), [None] * b)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as per_input:
            pctx = decoder.prepare(ctx)
            state = decoder.init_state(pctx, k)
        with FlopCounterMode(display=False) as per_step:
            decoder.step(pctx, torch.randint(4, 23, (b, k)), state)
    assert per_step.get_total_flops() == b * k * 2 * sum(step_macs(sizes, n, gate).values())
    assert per_input.get_total_flops() == b * 2 * input_macs(sizes, n)
