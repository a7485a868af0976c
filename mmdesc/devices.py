"""Device names (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``): their form is checked without
torch, whether they exist on this machine with it, so a recipe or ``--device`` naming a
device that is not there is refused before any work starts, in one line."""
from __future__ import annotations

import re

NAMES = "auto, cpu, cuda, cuda:N or mps"
_FORM = re.compile(r"auto|cpu|mps|cuda(:\d{1,4})?")


def well_formed(name: str) -> bool:
    return isinstance(name, str) and _FORM.fullmatch(name) is not None


def problem(name: str) -> str | None:
    """Why ``name`` cannot be used here (one phrase), or None when it can."""
    if not well_formed(name):
        return f"{name[:40]!r} is not a device name ({NAMES})"
    if name in ("auto", "cpu"):
        return None
    import torch

    if name == "mps":
        return None if torch.backends.mps.is_available() else "mps: no Apple GPU on this machine"
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(name.partition(":")[2] or 0)
    if n == 0:
        return f"{name}: this machine has no CUDA device (use cpu)"
    if index >= n:
        return f"{name}: this machine has {n} CUDA device{'s' if n > 1 else ''} (cuda:0..cuda:{n - 1})"
    return None
