"""Safe, atomic checkpoints: tensors in safetensors, everything else in JSON. No pickle.

A checkpoint is a folder::

    model.safetensors        the model's weights
    meta.json                format version, mmdesc version, the resolved recipe, the
                             tokenizer, the reader's state, step and metrics
    train_state.safetensors  optimizer tensors and RNG states (only for resuming)
    train_state.json         optimizer hyper-parameters, scheduler, data position

A run folder holds ``ckpt-0000500/ ...`` (the last K) and ``best/``. Every folder is
written under a temporary name, flushed, then renamed into place, so a crash leaves
either the old checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from mmdesc import __version__
from mmdesc.errors import CheckpointError

FORMAT = 1
MODEL, META, TRAIN, TRAIN_META = "model.safetensors", "meta.json", "train_state.safetensors", "train_state.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def atomic_dir(path: Path, write) -> Path:
    """Call ``write(tmp_dir)``, then put tmp_dir in place of ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def save(path: Path, model: torch.nn.Module, meta: dict, train_state: tuple[dict, dict] | None = None) -> Path:
    """Write a checkpoint folder atomically. ``train_state`` = (tensors, json-able dict)."""
    meta = {"format": FORMAT, "mmdesc": __version__, **meta}

    def write(tmp: Path) -> None:
        save_model(model, str(tmp / MODEL))
        _write_json(tmp / META, meta)
        if train_state is not None:
            tensors, info = train_state
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / TRAIN))
            _write_json(tmp / TRAIN_META, info)

    return atomic_dir(path, write)


def resolve(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its ``best/``, else its latest ``ckpt-*``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not path.is_dir():
        raise CheckpointError(f"{path}: a checkpoint is a folder (with {MODEL} and {META}), not a file")
    if (path / META).exists() or (path / MODEL).exists():
        return path
    if (path / "best" / META).exists():
        return path / "best"
    ckpts = list_checkpoints(path)
    if ckpts:
        return ckpts[-1]
    _refuse_pickles(path)
    raise CheckpointError(f"{path}: not a checkpoint (no {META}) and no checkpoint inside it")


def _refuse_pickles(path: Path) -> None:
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{path}: refusing to load {', '.join(pickles)}: pickle files can run code; "
                              f"mmdesc checkpoints are {MODEL} + {META}")


def read_meta(path: Path) -> dict:
    """The JSON metadata of a checkpoint folder, validated."""
    _refuse_pickles(path)
    for name in (MODEL, META):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: incomplete checkpoint, {name} is missing")
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / META}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format') if isinstance(meta, dict) else '?'} "
                              f"is not supported (this mmdesc reads format {FORMAT})")
    return meta


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load model.safetensors into ``model`` (strict: every weight must match)."""
    try:
        missing, unexpected = load_model(model, str(path / MODEL), strict=False)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path / MODEL}: cannot read weights ({str(e).splitlines()[0]})") from None
    if missing or unexpected:
        raise CheckpointError(f"{path / MODEL}: weights do not match the model "
                              f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")


def load_train_state(path: Path) -> tuple[dict, dict] | None:
    """(tensors, info) saved for resuming, or None if the checkpoint has none."""
    if not (path / TRAIN).exists():
        return None
    try:
        return load_file(str(path / TRAIN)), json.loads((path / TRAIN_META).read_text(encoding="utf-8"))
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read the training state ({e})") from None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's ``ckpt-*`` folders, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir() and (p / META).exists())


def keep_last(run_dir: Path, k: int) -> None:
    for old in list_checkpoints(run_dir)[:-k] if k > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


# --- training state <-> (tensors, JSON) ------------------------------------------------

def pack_optimizer(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unpack_optimizer(opt: torch.optim.Optimizer, tensors: dict, info: dict) -> None:
    state: dict = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for name, v in info["scalars"].items():
        pid, k = name.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def pack_rng() -> tuple[dict, dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    version, inner, gauss = random.getstate()
    return tensors, {"python": [version, list(inner), gauss]}


def unpack_rng(tensors: dict, info: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, inner, gauss = info["python"]
    random.setstate((version, tuple(inner), gauss))
