"""Safe, atomic checkpoints: tensors in safetensors, everything else in JSON. No pickle.

A checkpoint is a folder::

    model.safetensors        the model's weights
    meta.json                format version, mmdesc version, the resolved recipe, the
                             tokenizer, the reader's state, step and metrics
    train_state.safetensors  optimizer tensors and RNG states (only for resuming)
    train_state.json         optimizer hyper-parameters, scheduler, data position

A run folder holds ``ckpt-0000500/ ...`` (the last K) and ``best/``. Every folder is
written under a temporary name (``.best.tmp``), flushed, then put in place with two
renames: the old folder to ``.best.old``, the new one to ``best``. A crash leaves either
the old checkpoint or the new one, never half of one; a crash *between* the renames
leaves ``best`` missing and ``.best.old`` complete, and everything that reads a
checkpoint falls back to it (``resolve``), until the next training start puts it back
(``recover``).

A checkpoint may come from elsewhere, so reading one trusts nothing: only regular files
are opened (a FIFO or a device named ``meta.json`` is refused, never waited on), sizes
are capped before reading, every metadata field is type-checked, and the tensor shapes
in the safetensors header are compared with the model before a byte of weights is
allocated (``check_weights``).
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import stat
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from mmdesc import __version__
from mmdesc.errors import CheckpointError

FORMAT = 1
MODEL, META, TRAIN, TRAIN_META = "model.safetensors", "meta.json", "train_state.safetensors", "train_state.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
MAX_META_BYTES = 64 << 20  # meta.json / train_state.json (a word vocabulary of 10^6 words fits)
MAX_HEADER_BYTES = 100 << 20  # a safetensors header (the format's own limit)
MAX_TENSORS = 100_000
# for tests only: a process with this set to a folder name kills itself (SIGKILL) between the two
# renames that replace that folder, so the window where only .NAME.old exists can be tested
KILL_BETWEEN_RENAMES = "MMDESC_KILL_BETWEEN_RENAMES"


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


def tmp_dir(path: Path) -> Path:
    """Where ``atomic_dir`` writes the new ``path`` before it is put in place."""
    return path.parent / f".{path.name}.tmp"


def old_dir(path: Path) -> Path:
    """Where ``atomic_dir`` keeps the previous ``path`` while the new one is put in place."""
    return path.parent / f".{path.name}.old"


def atomic_dir(path: Path, write) -> Path:
    """Call ``write(tmp_dir)``, then put tmp_dir in place of ``path``.

    The previous folder is renamed to ``old_dir(path)`` first and removed last, so at every
    moment either ``path`` or ``old_dir(path)`` holds a complete checkpoint. One writer per
    folder at a time (a training holds its run folder's lock).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = tmp_dir(path), old_dir(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)  # a leftover: path is complete, so old is stale
        os.replace(path, old)
        if os.environ.get(KILL_BETWEEN_RENAMES) == path.name:
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def recover(folder: Path) -> list[str]:
    """Finish what an interrupted ``atomic_dir`` in ``folder`` left. A folder caught between its
    two renames (``.NAME.old`` but no ``NAME``) gets the new copy, which was complete before the
    first rename (or the old one back, if the new one is gone); other temporary folders are
    removed. Only while no one writes (a training calls it once it holds the run folder's
    lock). Returns what it did, in words."""
    folder, done = Path(folder), []
    for old in sorted(folder.glob(".*.old")) + sorted(folder.glob(".*.old-*")):
        target = folder / old.name[1:].rsplit(".old", 1)[0]
        if not target.exists() and _complete(tmp_dir(target)):
            os.replace(tmp_dir(target), target)
            done.append(f"finished replacing {target.name}/ (interrupted between its two renames)")
        elif not target.exists() and _complete(old):
            os.replace(old, target)
            done.append(f"restored {target.name}/ from {old.name} (its replacement was interrupted)")
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old.name}, left by an interrupted checkpoint write")
    for tmp in sorted(folder.glob(".*.tmp")) + sorted(folder.glob(".*.tmp-*")):
        shutil.rmtree(tmp, ignore_errors=True)
        done.append(f"removed {tmp.name}, left by an interrupted checkpoint write")
    return done


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
    """A checkpoint folder, or a run folder (its ``best/``, else its latest ``ckpt-*``).

    A checkpoint folder caught between the two renames of ``atomic_dir`` is read from the
    complete copy the first rename left (``.best.old``)."""
    path = Path(path)
    if not path.exists() and _complete(old_dir(path)):
        return old_dir(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not path.is_dir():
        raise CheckpointError(f"{path}: a checkpoint is a folder (with {MODEL} and {META}), not a file")
    if (path / META).exists() or (path / MODEL).exists():
        return path
    for best in (path / "best", old_dir(path / "best")):
        if _complete(best):
            return best
    ckpts = list_checkpoints(path)
    if ckpts:
        return ckpts[-1]
    _refuse_pickles(path)
    raise CheckpointError(f"{path}: not a checkpoint (no {META}) and no checkpoint inside it")


def _complete(path: Path) -> bool:
    return (path / META).is_file() and (path / MODEL).is_file()


def _refuse_pickles(path: Path) -> None:
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{path}: refusing to load {', '.join(pickles)}: pickle files can run code; "
                              f"mmdesc checkpoints are {MODEL} + {META}")


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    """A descriptor of ``path`` opened without blocking, and its stat, if it is a regular file
    (a FIFO or device named as a checkpoint's file is refused at once, never waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open ({e.strerror or e})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CheckpointError(f"{path}: not a regular file ({_kind(st.st_mode)}); refusing to read it")
    return fd, st


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes.

    Opened without blocking and checked before reading, so a FIFO or a device file given
    as a checkpoint's file is refused at once instead of waited on or read forever."""
    fd, st = _open_regular(path)
    try:
        if st.st_size > limit:
            raise CheckpointError(f"{path}: {st.st_size:,} bytes, more than the {limit:,} a checkpoint's "
                                  f"{path.name} may have")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise CheckpointError(f"{path}: more than the {limit:,} bytes a checkpoint's {path.name} may have")
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a plain file"


