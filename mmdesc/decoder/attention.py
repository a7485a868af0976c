"""Attention over a set of context vectors, with K queries per input.

Queries come as (B, K, Hq): K = 1 in teacher forcing and greedy search, K = beam size in
beam search. The context is never copied K times: keys are projected once per input
(``precompute``) and every step scores all K queries of an input against them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last axis of ``scores`` (B, K, N) where ``mask`` (B, N) is True."""
    scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


class MLPAttention(nn.Module):
    """Additive attention (Bahdanau et al. 2015): e = v . tanh(W_c c + W_q q)."""

    def __init__(self, ctx_dim: int, query_dim: int, att_dim: int):
        super().__init__()
        self.key = nn.Linear(ctx_dim, att_dim, bias=True)
        self.query = nn.Linear(query_dim, att_dim, bias=False)
        self.score = nn.Linear(att_dim, 1, bias=False)

    def precompute(self, vectors: Tensor) -> Tensor:
        """(B, N, D) -> keys (B, N, A), computed once per input."""
        return self.key(vectors)

    def forward(self, query: Tensor, vectors: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, K, Hq) -> context (B, K, D), alpha (B, K, N)."""
        q = self.query(query)  # (B, K, A)
        e = self.score(torch.tanh(keys[:, None, :, :] + q[:, :, None, :])).squeeze(-1)  # (B, K, N, A) -> (B, K, N)
        alpha = masked_softmax(e, mask)
        return torch.bmm(alpha, vectors), alpha  # (B, K, N) @ (B, N, D) -> (B, K, D)


class DotAttention(nn.Module):
    """Scaled dot-product ("general") attention: e = (W_q q) . (W_c c) / sqrt(A)."""

    def __init__(self, ctx_dim: int, query_dim: int, att_dim: int):
        super().__init__()
        self.key = nn.Linear(ctx_dim, att_dim, bias=False)
        self.query = nn.Linear(query_dim, att_dim, bias=False)
        self.scale = 1.0 / math.sqrt(att_dim)

    def precompute(self, vectors: Tensor) -> Tensor:
        return self.key(vectors)  # (B, N, A)

    def forward(self, query: Tensor, vectors: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        q = self.query(query) * self.scale  # (B, K, A)
        e = torch.bmm(q, keys.transpose(1, 2))  # (B, K, A) @ (B, A, N) -> (B, K, N)
        alpha = masked_softmax(e, mask)
        return torch.bmm(alpha, vectors), alpha


ATTENTIONS = {"mlp": MLPAttention, "dot": DotAttention}
