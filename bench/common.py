"""What the benchmark scripts share: arguments, timing, memory, the JSON report, the models.

Every script prints one JSON object per measurement on stdout::

    {"bench": "decode", "what": "captions_per_s", "config": "classic", "value": 123.4,
     "unit": "captions/s", "device": "cpu", "threads": 2, "search": "beam", "beam": 5, "batch": 64}

and, at the end, a human-readable table of the same figures on stderr. Torch is imported
only after the arguments are parsed, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
IMAGE_RECIPE = ROOT / "recipes" / "image.yaml"

# Show, Attend and Tell (Xu et al. 2015) sizes over a 14 x 14 grid of 2048-d ResNet features
# (the paper's VGG features had 512 dims).
CLASSIC = dict(vocab_size=10000, ctx_dim=2048, cell="lstm", attention="mlp",
               emb=512, hidden=512, att=512, out=512, dropout=0.0)
CLASSIC_POSITIONS = 196  # 14 x 14 cells
QUICK_SHRINK = 16  # --quick divides the classic sizes (not the 196 positions) by this


# ---------------------------------------------------------------- arguments and set-up

def parser(doc: str, checkpoint: bool = True, compile: bool = True) -> argparse.ArgumentParser:
    """The options every script takes; ``doc`` is the script's module docstring."""
    summary, _, details = doc.strip().partition("\n")
    p = argparse.ArgumentParser(description=summary, epilog=details.strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few repeats: checks that the script works, measures nothing useful")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch intra-op threads (default: all cores, os.cpu_count())")
    p.add_argument("--repeats", type=int, default=0, metavar="N",
                   help="timed repeats per figure, the median is reported (default: 5, 2 with --quick)")
    if checkpoint:
        p.add_argument("--checkpoint", metavar="DIR",
                       help="a trained checkpoint or run folder: the 'default' configuration uses its "
                            "model and reader instead of the image recipe with random weights")
    if compile:
        p.add_argument("--compile", action="store_true",
                       help="score additive attention with the fused, torch.compile'd loop "
                            "(Decoder.fuse_attention; search.compile in a recipe); compiling happens "
                            "in the untimed warm-up")
    return p


def setup(args: argparse.Namespace):
    """Threads, seeds and the device; returns the torch.device. Call after parsing."""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    args.threads = torch.get_num_threads()
    args.repeats = args.repeats or (2 if args.quick else 5)
    random.seed(0)
    torch.manual_seed(0)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    print(f"torch {torch.__version__}, {name}, {args.threads} threads, "
          f"{args.repeats} repeats{' (quick)' if args.quick else ''}", file=sys.stderr)
    return device


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


# ---------------------------------------------------------------- timing and memory

