"""Scale: memory that must not grow with the corpus, the first caption of a large folder,
and the memory of beam search over long inputs.

  rss     peak resident memory of `mmdesc train` (tiny image model, --steps steps) on
          synthetic corpora of --small and --large images: streaming training data keeps
          the two within a few percent (it read every image into memory before).
  first   `mmdesc describe FOLDER` over --images synthetic images: seconds to the first
          caption line, to the last, and peak memory (describe streams in chunks).
  search  peak memory added by beam search (--beam) over --inputs inputs x --positions
          positions forced to --steps output tokens, attention kept (what describe needs)
          and not; ``--tree DIR`` measures the mmdesc in another checkout (a "before").

Each figure runs in a fresh child process, its peak memory taken from the kernel's
accounting of that child (wait4). Data and models are generated under --work.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_child(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; its wall time, peak RSS (MiB), exit code, stdout lines, and the seconds
    until it printed its first stdout line."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    first = None
    lines = 0
    for _ in proc.stdout:
        lines += 1
        if first is None:
            first = time.perf_counter() - start
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": time.perf_counter() - start, "peak_rss_mib": usage.ru_maxrss / 1024,
            "code": proc.returncode, "first_line_s": first, "lines": lines}


def emit(what: str, value, unit: str, **extra) -> None:
    print(json.dumps({"bench": "scale", "what": what, "value": value, "unit": unit, **extra}), flush=True)


def mmdesc(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmdesc", *map(str, args)]


def synth(root: Path, train: int, test: int = 2) -> None:
    if not (root / ".complete-image").exists():
        subprocess.run(mmdesc("data", "synth", root, "--train", train, "--valid", 4, "--test", test,
                              "--modalities", "image"), check=True, capture_output=True)


def bench_rss(args, work: Path) -> None:
    figures = {}
    for n in (args.small, args.large):
        root = work / f"corpus{n}"
        synth(root, n)
        out = work / f"run{n}"
        r = run_child(mmdesc("train", ROOT / "recipes" / "tiny" / "image.yaml", f"data.root={root}", f"out={out}",
                             f"train.max_steps={args.steps}", f"train.valid_every={args.steps}", "train.valid_size=4",
                             f"train.save_every={args.steps}", "data.synth=null", "--fresh"))
        assert r["code"] == 0, f"training on {n} images failed"
        figures[n] = r["peak_rss_mib"]
        emit("train_peak_rss", round(r["peak_rss_mib"], 1), "MiB", images=n, steps=args.steps)
    emit("train_peak_rss_ratio", round(figures[args.large] / figures[args.small], 3), "large/small",
         small=args.small, large=args.large)


def bench_first(args, work: Path) -> None:
    root = work / f"corpus{args.images}"
    synth(root, args.images)
    run = work / "describe-model"
    if not (run / "best").exists():
        subprocess.run(mmdesc("train", ROOT / "recipes" / "tiny" / "image.yaml", f"data.root={root}", f"out={run}",
                              "train.max_steps=2", "train.valid_every=2", "train.valid_size=4", "data.synth=null"),
                       check=True, capture_output=True)
    r = run_child(mmdesc("describe", root / "images", "-c", run, "--beam", args.beam))
    extra = dict(images=r["lines"], beam=args.beam)
    emit("describe_first_caption", round(r["first_line_s"], 2), "s", **extra)
    emit("describe_all", round(r["seconds"], 2), "s", **extra)
    emit("describe_peak_rss", round(r["peak_rss_mib"], 1), "MiB", **extra)


SEARCH = r"""
import json, resource, sys, torch
from mmdesc.contexts import ContextSet
from mmdesc.decoder import Decoder
from mmdesc.search import decode
b, n, steps, beam, attention = map(int, sys.argv[1:6])
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[6]))
dec = Decoder(1000, 256, cell="lstm", emb=64, hidden=64, att=16, out=64, dropout=0.0).eval()  # a small attention: the history, not the score, is measured
with torch.no_grad():
    dec.proj.bias[2] = -1e4  # EOS only when forced: every hypothesis runs its full length
ctx = ContextSet(torch.randn(b, n, 256), torch.ones(b, n, dtype=torch.bool), [None] * b)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kw = {} if attention else {"attention": False}
try:
    decode(dec, ctx, beam=beam, n_best=1, max_lens=steps, **kw)
except TypeError:  # a tree whose search always keeps the attention
    decode(dec, ctx, beam=beam, n_best=1, max_lens=steps)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"search_peak_mib": (after - before) / 1024}))
"""


def bench_search(args, work: Path) -> None:
    env = dict(os.environ)
    tree = Path(args.tree).resolve() if args.tree else ROOT
    env["PYTHONPATH"] = str(tree)
    for attention in (1, 0):
        cmd = [sys.executable, "-c", SEARCH, str(args.inputs), str(args.positions), str(args.steps_out),
               str(args.beam), str(attention), str(args.threads)]
        start = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        value = json.loads(out.stdout.strip().splitlines()[-1])["search_peak_mib"]
        emit("search_peak_memory", round(value, 1), "MiB", tree=str(tree), inputs=args.inputs,
             positions=args.positions, steps=args.steps_out, beam=args.beam, attention=bool(attention),
             seconds=round(time.perf_counter() - start, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="+", choices=("rss", "first", "search"))
    p.add_argument("--work", default=None, help="folder for generated corpora and models (default: a temporary one)")
    p.add_argument("--small", type=int, default=2000)
    p.add_argument("--large", type=int, default=20000)
    p.add_argument("--steps", type=int, default=200, help="training steps for rss")
    p.add_argument("--images", type=int, default=10000, help="images for first")
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--inputs", type=int, default=64)
    p.add_argument("--positions", type=int, default=800)
    p.add_argument("--steps-out", type=int, default=100, help="output tokens for search")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tree", default=None, help="another mmdesc checkout to measure search in")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for what in args.what:
            {"rss": bench_rss, "first": bench_first, "search": bench_search}[what](args, work)


if __name__ == "__main__":
    main()
