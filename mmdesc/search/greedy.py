"""Greedy search: the best next token at every step, for a whole batch at once."""
from __future__ import annotations

import torch
from torch import Tensor

from mmdesc.contexts import ContextSet
from mmdesc.search import Hypothesis, constrain, length_norm, to_hypotheses


def greedy_search(decoder, ctx: ContextSet, *, max_lens: Tensor, min_len: int = 0, length_penalty: float = 0.0,
                  bos: int = 1, eos: int = 2) -> list[list[Hypothesis]]:
    b, n, _ = ctx.vectors.shape
    dev = ctx.vectors.device
    pctx = decoder.prepare(ctx)
    state = decoder.init_state(pctx, 1)
    limit = int(max_lens.max()) + 1
    tokens = torch.full((b, limit), eos, dtype=torch.long, device=dev)
    alphas = torch.zeros(b, limit, n, device=dev)
    scores = torch.zeros(b, device=dev)
    lengths = torch.full((b,), limit, dtype=torch.long, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    y = torch.full((b, 1), bos, dtype=torch.long, device=dev)
    for t in range(limit):
        logprobs, state, alpha = decoder.step(pctx, y, state)  # (B, 1, V), ..., (B, 1, N)
        logprobs = constrain(logprobs, t, max_lens, min_len, eos, bos)
        lp, y = logprobs.max(dim=-1)  # (B, 1)
        live = ~done
        tokens[live, t] = y[live, 0]
        alphas[live, t] = alpha[live, 0].float()
        scores = scores + torch.where(live, lp[:, 0], torch.zeros_like(scores))
        ended = live & (y[:, 0] == eos)
        lengths[ended] = t + 1
        done |= ended
        if bool(done.all()):
            break
    norm = scores / length_norm(lengths.float(), length_penalty)
    return to_hypotheses(tokens[:, None], lengths[:, None], norm[:, None], alphas[:, None], ctx.lengths, 1)
