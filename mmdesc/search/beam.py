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

Before ``expand``, the options against repetition (``search/repeats.py``) adjust the
log-probabilities from each beam's tokens so far.

An input is done once K hypotheses have finished (every input's beams are forced to end
at its own length limit); done inputs leave the active batch.

Attention is kept as it is made: one (B_t, K, N) tensor per step with back-pointers to
the previous step's beams (``History``); a hypothesis's (T, N) matrix is assembled once,
at the end, for the n-best that are returned. Nothing copies the history per step, and
with ``attention=False`` none is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmdesc.contexts import ContextSet
from mmdesc.search import Hypothesis, attention_guard, constrain, length_norm, to_hypotheses
from mmdesc.search.repeats import discourage_repeats


@dataclass
class Finished:
    """Per-input buffer of the K best finished hypotheses (rows = all original inputs)."""

    tokens: Tensor  # (B0, K, L) with EOS, padded with EOS
    lengths: Tensor  # (B0, K) including EOS
    scores: Tensor  # (B0, K) length-normalised, -inf where empty
    last_beam: Tensor  # (B0, K) the beam (at step lengths - 1) whose EOS ended it
    count: Tensor  # (B0,) how many have finished so far


@dataclass
class Beams:
    """The active inputs' beams (K = 1 before the first step)."""

    orig: Tensor  # (B,) index of each active input among the original inputs
    scores: Tensor  # (B, K) cumulative log-probability
    tokens: Tensor  # (B, K, t) tokens so far
    parent: Tensor  # (B, K) the beam of the previous step that each beam extends
    peak: Tensor  # (B, K) position of the previous step's attention peak
    still: Tensor  # (B, K) steps the peak has not moved
    state: dict  # decoder state, (B, K, ...) tensors
    max_lens: Tensor  # (B,)


@dataclass
class History:
    """Each step's attention of the active beams, with back-pointers (one entry per step)."""

    rows: list[Tensor] = field(default_factory=list)  # (B0,) row of each original input, -1 if inactive
    alphas: list[Tensor] = field(default_factory=list)  # (B_t, K_t, N)
    parents: list[Tensor] = field(default_factory=list)  # (B_t, K_t) beam index at step t - 1

    def record(self, beams: Beams, alpha: Tensor, b0: int) -> None:
        rows = torch.full((b0,), -1, dtype=torch.long, device=alpha.device)
        rows[beams.orig] = torch.arange(beams.orig.numel(), device=alpha.device)
        self.rows.append(rows)
        self.alphas.append(alpha)
        self.parents.append(beams.parent)

    def assemble(self, orig: Tensor, last_step: Tensor, last_beam: Tensor, n: int) -> Tensor:
        """The (H, L, N) attention of H hypotheses, each given by its input, its last step and
        the beam it ended from; walks the back-pointers from the end, all H at once."""
        h, steps = orig.numel(), len(self.alphas)
        out = torch.zeros(h, steps, n, device=orig.device)
        beam = last_beam.clone()
        for t in range(steps - 1, -1, -1):
            on = (last_step >= t).nonzero().squeeze(1)  # hypotheses that had reached step t
            if on.numel() == 0:
                continue
            r, j = self.rows[t][orig[on]], beam[on]
            out[on, t] = self.alphas[t][r, j]
            beam[on] = self.parents[t][r, j]
        return out


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


def finish(fin: Finished, beams: Beams, top: Tensor, beam_of: Tensor, tok: Tensor, t: int, eos: int,
           length_penalty: float) -> None:
    """Move candidates that end in EOS (within the top K) into the finished buffer."""
    k = fin.scores.shape[1]
    ends = (tok == eos) & torch.isfinite(top)
    ends[:, k:] = False  # only EOS ranked among the top K finishes a hypothesis
    if not bool(ends.any()):
        return
    L = fin.tokens.shape[2]
    o = beams.orig
    # the new hypotheses' tokens: their history + EOS, padded to the buffer's length
    new_tok = torch.cat([gather_beams(beams.tokens, beam_of), tok[:, :, None]], dim=2)  # (B, 2K, t+1)
    new_tok = torch.nn.functional.pad(new_tok, (0, L - t - 1), value=eos)  # (B, 2K, L)
    new_score = torch.where(ends, top / length_norm(float(t + 1), length_penalty), float("-inf"))
    # merge with what had finished before and keep the K best
    all_score = torch.cat([fin.scores[o], new_score], dim=1)  # (B, 3K)
    best, pick = all_score.topk(k, dim=1)
    fin.scores[o] = best
    fin.tokens[o] = gather_beams(torch.cat([fin.tokens[o], new_tok], dim=1), pick)
    fin.lengths[o] = gather_beams(torch.cat([fin.lengths[o], torch.full_like(tok, t + 1)], dim=1), pick)
    fin.last_beam[o] = gather_beams(torch.cat([fin.last_beam[o], beam_of], dim=1), pick)
    fin.count[o] += ends.sum(dim=1)


