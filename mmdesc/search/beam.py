"""Batched beam search over inputs x beams, with finished inputs removed from the batch.

All B inputs and their beams advance together as one (B, K, ...) batch; the context
and its attention keys are prepared once per input and never copied per beam. Every
input starts from one beam (BOS), so the first step decodes B hypotheses, not B x K
identical ones; from the second step on there are K. A step is three named parts, each
tensor-only (no Python loop over inputs or beams):

- ``expand``: score every (beam, token) continuation and keep the best 2K candidates;
- ``finish``: candidates ending in EOS among the top K become finished hypotheses,
  merged into a per-input buffer of the K best by length-normalised score;
- ``prune``: the best K candidates that did not end continue as the new beams.

An input is done once K hypotheses have finished (every input's beams are forced to end
at its own length limit); done inputs leave the active batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmdesc.contexts import ContextSet
from mmdesc.search import Hypothesis, constrain, length_norm, to_hypotheses


@dataclass
class Finished:
    """Per-input buffer of the K best finished hypotheses (rows = all original inputs)."""

    tokens: Tensor  # (B0, K, L) with EOS, padded with EOS
    lengths: Tensor  # (B0, K) including EOS
    scores: Tensor  # (B0, K) length-normalised, -inf where empty
    alphas: Tensor  # (B0, K, L, N)
    count: Tensor  # (B0,) how many have finished so far


@dataclass
class Beams:
    """The active inputs' beams (K = 1 before the first step)."""

    orig: Tensor  # (B,) index of each active input among the original inputs
    scores: Tensor  # (B, K) cumulative log-probability
    tokens: Tensor  # (B, K, t) tokens so far
    alphas: Tensor  # (B, K, t, N) attention so far
    state: dict  # decoder state, (B, K, H) tensors
    max_lens: Tensor  # (B,)


def gather_beams(x: Tensor, index: Tensor) -> Tensor:
    """Rows of x (B, K, ...) picked per input by index (B, J) -> (B, J, ...)."""
    idx = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
    return x.gather(1, idx)


