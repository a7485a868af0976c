"""Checkpoint averaging: one checkpoint whose weights are the mean of several.

Averaging the last few checkpoints of a run (Vaswani et al. 2017; Junczys-Dowmunt et al.
2016) smooths the noise of the last steps for free. Every floating-point tensor (weights
and float buffers such as batch-norm statistics) is the mean of the checkpoints', summed in
float64 and stored in its own dtype; integer tensors (step counters) are copied from the
last checkpoint, whose metadata (recipe, tokenizer, reader state, step) the new one keeps.
The checkpoints must hold tensors of the same names, shapes and dtypes and share the
tokenizer and the reader's state; otherwise one ``CheckpointError`` line. The result is
written atomically (``checkpoint.save``) and has no training state: it is for decoding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from mmdesc import checkpoint
from mmdesc.errors import CheckpointError


def last_checkpoints(run: str | Path, n: int) -> list[Path]:
    """The last ``n`` ``ckpt-*`` folders of a run folder, oldest first."""
    run = Path(run)
    if not run.is_dir():
        raise CheckpointError(f"{run}: no such run folder")
    found = checkpoint.list_checkpoints(run)
    if len(found) < n:
        names = ", ".join(p.name for p in found) or "none"
        raise CheckpointError(f"{run}: --last {n} asks for {n} checkpoints, the run keeps {len(found)} ({names}); "
                              f"train with train.keep_last={n} (or more) to keep them")
    return found[-n:]


def default_out(paths: list[Path], last: int | None) -> Path:
    """``RUN/avg-lastN`` for ``--last N``, else ``avg-N-to-LAST`` beside the last checkpoint."""
    if last is not None:
        return paths[-1].parent / f"avg-last{last}"
    return paths[-1].parent / f"avg-{len(paths)}-to-{paths[-1].name}"


def average(paths: list[str | Path], out: str | Path, say: Callable[[str], None] = print) -> Path:
    """Write the mean of the checkpoints ``paths`` to the checkpoint folder ``out``."""
    from mmdesc.build import load_trained

    out = Path(out)
    if out.name.startswith("ckpt-") or out.name == "best":
        raise CheckpointError(f"{out}: a run's own checkpoint name (ckpt-*, best); name the average otherwise "
                              f"(training would replace or remove it)")
    paths = [checkpoint.resolve(p) for p in paths]
    if any(p.resolve() == out.resolve() for p in paths):
        raise CheckpointError(f"{out}: is one of the checkpoints averaged; write the average elsewhere")
    sums: dict[str, torch.Tensor] = {}
    first = last = None
    for p in paths:
        trained = load_trained(p, "cpu")
        state = trained.model.state_dict()
        if first is None:
            first = (p, trained.tokenizer.to_dict(), trained.reader.state(), _shapes(state))
        else:
            _check_same(p, trained, state, first)
        for name, t in state.items():
            if t.is_floating_point():
                sums[name] = sums[name].add_(t.double()) if name in sums else t.double().clone()
        last = (trained, state)
    trained, state = last
    mean = {name: (sums[name] / len(paths)).to(t.dtype) if name in sums else t for name, t in state.items()}
    trained.model.load_state_dict(mean)
    meta = {k: v for k, v in trained.meta.items() if k not in ("format", "mmdesc", "metric", "best")}
    meta["averaged"] = [str(p) for p in paths]
    checkpoint.save(out, trained.model, meta)
    say(f"wrote {out}: the mean of {len(paths)} checkpoints ({paths[0].name} ... {paths[-1].name})")
    return out


def _shapes(state: dict) -> dict[str, tuple]:
    return {name: (t.dtype, tuple(t.shape)) for name, t in state.items()}


def _check_same(p: Path, trained, state: dict, first: tuple) -> None:
    path0, tokenizer0, reader0, shapes0 = first
    if trained.tokenizer.to_dict() != tokenizer0:
        raise CheckpointError(f"{p}: its tokenizer differs from {path0}'s; only checkpoints with one tokenizer "
                              f"can be averaged")
    shapes = _shapes(state)
    if shapes != shapes0:
        diff = sorted(set(shapes) ^ set(shapes0)) or sorted(n for n in shapes if shapes[n] != shapes0[n])
        shown = ", ".join(diff[:3]) + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")
        raise CheckpointError(f"{p}: its weights differ in shape from {path0}'s ({shown}); only checkpoints "
                              f"of one model can be averaged")
    if trained.reader.state() != reader0:
        raise CheckpointError(f"{p}: it reads inputs differently from {path0} (the reader's state); only "
                              f"checkpoints of one run can be averaged")
