"""Training over cached features against training over the media, for a frozen encoder.

The recipe (default recipes/image-pretrained.yaml: EfficientNet-Lite0, frozen, at stride 16 on
128 px) trains on a synthetic corpus of --images scenes twice, in this process, with mmdesc's
own Trainer: once with ``train.cache_features=true`` (each step reads the backbone's features
from the cache and trains the encoder's head and the decoder) and once without (each step
decodes the images, in ``train.workers`` processes, and runs the frozen backbone forward).
Both time --steps optimisation steps after one untimed warm-up step (the step that starts
the DataLoader); validation is not timed.

  s_per_step      median wall seconds of one step, data loading included
  steps_per_s     its inverse
  s_per_epoch     s_per_step x the batches of one epoch over the corpus
  cache_build_s   seconds to compute and write the cache once (the cached run's set-up)
  speedup         s_per_epoch of the media run / that of the cached run

``--set KEY=VALUE`` changes the recipe of both runs, e.g. the classic EfficientNet input
(``--set input.size=224 --set encoder.stride=32 --set encoder.grid=7``: 1280 channels, 7 x 7).
Data and runs live under --work (a temporary folder by default).
"""
from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Report, parser, setup


def timed_steps(trainer, steps: int) -> tuple[float, int]:
    """Median seconds per step over ``steps`` steps of epoch 0 (after one warm-up step, data
    loading included), and the epoch's number of batches."""
    n, batches = trainer._epoch(0, 0)
    it = iter(batches)
    micro, whole = next(it)
    trainer.step(*micro, whole=whole)  # warm-up: DataLoader workers start, first allocations
    times = []
    start = time.perf_counter()
    for _ in range(steps):
        micro, whole = next(it)
        trainer.step(*micro, whole=whole)
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return statistics.median(times), n


def main() -> None:
    p = parser(__doc__, checkpoint=False, compile=False)
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "image-pretrained.yaml"),
                   help="a recipe with a frozen encoder (default recipes/image-pretrained.yaml; "
                        "--quick: its tiny twin)")
    p.add_argument("--images", type=int, default=0, help="training scenes (default 1000, 48 with --quick)")
    p.add_argument("--steps", type=int, default=0, help="timed steps per configuration (default 20, 3 with --quick)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a recipe override for both runs (repeatable), e.g. --set input.size=224")
    p.add_argument("--work", default="", help="folder for the corpus and the runs (default: a temporary one)")
    args = p.parse_args()
    device = setup(args)
    if args.quick and args.recipe == p.get_default("recipe"):
        args.recipe = str(ROOT / "recipes" / "tiny" / "image-pretrained.yaml")
    args.images = args.images or (48 if args.quick else 1000)
    args.steps = args.steps or (3 if args.quick else 20)
    report = Report("cache", args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mmdesc-bench-cache-"))
    try:
        run(report, args, device, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report.summary()


def run(report: Report, args, device, work: Path) -> None:
    from mmdesc import build
    from mmdesc.config import load_recipe
    from mmdesc.train import Trainer

    root = work / f"corpus{args.images}"
    base = load_recipe(args.recipe, args.set)
    if not (root / f".complete-{base.modality}").exists():
        build.write_part(build.modality(base), root, args.images, 4, 0, 1)
    per_epoch = {}
    for config, cached in (("cached", True), ("media", False)):
        out = work / f"run-{config}"
        shutil.rmtree(out, ignore_errors=True)  # the cache too: its build is measured
        overrides = [f"data.root={root}", "data.synth=null", "data.test=null", f"out={out}",
                     f"train.cache_features={str(cached).lower()}", f"train.threads={args.threads}",
                     f"train.device={device.type}", "train.valid_size=4", *args.set]
        if not cached:
            overrides.append(f"train.workers={max(1, base.train.workers)}")  # decoding ahead of the steps
        recipe = load_recipe(args.recipe, overrides)
        start = time.perf_counter()
        trainer = Trainer(recipe, say=lambda m: print(m, file=sys.stderr), resume=False)
        if cached:
            report.emit("cache_build_s", config, time.perf_counter() - start, "s", images=args.images)
        step, n = timed_steps(trainer, args.steps)
        per_epoch[config] = step * n
        params = dict(images=args.images, batch=recipe.train.batch_size, workers=recipe.train.workers)
        report.emit("s_per_step", config, step, "s", **params)
        report.emit("steps_per_s", config, 1 / step, "steps/s", **params)
        report.emit("s_per_epoch", config, step * n, "s", batches=n, **params)
    settings = " ".join([Path(args.recipe).name, *args.set])
    report.emit("speedup", "cached", per_epoch["media"] / per_epoch["cached"], "x", images=args.images,
                note=f"{settings}: s_per_epoch over the media / over cached features")


if __name__ == "__main__":
    sys.exit(main())