def prune(beams: Beams, top: Tensor, beam_of: Tensor, tok: Tensor, peak: Tensor, still: Tensor,
          eos: int, k: int) -> Tensor:
    """The k best candidates that did not end become the beams; returns the next input (B, k)."""
    live = torch.where(tok == eos, float("-inf"), top)
    scores, pick = live.topk(min(k, live.shape[1]), dim=1)  # (B, k), sorted
    origin = beam_of.gather(1, pick)  # (B, K) which old beam each new beam extends
    y = tok.gather(1, pick)
    beams.scores, beams.parent = scores, origin
    beams.tokens = torch.cat([gather_beams(beams.tokens, origin), y[:, :, None]], dim=2)
    beams.peak, beams.still = peak.gather(1, origin), still.gather(1, origin)
    beams.state = {name: gather_beams(s, origin) for name, s in beams.state.items()}
    return y


def drop_done(beams: Beams, pctx, y: Tensor, done: Tensor):
    """Remove the inputs that are done from the active batch."""
    keep = (~done).nonzero().squeeze(1)
    for name in ("orig", "scores", "tokens", "parent", "peak", "still", "max_lens"):
        setattr(beams, name, getattr(beams, name)[keep])
    beams.state = {name: s[keep] for name, s in beams.state.items()}
    return pctx.select(keep), y[keep]


def beam_search(decoder, ctx: ContextSet, *, beam: int, n_best: int, max_lens: Tensor, min_len: int = 0,
                length_penalty: float = 0.0, max_attention_shift: int = 0, attention: bool = True,
                bos: int = 1, eos: int = 2, no_repeat_ngram: int = 0,
                repetition_penalty: float = 1.0) -> list[list[Hypothesis]]:
    if n_best > beam:
        raise ValueError(f"n_best={n_best} exceeds beam={beam}")
    b0, n, _ = ctx.vectors.shape
    dev, k = ctx.vectors.device, beam
    L = int(max_lens.max()) + 1
    pctx = decoder.prepare(ctx)
    zeros = torch.zeros(b0, 1, dtype=torch.long, device=dev)
    beams = Beams(torch.arange(b0, device=dev), torch.zeros(b0, 1, device=dev),
                  torch.zeros(b0, 1, 0, dtype=torch.long, device=dev), zeros, zeros, zeros,
                  decoder.init_state(pctx, 1), max_lens)
    fin = Finished(torch.full((b0, k, L), eos, dtype=torch.long, device=dev),
                   torch.ones(b0, k, dtype=torch.long, device=dev),
                   torch.full((b0, k), float("-inf"), device=dev),
                   torch.zeros(b0, k, dtype=torch.long, device=dev), torch.zeros(b0, dtype=torch.long, device=dev))
    history = History()
    y = torch.full((b0, 1), bos, dtype=torch.long, device=dev)
    for t in range(L):
        logprobs, beams.state, alpha = decoder.step(pctx, y, beams.state)  # (B, K, V), ..., (B, K, N)
        if no_repeat_ngram > 0 or repetition_penalty != 1.0:
            logprobs = discourage_repeats(logprobs, beams.tokens, no_repeat_ngram, repetition_penalty)
        logprobs = constrain(logprobs, t, beams.max_lens, min_len, eos, bos)
        peak, still = beams.peak, beams.still
        if max_attention_shift > 0:
            logprobs, peak, still = attention_guard(logprobs, alpha, beams.peak, beams.still, t,
                                                    max_attention_shift, eos)
        if attention:
            history.record(beams, alpha.float(), b0)
        top, beam_of, tok = expand(logprobs, beams.scores, k)
        finish(fin, beams, top, beam_of, tok, t, eos, length_penalty)
        y = prune(beams, top, beam_of, tok, peak, still, eos, k)
        done = fin.count[beams.orig] >= k
        if bool(done.all()):
            break
        if bool(done.any()):
            pctx, y = drop_done(beams, pctx, y, done)
    order = fin.scores.argsort(dim=1, descending=True)[:, :n_best]  # (B0, n)
    pick = lambda x: x.gather(1, order)  # noqa: E731 - (B0, K) -> (B0, n)
    tokens, lengths, scores = gather_beams(fin.tokens, order), pick(fin.lengths), pick(fin.scores)
    alphas = None
    if attention:
        orig = torch.arange(b0, device=dev)[:, None].expand(b0, order.shape[1]).reshape(-1)  # (B0 * n,)
        flat = history.assemble(orig, (lengths - 1).reshape(-1), pick(fin.last_beam).reshape(-1), n)
        alphas = flat.view(b0, order.shape[1], -1, n)  # (B0 * n, L', N) -> (B0, n, L', N)
    return to_hypotheses(tokens, lengths, scores, alphas, ctx.lengths, n_best)
