"""The run folder of a training (recipe key ``out``): one trainer at a time, and what a
re-run of the same command does with what is already there.

``RunFolder`` is held by ``mmdesc train`` while it trains:

- an exclusive ``flock`` on ``out/.lock``, taken before anything else is done. The OS
  releases it when the process ends, however it ends (a SIGKILL leaves no stale lock).
  A second trainer on the same folder refuses at once with one line that names the
  holder's PID (``BusyError``, exit code 75);
- on entry, what an interrupted checkpoint write left is put right (``checkpoint.recover``:
  temporary folders removed, a ``best/`` caught between its two renames put back);
- ``clear()`` (``--fresh``) removes what a run writes (checkpoints, ``best/``, the log) and
  nothing else, so ``out=.`` cannot cost a user their files.

For a resumed run, ``reconcile`` compares the recipe with the one the checkpoint was
trained with (what may change is applied and said; what may not is refused in one line),
``finished`` says whether the run has already reached its end (a re-run is then a no-op),
and ``trim_log`` drops the log records a resumed run will write again.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from mmdesc import checkpoint
from mmdesc.errors import BusyError, ConfigError, MmdescError

LOCK = ".lock"
LOG = "metrics.jsonl"

# Recipe keys (dotted prefixes) that may differ when a run resumes. The first three are what a
# user changes to train on (applied to the restored optimizer and schedule); the others only
# change how the run is watched, saved or where it runs. Everything else (the modality, the
# model's shape, the tokenizer, the data, the seed, the batch size, the loss, the optimizer
# settings) decides what the weights become, so a resumed run with a different value would
# be neither the old run nor a new one: it is refused.
APPLIED = ("train.lr", "train.max_steps", "train.max_minutes")
FREE = ("name", "out", "data.root", "search", "train.valid_every", "train.valid_size", "train.save_every",
        "train.keep_last", "train.log_every", "train.patience", "train.device", "train.threads", "train.amp",
        "train.precision", "train.accumulate", "train.peer_timeout", "train.compile", "train.skip_bad",
        "train.workers", "train.check_data", "train.bucket",
        "train.cache_features", "train.feature_cache",  # the same features, read or computed
        # where a new run's weights start (a resumed run's start from its checkpoint)
        "encoder.init_from", "decoder.init_from", "decoder.embeddings")


class RunFolder:
    """The exclusive hold of one run folder: ``with RunFolder(out) as folder: ...``."""

    def __init__(self, path: str | Path, say: Callable[[str], None] = print):
        self.path = Path(path)
        self.say = say
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> "RunFolder":
        self.acquire()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release(remove_if_unused=exc_type is not None)

    def acquire(self) -> None:
        """Take the lock (or raise ``BusyError`` naming the holder), then recover what an
        interrupted checkpoint write left behind."""
        try:
            if not self.path.is_dir():
                self.path.mkdir(parents=True)
                self._created = True
            self._fd = _lock(self.path / LOCK)
        except OSError as e:
            raise MmdescError(f"{self.path}: cannot use as a run folder ({e.strerror or e})") from None
        for done in checkpoint.recover(self.path):
            self.say(f"{self.path}: {done}")

    def check_free(self) -> None:
        """Raise ``BusyError`` now when another training holds the folder; takes nothing, makes
        nothing (the processes that ``mmdesc train --nproc`` starts take the lock themselves)."""
        if (self.path / LOCK).is_file():
            fd = _lock(self.path / LOCK)
            _HELD.discard(fd)
            os.close(fd)

    def release(self, remove_if_unused: bool = False) -> None:
        """Let the lock go. ``remove_if_unused``: a folder this hold created and nothing was
        written to disappears again (a refused recipe leaves no trace)."""
        if self._fd is None:
            return
        if remove_if_unused and self._created and [p.name for p in self.path.iterdir()] == [LOCK]:
            (self.path / LOCK).unlink(missing_ok=True)
            self.path.rmdir()
        _HELD.discard(self._fd)
        os.close(self._fd)
        self._fd = None

    def clear(self) -> None:
        """``--fresh``: remove the checkpoints, ``best/`` and the log of the run, nothing else."""
        best = self.path / "best"
        gone = [p for p in (*sorted(self.path.glob("ckpt-*")), best, checkpoint.old_dir(best), self.path / LOG)
                if p.exists() or p.is_symlink()]
        names = [p.name + ("/" if p.is_dir() else "") for p in gone]
        for p in gone:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        if names:
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            self.say(f"--fresh: removed {shown} from {self.path}")


_HELD: set[int] = set()  # lock descriptors this process holds


def _drop_held_in_child() -> None:
    """A forked child (a DataLoader worker) must not keep the run folder locked after its
    parent dies: it closes its copies of the lock descriptors (the parent's lock stays)."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_held_in_child)


def _lock(path: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise BusyError(f"{path.parent}: another training (PID {holder}) is using this run folder; "
                            f"wait for it to end, or train into another out=") from None
        try:  # the file locked must still be the one at the path (not unlinked by a releasing holder)
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _HELD.add(fd)
            return fd
        os.close(fd)


def _holder(fd: int) -> str:
    for _ in range(20):  # the holder writes its PID right after it takes the lock
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"


# --- resuming --------------------------------------------------------------------------------

def reconcile(saved: dict, recipe, say: Callable[[str], None] = print) -> None:
    """Compare ``recipe`` with the recipe a checkpoint was trained with (``saved``, from its
    meta.json). Differences in ``APPLIED``/``FREE`` are said in one line (the trainer uses the
    new values); any other difference raises ``ConfigError`` in one line."""
    from mmdesc.config import recipe_from_dict, recipe_to_dict

    try:  # keys added since the checkpoint was written take their defaults there too
        saved = recipe_to_dict(recipe_from_dict(saved))
    except ConfigError:
        pass
    old, new = _flat(saved), _flat(recipe_to_dict(recipe))
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k, _ABSENT) != new.get(k, _ABSENT) and k != "out"]
    allowed = [k for k in changed if _under(k, APPLIED + FREE)]
    refused = [k for k in changed if k not in allowed]
    if refused:
        shown = ", ".join(f"{k} {_short(old.get(k, _ABSENT))} -> {_short(new.get(k, _ABSENT))}" for k in refused[:4])
        more = f" and {len(refused) - 4} more" if len(refused) > 4 else ""
        raise ConfigError(f"out: {recipe.out} holds a run trained with other settings ({shown}{more}); only "
                          f"{', '.join(APPLIED)} and how the run is validated, saved and logged can change when "
                          f"it resumes: --fresh starts over, another out= keeps both")
    if allowed:
        say("resuming with changed settings: " + ", ".join(
            f"{k} {_short(old.get(k, _ABSENT))} -> {_short(new.get(k, _ABSENT))}" for k in allowed))


