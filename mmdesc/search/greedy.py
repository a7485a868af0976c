"""Greedy search: the best next token at every step, for a whole batch at once.

Inputs whose sentence has ended leave the active batch, as in beam search."""
from __future__ import annotations

import torch
from torch import Tensor

from mmdesc.contexts import ContextSet
from mmdesc.search import Hypothesis, attention_guard, constrain, length_norm, to_hypotheses
from mmdesc.search.repeats import discourage_repeats


def greedy_search(decoder, ctx: ContextSet, *, max_lens: Tensor, min_len: int = 0, length_penalty: float = 0.0,
                  max_attention_shift: int = 0, attention: bool = True, bos: int = 1, eos: int = 2,
                  no_repeat_ngram: int = 0, repetition_penalty: float = 1.0) -> list[list[Hypothesis]]:
    b, n, _ = ctx.vectors.shape
    dev = ctx.vectors.device
    pctx = decoder.prepare(ctx)
    state = decoder.init_state(pctx, 1)
    limit = int(max_lens.max()) + 1
    tokens = torch.full((b, limit), eos, dtype=torch.long, device=dev)
    alphas = torch.zeros(b, limit, n, device=dev) if attention else None
    peak = still = torch.zeros(b, 1, dtype=torch.long, device=dev)
    scores = torch.zeros(b, device=dev)
    lengths = torch.full((b,), limit, dtype=torch.long, device=dev)
    active = torch.arange(b, device=dev)  # original index of each row still decoding
    y = torch.full((b, 1), bos, dtype=torch.long, device=dev)
    for t in range(limit):
        logprobs, state, alpha = decoder.step(pctx, y, state)  # (B, 1, V), ..., (B, 1, N)
        if no_repeat_ngram > 0 or repetition_penalty != 1.0:
            logprobs = discourage_repeats(logprobs, tokens[active, :t][:, None],  # (B, t) -> (B, 1, t)
                                          no_repeat_ngram, repetition_penalty)
        logprobs = constrain(logprobs, t, max_lens[active], min_len, eos, bos)
        if max_attention_shift > 0:
            logprobs, peak, still = attention_guard(logprobs, alpha, peak, still, t, max_attention_shift, eos)
        lp, y = logprobs.max(dim=-1)  # (B, 1)
        tokens[active, t] = y[:, 0]
        if alphas is not None:
            alphas[active, t] = alpha[:, 0].float()
        scores[active] += lp[:, 0]
        ended = y[:, 0] == eos
        if bool(ended.any()):
            lengths[active[ended]] = t + 1
            keep = (~ended).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            active, y, pctx = active[keep], y[keep], pctx.select(keep)
            peak, still = peak[keep], still[keep]
            state = {name: s[keep] for name, s in state.items()}
    norm = scores / length_norm(lengths.float(), length_penalty)
    return to_hypotheses(tokens[:, None], lengths[:, None], norm[:, None],
                         None if alphas is None else alphas[:, None], ctx.lengths, 1)