def measure(fn: Callable[[], object], device, repeats: int, warmup: int = 1) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` timed calls, after ``warmup`` untimed
    ones; on CUDA the device is synchronised around each call."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def reset_peak_memory(device) -> None:
    """Start a new CUDA high-water mark (the process RSS high-water mark cannot be reset)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def report_peak_memory(report: "Report", config: str, device, **params) -> None:
    """Peak resident memory of the process so far, and on CUDA the tensors' peak since the reset."""
    import torch

    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    report.emit("peak_rss", config, rss_kib / 1024, "MiB", **params)
    if device.type == "cuda":
        report.emit("peak_cuda_allocated", config, torch.cuda.max_memory_allocated(device) / 2**20, "MiB",
                    **params)


# ---------------------------------------------------------------- the report

class Report:
    """Prints each measurement as a JSON line at once; ``summary`` prints them as a table."""

    META = ("bench", "device", "threads", "compile", "note")  # not part of a row's key in the summary

    def __init__(self, bench: str, args: argparse.Namespace):
        self.base = {"bench": bench, "device": args.device, "threads": args.threads,
                     "compile": getattr(args, "compile", False)}
        self.records: list[dict] = []

    def emit(self, what: str, config: str, value: float | None, unit: str | None, **params) -> dict:
        if isinstance(value, float):
            value = float(f"{value:.4g}")
        record = {"bench": self.base["bench"], "what": what, "config": config, "value": value, "unit": unit,
                  **{k: v for k, v in self.base.items() if k != "bench"}, **params}
        self.records.append(record)
        print(json.dumps(record), flush=True)
        return record

    def summary(self) -> None:
        """One row per (config, parameters): every figure measured for it."""
        rows: dict[str, list[str]] = {}
        for r in self.records:
            params = " ".join(f"{k}={v}" for k, v in r.items()
                              if k not in self.META + ("what", "config", "value", "unit"))
            key = f"{r['config']:<10} {params}"
            value = _number(r["value"])
            rows.setdefault(key, []).append(f"{r['what']} {value} {r['unit'] or ''}".rstrip())
        width = max((len(k) for k in rows), default=0)
        b = self.base
        fused = ", fused attention score (--compile)" if b["compile"] else ""
        print(f"\n{b['bench']} on {b['device']}, {b['threads']} threads{fused}:", file=sys.stderr)
        for key, figures in rows.items():
            print(f"  {key:<{width}}  " + " | ".join(figures), file=sys.stderr)
        for note in dict.fromkeys(r["note"] for r in self.records if "note" in r):
            print(f"  note: {note}", file=sys.stderr)


def _number(v: float | None) -> str:
    """4 significant digits, thousands separated, never in exponent notation."""
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


# ---------------------------------------------------------------- inputs

def synthetic_captions(n: int, seed: int = 0) -> list[str]:
    """All references of ``n`` synthetic scenes."""
    from mmdesc.corpora.synth import captions, sample_scene

    rng = random.Random(seed)
    return [c for _ in range(n) for c in captions(sample_scene(rng, 64))]


def synthetic_sources(modality: str, n: int, folder: Path) -> list:
    """``n`` inputs that ``Reader.load`` of ``modality`` accepts, made by the modality's own
    ``bench_inputs`` (files written into ``folder``, or lines of text)."""
    from mmdesc.modalities import MODALITIES

    return MODALITIES[modality].bench_inputs(Path(folder), n)


def recipe_for(modality: str) -> Path | None:
    """The recipe in recipes/ (not the tiny twins) named after ``modality`` (``image.yaml``), else
    the first whose ``modality:`` is ``modality``."""
    import yaml

    named = ROOT / "recipes" / f"{modality}.yaml"
    for path in [named] * named.is_file() + sorted((ROOT / "recipes").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and doc.get("modality") == modality:
            return path
    return None


# ---------------------------------------------------------------- models

def default_model(checkpoint: str | None, device, compile: bool = False):
    """The 'default' configuration as a :class:`mmdesc.build.Trained`: the checkpoint's model,
    or the image recipe's model with random weights and a tokenizer trained on synthetic captions.
    ``compile``: with the fused attention score."""
    from mmdesc import build
    from mmdesc.config import load_recipe
    from mmdesc.tokenize import Tokenizer

    if checkpoint:
        trained = build.load_trained(checkpoint, device=str(device))
    else:
        recipe = load_recipe(IMAGE_RECIPE)
        reader = build.build_reader(recipe)
        tokenizer = Tokenizer.train(synthetic_captions(200), kind=recipe.tokenizer.kind, vocab_size=100)
        model = build.build_model(recipe, reader, tokenizer).to(device).eval()
        trained = build.Trained(model, reader, tokenizer, recipe, {}, IMAGE_RECIPE)
    trained.model.decoder.fuse_attention(compile)
    return trained


def default_contexts(trained, batch: int, device, distinct: int = 16):
    """A ContextSet of ``batch`` inputs: ``min(batch, distinct)`` synthetic inputs of the model's
    modality, read and encoded once (no gradient), repeated to fill the batch."""
    import torch

    from mmdesc.data import to_device

    n = min(batch, distinct)
    with tempfile.TemporaryDirectory() as tmp:
        items = [trained.reader.load(s) for s in synthetic_sources(trained.modality, n, Path(tmp))]
    trained.model.eval()
    with torch.no_grad():
        ctx = trained.model.encode(to_device(trained.reader.collate(items), device))
    return ctx.select(torch.arange(batch, device=device) % n)


def classic_decoder(quick: bool, device, compile: bool = False):
    """The Show-Attend-Tell-sized decoder with random weights (sizes / 16 with ``quick``);
    ``compile``: with the fused attention score."""
    from mmdesc.decoder import Decoder

    return Decoder(**classic_sizes(quick)).to(device).eval().fuse_attention(compile)


def classic_sizes(quick: bool) -> dict:
    """The classic decoder's constructor arguments, shrunk by QUICK_SHRINK with ``quick``."""
    if not quick:
        return dict(CLASSIC)
    return {k: v // QUICK_SHRINK if isinstance(v, int) else v for k, v in CLASSIC.items()}


def random_contexts(batch: int, positions: int, dim: int, device):
    """A ContextSet of random vectors (B, N, D), every position real, no layouts."""
    import torch

    from mmdesc.contexts import ContextSet

    vectors = torch.randn(batch, positions, dim, device=device)
    return ContextSet(vectors, ContextSet.full_mask(batch, positions, device), [None] * batch)