def resume_lr(opt, sched, lr: float) -> None:
    """Put a changed ``train.lr`` into a restored optimizer and LambdaLR schedule: the schedule
    goes on from where it was, scaled to the new base rate (a no-op when ``lr`` is unchanged)."""
    if sched.base_lrs[0] == lr:  # the first group trains at train.lr; others (a backbone's) scale with it
        return
    scale = lr / sched.base_lrs[0]
    sched.base_lrs = [base * scale for base in sched.base_lrs]
    for group, base, f in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["initial_lr"] = base
        group["lr"] = base * f(sched.last_epoch)
    sched._last_lr = [group["lr"] for group in opt.param_groups]


def finished(progress, cfg) -> str | None:
    """Why a run at ``progress`` has nothing left to do under the train section ``cfg``
    (a sentence to show), or None when it has steps to train."""
    if progress.step >= cfg.max_steps:
        why = f"it reached train.max_steps={cfg.max_steps}"
    elif cfg.patience and progress.stale >= cfg.patience:
        why = f"it stopped early after {progress.stale} validations without improvement (train.patience={cfg.patience})"
    elif cfg.max_minutes > 0 and getattr(progress, "seconds", 0.0) >= cfg.max_minutes * 60:
        why = f"it used its time limit, train.max_minutes={cfg.max_minutes}"
    else:
        return None
    return f"nothing to do: the run is finished ({why}); raise the limit to train on, or --fresh to start over"


def trim_log(path: Path, step: int) -> None:
    """Keep the records of the log ``path`` up to ``step`` (where a run resumes), so the steps
    it trains again are not logged twice; unreadable lines are kept as they are."""
    if not path.is_file():
        return
    kept = []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    for line in lines:
        try:
            record_step = json.loads(line).get("step", 0)
        except (ValueError, AttributeError):
            record_step = 0
        if not isinstance(record_step, int) or record_step <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) == len(lines):
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


_ABSENT = object()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _short(v: object) -> str:
    if v is _ABSENT:
        return "(absent)"
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 30 else text[:27] + "..."