def _json(path: Path) -> object:
    try:
        return json.loads(read_regular(path, MAX_META_BYTES).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({str(e)[:80]})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: JSON nested too deeply") from None


def read_meta(path: Path) -> dict:
    """The JSON metadata of a checkpoint folder, every field type- and range-checked.

    Fields: ``format`` (int, required), ``mmdesc`` (str), ``recipe``/``tokenizer``/``reader``
    (objects, checked further by whoever builds from them), ``step`` (int >= 0),
    ``metric`` (str), ``best`` (number or null). Other fields are ignored, never used."""
    _refuse_pickles(path)
    for name in (MODEL, META):
        if not (path / name).exists():
            raise CheckpointError(f"{path}: incomplete checkpoint, {name} is missing")
    meta = _json(path / META)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or isinstance(meta.get("format"), bool):
        shown = meta.get("format") if isinstance(meta, dict) else "?"
        shown = shown if isinstance(shown, int) else "?"
        raise CheckpointError(f"{path}: checkpoint format {shown} is not supported "
                              f"(this mmdesc reads format {FORMAT})")
    problems = meta_problems(meta)
    if problems:
        raise CheckpointError(f"{path / META}: " + "; ".join(problems[:3])
                              + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""))
    return meta


def meta_problems(meta: dict) -> list[str]:
    """What is wrong with the fields of a checkpoint's metadata, each as a short phrase."""
    found = []

    def check(key: str, ok, what: str, required: bool = True) -> None:
        if key not in meta:
            if required:
                found.append(f"'{key}' is missing")
        elif not ok(meta[key]):
            found.append(f"'{key}' must be {what}, got {_type(meta[key])}")

    check("mmdesc", lambda v: isinstance(v, str) and len(v) <= 64, "a version string", required=False)
    for key in ("recipe", "tokenizer", "reader"):
        check(key, lambda v: isinstance(v, dict), "an object", required=False)
    check("step", lambda v: type(v) is int and 0 <= v < 2 ** 53, "an integer >= 0", required=False)
    check("metric", lambda v: isinstance(v, str) and len(v) <= 64, "a metric name", required=False)
    check("best", lambda v: v is None or (type(v) in (int, float) and math.isfinite(v)), "a finite number or null",
          required=False)
    return found


def _type(v: object) -> str:
    """What a JSON value is, in words (never the value itself: it may be huge)."""
    if type(v) in (int, float):
        return "a number out of range"
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(v), type(v).__name__)


