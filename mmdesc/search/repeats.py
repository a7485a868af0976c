"""Keeping hypotheses from repeating themselves: n-gram blocking and a repetition penalty.

Both look at each hypothesis's tokens so far (``history`` (B, K, t), without BOS) and change
the log-probabilities of the next token (B, K, V) before the search picks from them; both
are tensor-only over all inputs, beams and history positions at once.

- ``block_ngrams(n)``: a token that would complete an n-gram already in the hypothesis gets
  -inf (fairseq's and Hugging Face's ``no_repeat_ngram_size``); n = 1 forbids any token twice.
- ``penalize_repeats(penalty)``: a token already in the hypothesis has its log-probability
  multiplied by ``penalty`` (p -> p ** penalty: CTRL's repetition penalty as Hugging Face
  applies it to the log-probabilities of beam search). > 1 discourages repeats, 1 is off.
  The hypothesis's score is the sum of these adjusted log-probabilities.
"""
from __future__ import annotations

import torch
from torch import Tensor


def block_ngrams(logprobs: Tensor, history: Tensor, n: int) -> Tensor:
    """-inf (in place) for every token that would repeat an n-gram of ``history``.

    logprobs (B, K, V), history (B, K, t). The last n - 1 tokens are compared with every
    earlier window of n - 1 tokens; the token that followed a matching window is banned."""
    t = history.shape[-1]
    if n <= 0 or t < n:
        return logprobs
    windows = history.unfold(-1, n, 1)  # (B, K, t) -> (B, K, t - n + 1, n)
    prefix = history[..., t - n + 1:]  # (B, K, n - 1)
    match = (windows[..., :-1] == prefix[..., None, :]).all(dim=-1)  # (B, K, W)
    hits = torch.zeros_like(logprobs).scatter_add_(-1, windows[..., -1], match.to(logprobs.dtype))  # (B, K, V)
    return logprobs.masked_fill_(hits > 0, float("-inf"))


def penalize_repeats(logprobs: Tensor, history: Tensor, penalty: float) -> Tensor:
    """Multiply the log-probability of every token already in ``history`` by
    ``penalty``. logprobs (B, K, V), history (B, K, t)."""
    if penalty == 1.0 or history.shape[-1] == 0:
        return logprobs
    seen = torch.zeros_like(logprobs, dtype=torch.bool).scatter_(-1, history, True)  # (B, K, V)
    return torch.where(seen, logprobs * penalty, logprobs)


def discourage_repeats(logprobs: Tensor, history: Tensor, no_repeat_ngram: int, repetition_penalty: float) -> Tensor:
    """Both of the above, as the search options ask."""
    logprobs = penalize_repeats(logprobs, history, repetition_penalty)
    return block_ngrams(logprobs, history, no_repeat_ngram)
