"""Greedy and batched beam search, written only against the decoder's step API.

``decode(decoder, ctx, ...)`` returns, for every input, its n-best hypotheses (best
first), each with the attention of every output step over the input's real positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmdesc.contexts import ContextSet
from mmdesc.tokenize import PAD


@dataclass
class Hypothesis:
    """tokens: output ids without BOS/EOS; score: length-normalised log-probability;
    alpha: (len(tokens), N_real) attention of each output token over the real positions."""

    tokens: list[int]
    score: float
    alpha: Tensor | None  # None when the search was asked for no attention


def length_norm(length: Tensor | float, alpha: float) -> Tensor | float:
    """GNMT length penalty ((5 + |Y|) / 6) ** alpha; 1 when alpha = 0."""
    return ((5.0 + length) / 6.0) ** alpha


def output_limits(lengths: Tensor, max_len: int, max_len_a: float = 0.0, max_len_b: int = 0) -> Tensor:
    """(B,) output length limits: ``max_len``, or ``min(max_len, a * input_length + b)`` when a > 0."""
    limit = torch.full_like(lengths, max_len)
    if max_len_a > 0:
        limit = torch.minimum(limit, (lengths.float() * max_len_a + max_len_b).long().clamp(min=1))
    return limit


@torch.inference_mode()
def decode(decoder, ctx: ContextSet, *, beam: int = 5, n_best: int = 1, max_lens: Tensor | int = 50,
           min_len: int = 0, length_penalty: float = 0.0, max_attention_shift: int = 0, attention: bool = True,
           bos: int = 1, eos: int = 2, no_repeat_ngram: int = 0, repetition_penalty: float = 1.0,
           sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
           generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """Greedy search when ``beam == 1 and n_best == 1``, batched beam search otherwise;
    with ``sample``, ``n_best`` samples per input instead (``beam`` is not used).

    ``max_attention_shift`` > 0 ends a hypothesis (only EOS may follow) once its attention
    peak moves back by more than that many positions or stays on one position for more than
    that many steps (``attention_guard``): long inputs cannot loop. ``attention=False``:
    hypotheses carry no attention (``alpha`` None), and search keeps none.
    ``no_repeat_ngram`` > 0 forbids repeating an n-gram of that size, ``repetition_penalty``
    > 1 makes tokens already said less likely (``search/repeats.py``). Sampling
    (``search/sample.py``) draws at ``temperature`` from the ``top_k`` most likely tokens
    (0: all) within the ``top_p`` nucleus, from ``generator``, or a new one seeded with ``seed``."""
    from mmdesc.search.beam import beam_search
    from mmdesc.search.greedy import greedy_search
    from mmdesc.search.sample import Sampler, generator_for, sample_search

    if isinstance(max_lens, int):
        max_lens = torch.full((ctx.vectors.shape[0],), max_lens, dtype=torch.long)
    max_lens = max_lens.to(ctx.vectors.device)
    common = dict(max_lens=max_lens, min_len=min_len, length_penalty=length_penalty,
                  max_attention_shift=max_attention_shift, attention=attention, bos=bos, eos=eos,
                  no_repeat_ngram=no_repeat_ngram, repetition_penalty=repetition_penalty)
    if sample:
        draw = generator if generator is not None else generator_for(ctx.vectors.device, seed)
        return sample_search(decoder, ctx, n=n_best, sampler=Sampler(temperature, top_k, top_p, draw), **common)
    if beam == 1 and n_best == 1:
        return greedy_search(decoder, ctx, **common)
    return beam_search(decoder, ctx, beam=beam, n_best=n_best, **common)


def attention_guard(logprobs: Tensor, alpha: Tensor, peak: Tensor, still: Tensor, t: int, limit: int,
                    eos: int) -> tuple[Tensor, Tensor, Tensor]:
    """Allow only EOS to hypotheses whose attention went astray at step t.

    alpha (B, K, N) this step's attention; peak (B, K) the previous step's peak position,
    still (B, K) how many steps it has not moved. A hypothesis whose peak moves back by more
    than ``limit`` positions, or stays put for more than ``limit`` steps, must end.
    Returns logprobs (B, K, V) and the new peak and still."""
    now = alpha.argmax(dim=-1)  # (B, K)
    still = torch.where(now == peak, still + 1, torch.zeros_like(still)) if t > 0 else torch.zeros_like(now)
    astray = ((peak - now > limit) | (still > limit)) if t > 0 else torch.zeros_like(now, dtype=torch.bool)
    if bool(astray.any()):
        eos_lp = logprobs[:, :, eos].clone()
        logprobs.masked_fill_(astray[:, :, None], float("-inf"))
        logprobs[:, :, eos] = torch.where(astray, eos_lp, logprobs[:, :, eos])
    return logprobs, now, still


def constrain(logprobs: Tensor, t: int, max_lens: Tensor, min_len: int, eos: int, bos: int) -> Tensor:
    """Never emit padding or BOS; forbid EOS before ``min_len`` tokens; force it once an
    input reaches its limit. logprobs (B, K, V) for the token at position t (0-based)."""
    logprobs[:, :, PAD] = float("-inf")
    logprobs[:, :, bos] = float("-inf")
    if t < min_len:
        logprobs[:, :, eos] = float("-inf")
    at_limit = t >= max_lens  # (B,)
    if at_limit.any():
        eos_lp = logprobs[:, :, eos].clone()
        logprobs[at_limit] = float("-inf")
        logprobs[:, :, eos] = torch.where(at_limit[:, None], eos_lp, logprobs[:, :, eos])
    return logprobs


def to_hypotheses(tokens: Tensor, lengths: Tensor, scores: Tensor, alphas: Tensor | None, ctx_lengths: Tensor,
                  n_best: int) -> list[list[Hypothesis]]:
    """Finished buffers -> Python hypotheses, best first.

    tokens (B, K, L) with EOS; lengths (B, K) including EOS; scores (B, K) normalised;
    alphas (B, K, L, N), or None for hypotheses without attention."""
    order = scores.argsort(dim=1, descending=True)[:, :n_best]  # (B, n)
    out = []
    for b, (row, nb) in enumerate(zip(order.tolist(), ctx_lengths.tolist())):
        hyps = []
        for k in row:
            n = int(lengths[b, k]) - 1  # drop EOS
            alpha = None if alphas is None else alphas[b, k, :n, :nb].float().cpu()
            hyps.append(Hypothesis(tokens[b, k, :n].tolist(), float(scores[b, k]), alpha))
        out.append(hyps)
    return out
