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


def resolve(name: str) -> str:
    """``auto`` made concrete: cuda where this machine has a CUDA device, else cpu."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def training_precision(precision: str, name: str) -> str:
    """The arithmetic a training in ``precision`` runs on device ``name``: ``auto`` is bf16 where
    the device has bfloat16 arithmetic (a GPU that has it, a CPU with AVX-512 BF16 or AMX), else
    fp32; any other setting is itself."""
    if precision != "auto":
        return precision
    return "fp32" if precision_problem("bf16", name) else "bf16"


def precision_problem(precision: str, name: str) -> str | None:
    """Why training in ``precision`` (fp32, bf16, fp16) cannot run on device ``name`` here (one
    phrase), or None when it can: fp16 needs CUDA (its grad scaler), bf16 a GPU or CPU that has it."""
    if precision not in ("bf16", "fp16"):
        return None
    kind = resolve(name).partition(":")[0]
    if precision == "fp16" and kind != "cuda":
        return f"fp16 trains on a CUDA GPU only (with a grad scaler); on {kind} use bf16 or fp32"
    import torch

    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        return "bf16: this GPU has no bfloat16; use fp16 or fp32"
    if precision == "bf16" and kind == "cpu" and not torch.backends.mkldnn.is_available():
        return "bf16: this CPU build has no bfloat16 kernels (oneDNN); use fp32"
    if precision == "bf16" and kind == "cpu" and not cpu_has_bf16():
        return "bf16: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX); use fp32"
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (oneDNN's own check)."""
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False