# safetensors dtype names -> bytes per element
DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
          "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) from a safetensors file's header, checked against the file's size
    (every tensor's bytes inside the file, no overlap): nothing beyond the header is read."""
    fd, st = _open_regular(path)
    try:
        head = os.pread(fd, 8, 0)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (shorter than its header)")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, st.st_size - 8):
            raise CheckpointError(f"{path}: not a safetensors file (a header of {n:,} bytes in a file of "
                                  f"{st.st_size:,})")
        raw = os.pread(fd, n, 8)
    finally:
        os.close(fd)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict) or len(header) > MAX_TENSORS:
        raise CheckpointError(f"{path}: not a safetensors file (a header of {_type(header)})")
    data_size, spans, out = st.st_size - 8 - n, [], {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(info, dict) and info.get("dtype") in DTYPES and isinstance(info.get("shape"), list)
              and len(info["shape"]) <= 8 and all(type(d) is int and 0 <= d < 2 ** 40 for d in info["shape"])
              and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
              and all(type(o) is int and 0 <= o <= data_size for o in info["data_offsets"]))
        if not ok:
            raise CheckpointError(f"{path}: tensor {name[:60]!r} has a malformed header entry")
        begin, end = info["data_offsets"]
        if end - begin != math.prod(info["shape"]) * DTYPES[info["dtype"]]:
            raise CheckpointError(f"{path}: tensor {name[:60]!r}: shape {info['shape']} does not fit its "
                                  f"{end - begin:,} bytes")
        spans.append((begin, end))
        out[name] = (info["dtype"], tuple(info["shape"]))
    spans.sort()
    if any(b < a_end for (_, a_end), (b, _) in zip(spans, spans[1:])):
        raise CheckpointError(f"{path}: tensors overlap in the file")
    return out


_TORCH_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
                 "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def check_weights(path: Path, model: torch.nn.Module) -> None:
    """The weights file of ``path`` holds exactly the tensors of ``model`` (names, shapes, dtypes).

    ``model`` may live on the meta device: this reads only the header, so a checkpoint whose
    recipe describes a model far bigger than its weights file is refused before anything of
    that size is allocated. Tied parameters are saved once, under any of their names."""
    header = read_header(path / MODEL)
    groups: dict[int, list[str]] = {}
    state = model.state_dict(keep_vars=True)
    for name, t in state.items():
        groups.setdefault(id(t), []).append(name)
    problems = []
    for names in groups.values():
        t = state[names[0]]
        present = [n for n in names if n in header]
        if not present:
            problems.append(f"missing {names[0]}")
            continue
        want = (_TORCH_DTYPES.get(str(t.dtype).removeprefix("torch."), "?"), tuple(t.shape))
        for n in present:
            if header[n] != want:
                problems.append(f"{n} is {header[n][0]} {list(header[n][1])}, the model's is {want[0]} {list(want[1])}")
    unexpected = sorted(set(header) - set(state))
    problems += [f"unexpected {n[:60]}" for n in unexpected[:3]]
    if problems:
        raise CheckpointError(f"{path / MODEL}: weights do not match the model its meta.json describes ("
                              + "; ".join(problems[:3]) + (f"; {len(problems) - 3} more" if len(problems) > 3 else "")
                              + ")")


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load model.safetensors into ``model`` (strict: every weight must match)."""
    read_header(path / MODEL)  # a regular file whose header fits its size, before safetensors maps it
    try:
        missing, unexpected = load_model(model, str(path / MODEL), strict=False)
    except (SafetensorError, OSError, RuntimeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise CheckpointError(f"{path / MODEL}: cannot read weights ({first})") from None
    if missing or unexpected:
        raise CheckpointError(f"{path / MODEL}: weights do not match the model "
                              f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")


def load_train_state(path: Path) -> tuple[dict, dict] | None:
    """(tensors, info) saved for resuming, or None if the checkpoint has none."""
    if not (path / TRAIN).exists():
        return None
    read_header(path / TRAIN)  # a regular file whose header fits its size, before safetensors maps it
    info = _json(path / TRAIN_META)
    if not isinstance(info, dict) or not all(isinstance(info.get(k), dict)
                                             for k in ("optimizer", "scheduler", "rng", "progress")):
        raise CheckpointError(f"{path / TRAIN_META}: not the training state mmdesc writes")
    try:
        return load_file(str(path / TRAIN)), info
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read the training state ({str(e)[:80]})") from None


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