def expand(logprobs: Tensor, scores: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Best 2k continuations: logprobs (B, K, V), scores (B, K) -> scores, beam, token, each (B, 2k).

    ``logprobs`` is overwritten with the candidates' cumulative scores."""
    b, width, v = logprobs.shape
    cand = logprobs.add_(scores[:, :, None]).view(b, width * v)  # in place; (B, K, V) -> (B, K*V)
    top, idx = cand.topk(min(2 * k, width * v), dim=1)
    return top, idx // v, idx % v


def finish(fin: Finished, beams: Beams, top: Tensor, beam_of: Tensor, tok: Tensor, alpha: Tensor,
           t: int, eos: int, length_penalty: float) -> None:
    """Move candidates that end in EOS (within the top K) into the finished buffer."""
    k = fin.scores.shape[1]
    ends = (tok == eos) & torch.isfinite(top)
    ends[:, k:] = False  # only EOS ranked among the top K finishes a hypothesis
    if not bool(ends.any()):
        return
    L = fin.tokens.shape[2]
    o = beams.orig
    # the new hypotheses: their history + EOS, padded to the buffer's length
    new_tok = torch.cat([gather_beams(beams.tokens, beam_of), tok[:, :, None]], dim=2)  # (B, 2K, t+1)
    new_tok = torch.nn.functional.pad(new_tok, (0, L - t - 1), value=eos)
    new_alpha = torch.cat([gather_beams(beams.alphas, beam_of), gather_beams(alpha, beam_of)[:, :, None]], dim=2)
    new_alpha = torch.nn.functional.pad(new_alpha, (0, 0, 0, L - t - 1))  # (B, 2K, L, N)
    new_score = torch.where(ends, top / length_norm(float(t + 1), length_penalty), float("-inf"))
    # merge with what had finished before and keep the K best
    all_score = torch.cat([fin.scores[o], new_score], dim=1)  # (B, 3K)
    best, pick = all_score.topk(k, dim=1)
    new_len = torch.full_like(tok, t + 1)
    fin.scores[o] = best
    fin.tokens[o] = gather_beams(torch.cat([fin.tokens[o], new_tok], dim=1), pick)
    fin.lengths[o] = gather_beams(torch.cat([fin.lengths[o], new_len], dim=1), pick)
    fin.alphas[o] = gather_beams(torch.cat([fin.alphas[o], new_alpha], dim=1), pick)
    fin.count[o] += ends.sum(dim=1)


def prune(beams: Beams, top: Tensor, beam_of: Tensor, tok: Tensor, alpha: Tensor, eos: int, k: int) -> Tensor:
    """The k best candidates that did not end become the beams; returns the next input (B, k)."""
    live = torch.where(tok == eos, float("-inf"), top)
    scores, pick = live.topk(min(k, live.shape[1]), dim=1)  # (B, k), sorted
    origin = beam_of.gather(1, pick)  # (B, K) which old beam each new beam extends
    y = tok.gather(1, pick)
    beams.scores = scores
    beams.tokens = torch.cat([gather_beams(beams.tokens, origin), y[:, :, None]], dim=2)
    beams.alphas = torch.cat([gather_beams(beams.alphas, origin), gather_beams(alpha, origin)[:, :, None]], dim=2)
    beams.state = {name: gather_beams(s, origin) for name, s in beams.state.items()}
    return y


def drop_done(beams: Beams, pctx, y: Tensor, done: Tensor):
    """Remove the inputs that are done from the active batch."""
    keep = (~done).nonzero().squeeze(1)
    beams.orig, beams.scores = beams.orig[keep], beams.scores[keep]
    beams.tokens, beams.alphas, beams.max_lens = beams.tokens[keep], beams.alphas[keep], beams.max_lens[keep]
    beams.state = {name: s[keep] for name, s in beams.state.items()}
    return pctx.select(keep), y[keep]


def beam_search(decoder, ctx: ContextSet, *, beam: int, n_best: int, max_lens: Tensor, min_len: int = 0,
                length_penalty: float = 0.0, bos: int = 1, eos: int = 2) -> list[list[Hypothesis]]:
    if n_best > beam:
        raise ValueError(f"n_best={n_best} exceeds beam={beam}")
    b0, n, _ = ctx.vectors.shape
    dev, k = ctx.vectors.device, beam
    L = int(max_lens.max()) + 1
    pctx = decoder.prepare(ctx)
    beams = Beams(torch.arange(b0, device=dev), torch.zeros(b0, 1, device=dev),
                  torch.zeros(b0, 1, 0, dtype=torch.long, device=dev), torch.zeros(b0, 1, 0, n, device=dev),
                  decoder.init_state(pctx, 1), max_lens)
    fin = Finished(torch.full((b0, k, L), eos, dtype=torch.long, device=dev),
                   torch.ones(b0, k, dtype=torch.long, device=dev),
                   torch.full((b0, k), float("-inf"), device=dev),
                   torch.zeros(b0, k, L, n, device=dev), torch.zeros(b0, dtype=torch.long, device=dev))
    y = torch.full((b0, 1), bos, dtype=torch.long, device=dev)
    for t in range(L):
        logprobs, beams.state, alpha = decoder.step(pctx, y, beams.state)  # (B, K, V), ..., (B, K, N)
        logprobs = constrain(logprobs, t, beams.max_lens, min_len, eos, bos)
        top, beam_of, tok = expand(logprobs, beams.scores, k)
        alpha = alpha.float()
        finish(fin, beams, top, beam_of, tok, alpha, t, eos, length_penalty)
        y = prune(beams, top, beam_of, tok, alpha, eos, k)
        done = fin.count[beams.orig] >= k
        if bool(done.all()):
            break
        if bool(done.any()):
            pctx, y = drop_done(beams, pctx, y, done)
    return to_hypotheses(fin.tokens, fin.lengths, fin.scores, fin.alphas, ctx.lengths, n_best)
