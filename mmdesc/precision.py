"""Reduced-precision inference: a loaded float32 model converted for the search, on load.

Checkpoints are always float32; ``convert(model, precision)`` changes the model in memory:

- ``fp32``: nothing.
- ``bf16``: every weight and activation in bfloat16 (CPUs with AVX-512 BF16 or AMX, and
  GPUs); float inputs are cast where they enter a layer, so readers and layouts stay float32.
  Attention scores, softmaxes and log-probabilities are computed in float32 (the decoder
  and search do that whatever the weights' dtype).
- ``int8``: dynamic int8 quantization (``torch.ao.quantization.quantize_dynamic``) of every
  linear layer of the encoders and the decoder - the vocabulary projection and the
  recurrences' own W_hh included - and of the encoders' LSTM/GRU layers; weights are int8,
  activations are quantized on the fly per call, the rest stays float32. CPU only.

Where each pays (bench/decode.py --precision, the classic Show-Attend-Tell size): one input
at a time is bound by streaming the decoder's weights from memory every step, so int8 (4x
smaller weights, 13 MB that stay in the cache) pays most; large batches are bound by the
matrix products and the attention score, where bf16 and int8 both halve the products'
cost or better. Nothing here imports torch at module level (``--help`` stays fast).
"""
from __future__ import annotations

import warnings

from mmdesc.errors import MmdescError

PRECISIONS = ("fp32", "bf16", "int8")
HELP = ("Arithmetic of the search; the checkpoint stays float32. fp32: as trained. bf16: weights and activations in "
        "bfloat16, scores in float32 (CPUs with AVX-512 BF16 or AMX, and GPUs): about 1.6x faster on large "
        "batches, 2.4x one input at a time. int8: dynamic int8 linear and recurrent layers (CPU only): pays "
        "most one input at a time (describe photo.jpg), about 3.5x; 1.9x on large batches. [recipe's]")


def problem(precision: str, device) -> str | None:
    """Why ``precision`` cannot run on ``device`` (a torch.device or its name), or None."""
    import torch

    if precision not in PRECISIONS:
        return f"precision {precision!r} is not one of {{{', '.join(PRECISIONS)}}}"
    kind = torch.device(device).type
    if precision == "fp32":
        return None
    if precision == "int8":
        return None if kind == "cpu" else (f"precision int8: dynamic int8 layers run on the CPU only, "
                                           f"not {kind} (use bf16 there)")
    if kind == "cuda":
        return None if torch.cuda.is_bf16_supported() else "precision bf16: this GPU has no bfloat16 arithmetic"
    if kind == "cpu":
        return None if cpu_has_bf16() else ("precision bf16: this CPU has no bfloat16 arithmetic "
                                            "(AVX-512 BF16 or AMX); use int8 or fp32")
    return f"precision bf16: runs on cpu or cuda, not {kind}"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (oneDNN's own test: AVX-512 BF16 or AMX)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def convert(model, precision: str):
    """Convert a float32 model in place for inference at ``precision``; returns it.

    Raises MmdescError (one line) for a precision this device cannot run, or a model
    already converted to another precision (convert the float32 model)."""
    current = getattr(model, "precision", "fp32")
    if precision == current:
        return model
    if current != "fp32":
        raise MmdescError(f"precision {precision}: the model is already {current}; convert the float32 model")
    device = next(model.parameters()).device
    why = problem(precision, device)
    if why:
        raise MmdescError(why)
    (to_bf16 if precision == "bf16" else to_int8)(model)
    model.precision = precision
    return model


def to_bf16(model) -> None:
    """Weights and buffers to bfloat16; every layer of the model's ``encoder`` casts its float
    inputs (pixels, filterbanks) to its own dtype, and the decoder reads the encoder's bfloat16
    output (a bare decoder, which has no encoder, needs bfloat16 context vectors)."""
    import torch

    model.to(torch.bfloat16)
    encoder = getattr(model, "encoder", None)
    for m in encoder.modules() if encoder is not None else ():
        if next(m.parameters(recurse=False), None) is not None:
            m.register_forward_pre_hook(_cast_inputs)


def _cast_inputs(module, args):
    """Forward pre-hook: float tensors (and packed sequences) among ``args`` -> the module's dtype."""
    import torch
    from torch.nn.utils.rnn import PackedSequence

    dtype = next(module.parameters(recurse=False)).dtype

    def cast(x):
        if isinstance(x, PackedSequence) and x.data.is_floating_point() and x.data.dtype != dtype:
            return x._replace(data=x.data.to(dtype))
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype:
            return x.to(dtype)
        return x
    return tuple(cast(a) for a in args)


def to_int8(model) -> None:
    """Dynamic int8 quantization of the linear and recurrent layers, in place.

    Layers a module reads as raw tensors (its ``FLOAT_LAYERS``: the additive attention's score
    vector) stay float; a decoder's recurrences (``recurrent_weights``) get linear layers of
    their own (``hidden_layers``) to quantize."""
    import torch
    from torch import nn

    for m in list(model.modules()):
        if hasattr(m, "recurrent_weights") and getattr(m, "hidden_layers", None) is None:
            layers = {}
            for name, (w, b) in m.recurrent_weights().items():
                lin = nn.Linear(w.shape[1], w.shape[0], device=w.device)
                with torch.no_grad():
                    lin.weight.copy_(w)
                    lin.bias.copy_(b)
                layers[name] = lin
            m.hidden_layers = nn.ModuleDict(layers)
    kinds = (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell)
    keep = {f"{name}.{child}".lstrip(".") for name, m in model.named_modules()
            for child in getattr(m, "FLOAT_LAYERS", ())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        spec = {name: default_dynamic_qconfig for name, m in model.named_modules()
                if isinstance(m, kinds) and name not in keep}
        quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8, inplace=True)


def quantized_layers(model) -> list[str]:
    """Names of the model's dynamic int8 layers (what ``to_int8`` replaced)."""
    return [name for name, m in model.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")]
