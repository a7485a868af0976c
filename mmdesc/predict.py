"""Running a trained model over many inputs: batched, length-sorted, with attention per word."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from mmdesc.data import target_tensors, to_device
from mmdesc.search import Hypothesis


@dataclass
class Described:
    """One hypothesis in words: text, words, and the attention of each word (W, N)."""

    text: str
    words: list[str]
    score: float
    alpha: Tensor | None  # (W, N) attention per output word over the input's real positions
    tokens: list[int]
    layout: object  # where the N positions live in the input


def in_words(tokenizer, tokens: Sequence[int], alpha: Tensor) -> tuple[list[str], Tensor]:
    """Pieces -> whitespace words of the decoded text, with each word's mean attention (W, N)."""
    text = tokenizer.decode(tokens)
    words = text.split()
    if alpha is None:
        return words, None
    if not tokens or not words:
        return words, alpha.new_zeros(0, alpha.shape[-1])
    index = torch.tensor(tokenizer.word_index(tokens)).clamp(max=len(words) - 1)  # (T,)
    summed = alpha.new_zeros(len(words), alpha.shape[-1]).index_add_(0, index, alpha)  # (W, N)
    counts = torch.bincount(index, minlength=len(words)).clamp(min=1).to(alpha.dtype)
    return words, summed / counts[:, None]


def describe(trained, items: Sequence, *, batch_size: int = 64, progress: Callable[[int], None] | None = None,
             **search) -> list[list[Described]]:
    """n-best descriptions of every item (same order), decoded in length-sorted batches."""
    model, reader, tok = trained.model, trained.reader, trained.tokenizer
    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda i: reader.length(items[i]))
    out: list = [None] * len(items)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch = to_device(reader.collate([items[i] for i in idx]), device)
        hyps, layouts = model.generate(batch, **search)
        for i, hs, layout in zip(idx, hyps, layouts):
            out[i] = [_in_words(tok, h, layout) for h in hs]
        if progress:
            progress(len(idx))
    return out


def _in_words(tok, h: Hypothesis, layout) -> Described:
    words, alpha = in_words(tok, h.tokens, h.alpha)
    return Described(tok.decode(h.tokens), words, h.score, alpha, h.tokens, layout)


@torch.inference_mode()
def force_attention(trained, items: Sequence, targets: Sequence[str], batch_size: int = 64) -> list[tuple[Tensor, object]]:
    """(attention (T_pieces, N_real), layout) of the model reading each reference target (teacher forcing)."""
    model, reader, tok = trained.model, trained.reader, trained.tokenizer
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(items), batch_size):
        ids = [tok.encode(t) for t in targets[s:s + batch_size]]
        batch = to_device(reader.collate(list(items[s:s + batch_size])), device)
        inputs, _ = target_tensors([y or [0] for y in ids])
        _, alphas, ctx = model(batch, inputs.to(device))
        for b, y in enumerate(ids):
            out.append((alphas[b, :len(y), : int(ctx.lengths[b])].float().cpu(), ctx.layouts[b]))
    return out
