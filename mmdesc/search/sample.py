"""Sampling: descriptions drawn from the model's distribution, for diverse outputs.

Each input gets ``n`` samples drawn side by side, as beam search keeps its K beams: one
(B, n, ...) batch over a context prepared once per input; a sample that has ended emits
only EOS (scoring nothing) until all ``n`` of its input have, and then the input leaves
the batch. Each token is drawn from the model's next-token distribution at a ``temperature``, cut to the ``top_k``
most likely tokens and to the smallest set whose probability reaches ``top_p`` (nucleus
sampling). The draws come from one ``torch.Generator``: the same seed, inputs and batch
size give the same samples. A sample's score is the length-normalised log-probability the
model (with the search's constraints and repetition options) gives it, at temperature 1,
so that the n samples of an input are returned best first.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmdesc.contexts import ContextSet
from mmdesc.search import Hypothesis, attention_guard, constrain, length_norm, to_hypotheses
from mmdesc.search.repeats import discourage_repeats


@dataclass
class Sampler:
    """Draws the next token: ``(logprobs (B, K, V)) -> (its log-probability, token)``, each (B, K)."""

    temperature: float = 1.0
    top_k: int = 0  # 0: no cut
    top_p: float = 1.0  # 1: no cut
    generator: torch.Generator | None = None

    def __call__(self, logprobs: Tensor) -> tuple[Tensor, Tensor]:
        b, k, v = logprobs.shape
        logits = logprobs / self.temperature
        if 0 < self.top_k < v:
            kth = logits.topk(self.top_k, dim=-1).values[..., -1:]  # (B, K, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            ranked, order = logits.sort(dim=-1, descending=True)
            p = ranked.softmax(dim=-1)
            above = p.cumsum(dim=-1) - p  # mass of the tokens ranked above each; the first is always kept
            drop = torch.zeros_like(above, dtype=torch.bool).scatter_(-1, order, above >= self.top_p)
            logits = logits.masked_fill(drop, float("-inf"))
        probs = logits.softmax(dim=-1).view(b * k, v)  # (B, K, V) -> (B*K, V)
        y = torch.multinomial(probs, 1, generator=self.generator).view(b, k)  # (B*K, 1) -> (B, K)
        return logprobs.gather(-1, y[..., None]).squeeze(-1), y


def generator_for(device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (sampling on a GPU draws there)."""
    return torch.Generator(device=device).manual_seed(seed)


def sample_search(decoder, ctx: ContextSet, *, n: int, sampler: Sampler, max_lens: Tensor, min_len: int = 0,
                  length_penalty: float = 0.0, max_attention_shift: int = 0, attention: bool = True, bos: int = 1,
                  eos: int = 2, no_repeat_ngram: int = 0, repetition_penalty: float = 1.0) -> list[list[Hypothesis]]:
    """``n`` samples per input, best first (by length-normalised log-probability)."""
    b0, npos, _ = ctx.vectors.shape
    dev = ctx.vectors.device
    pctx = decoder.prepare(ctx)
    state = decoder.init_state(pctx, n)
    limit = int(max_lens.max()) + 1
    tokens = torch.full((b0, n, limit), eos, dtype=torch.long, device=dev)
    alphas = torch.zeros(b0, n, limit, npos, device=dev) if attention else None
    scores = torch.zeros(b0, n, device=dev)
    lengths = torch.full((b0, n), limit, dtype=torch.long, device=dev)
    active = torch.arange(b0, device=dev)  # original index of each input still decoding
    ended = torch.zeros(b0, n, dtype=torch.bool, device=dev)
    peak = still = torch.zeros(b0, n, dtype=torch.long, device=dev)
    y = torch.full((b0, n), bos, dtype=torch.long, device=dev)
    for t in range(limit):
        logprobs, state, alpha = decoder.step(pctx, y, state)  # (B, n, V), ..., (B, n, N)
        if no_repeat_ngram > 0 or repetition_penalty != 1.0:
            logprobs = discourage_repeats(logprobs, tokens[active, :, :t], no_repeat_ngram, repetition_penalty)
        logprobs = constrain(logprobs, t, max_lens[active], min_len, eos, bos)
        if max_attention_shift > 0:
            logprobs, peak, still = attention_guard(logprobs, alpha, peak, still, t, max_attention_shift, eos)
        logprobs = logprobs.masked_fill(ended[:, :, None], 0.0)  # an ended sample draws from anything, gets EOS
        lp, y = sampler(logprobs)  # (B, n)
        y = y.masked_fill(ended, eos)
        tokens[active, :, t] = y
        if alphas is not None:
            alphas[active, :, t] = alpha.float()
        scores[active] += lp.masked_fill(ended, 0.0)
        lengths[active] = torch.where((y == eos) & ~ended, t + 1, lengths[active])
        ended = ended | (y == eos)
        done = ended.all(dim=1)  # (B,)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            active, y, ended, pctx = active[keep], y[keep], ended[keep], pctx.select(keep)
            peak, still = peak[keep], still[keep]
            state = {name: s[keep] for name, s in state.items()}
    norm = scores / length_norm(lengths.float(), length_penalty)
    return to_hypotheses(tokens, lengths, norm, alphas, ctx.lengths, n)
