"""Attention over a set of context vectors, with K queries per input.

Queries come as (B, K, Hq): K = 1 in teacher forcing and greedy search, K = beam size in
beam search. The context is never copied K times: keys are projected once per input
(``precompute``) and every step scores all K queries of an input against them.

Every attention has the same interface, so the decoder and search never ask which one
they hold::

    keys = att.precompute(vectors)                  # (B, N, A), once per input
    state = att.init_state(mask, k)                 # dict of (B, K, ...) tensors ({} if stateless)
    context, alpha, state = att(query, vectors, keys, mask, state)

The state is part of the decoder's flat state dict, so beam search reorders it with the
rest. Location-aware attention keeps the previous alignment there.

Every attention gives a distribution ``alpha`` over the positions and its expectation as the
context (soft attention). Hard attention (Show, Attend and Tell) reads one position instead,
drawn from ``alpha`` (``sample_positions``) or its peak; the decoder makes that choice
(``Decoder(attention_mode="hard")``), so it works with every attention here.

Additive attention's score v . tanh(k_n + q) is elementwise work over (B, K, N, A): in
eager PyTorch each of add, tanh and the product with v is a pass over a tensor of that
size (128 MB at 64 inputs x 5 beams x 196 positions x 512), so the score costs more than
all the decoder's matrix products together. ``fused=True`` runs it as one loop
compiled by ``torch.compile`` instead, which never writes that tensor (``fused_score``).
"""
from __future__ import annotations

import logging
import math
import warnings

import torch
from torch import Tensor, nn

from mmdesc.errors import MmdescWarning


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last axis of ``scores`` (B, K, N) where ``mask`` (B, N) is True."""
    scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


def additive_score(keys: Tensor, q: Tensor, v: Tensor) -> Tensor:
    """keys (B, N, A), queries (B, K, A), v (A,) -> scores (B, K, N) = v . tanh(keys + q)."""
    x = keys[:, None, :, :] + q[:, :, None, :]  # (B, K, N, A)
    return (x.tanh_() @ v[:, None]).squeeze(-1)  # tanh in place: one tensor of that size, not two


def _fusable_score(keys: Tensor, q: Tensor, v: Tensor) -> Tensor:
    # tanh(x) = 2 sigmoid(2x) - 1: inductor's CPU code for sigmoid is ~3x faster than its
    # tanh, and the gradient (through sigmoid's output) stays finite where exp overflows.
    x = keys[:, None, :, :] + q[:, :, None, :]
    return ((torch.sigmoid(2.0 * x) * 2.0 - 1.0) * v).sum(-1)


_compiled = None  # the compiled score, made on first use; False once compiling has failed


def fused_score(keys: Tensor, q: Tensor, v: Tensor) -> Tensor:
    """``additive_score`` compiled into one loop over (B, K, N) with the A-sum inside.

    Equal to it up to float rounding (~1e-6 relative). Shapes are dynamic, so a new batch
    or beam size does not recompile. The first call compiles (seconds; cached on disk
    by torch afterwards); where compiling is impossible (on CPU it needs a C++ compiler)
    it warns once and falls back to ``additive_score``."""
    global _compiled
    if _compiled is None:
        # compiling on a CPU-only machine logs "No CUDA runtime is found" once: not news
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        _compiled = torch.compile(_fusable_score, dynamic=True)
    if _compiled is False:
        return additive_score(keys, q, v)
    try:
        return _compiled(keys, q, v)
    except torch._dynamo.exc.TorchDynamoException as err:
        _compiled = False
        reason = str(err).strip().splitlines()[0][:200]
        warnings.warn(f"cannot compile the fused attention score, using the eager one: {reason}",
                      MmdescWarning, stacklevel=2)
        return additive_score(keys, q, v)


def attend(alpha: Tensor, vectors: Tensor) -> Tensor:
    """alpha (B, K, N), vectors (B, N, D) -> context (B, K, D)."""
    return torch.bmm(alpha.to(vectors.dtype), vectors)  # (B, K, N) @ (B, N, D) -> (B, K, D)


def sample_positions(alpha: Tensor, mask: Tensor) -> Tensor:
    """One position per query drawn from its attention: alpha (B, K, N) -> indices (B, K).

    Show-Attend-Tell's hard attention. A position outside ``mask`` (B, N) is never drawn,
    whatever ``alpha`` holds there. Draws from torch's global generator, so a seeded run
    (and a resumed one, whose RNG state the checkpoint holds) draws the same positions."""
    p = alpha.detach().float().masked_fill(~mask[:, None, :], 0.0)  # (B, K, N)
    b, k, n = p.shape
    return torch.multinomial(p.reshape(b * k, n), 1).view(b, k)  # (B*K, N) -> (B*K, 1) -> (B, K)


def gather_positions(vectors: Tensor, index: Tensor) -> Tensor:
    """vectors (B, N, D), index (B, K) -> the indexed vectors (B, K, D)."""
    return vectors.gather(1, index[:, :, None].expand(-1, -1, vectors.shape[-1]))  # (B, K) -> (B, K, D)


class MLPAttention(nn.Module):
    """Additive attention (Bahdanau et al. 2015): e = v . tanh(W_c c + W_q q).

    ``fused``: score through ``fused_score`` (torch.compile) rather than eager PyTorch."""

    def __init__(self, ctx_dim: int, query_dim: int, att_dim: int):
        super().__init__()
        self.key = nn.Linear(ctx_dim, att_dim, bias=True)
        self.query = nn.Linear(query_dim, att_dim, bias=False)
        self.score = nn.Linear(att_dim, 1, bias=False)
        self.fused = False

    def precompute(self, vectors: Tensor) -> Tensor:
        """(B, N, D) -> keys (B, N, A), computed once per input."""
        return self.key(vectors)

    def init_state(self, mask: Tensor, k: int) -> dict[str, Tensor]:
        return {}

    def forward(self, query: Tensor, vectors: Tensor, keys: Tensor, mask: Tensor,
                state: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """query (B, K, Hq) -> context (B, K, D), alpha (B, K, N), state (unchanged: none)."""
        q = self.query(query)  # (B, K, A)
        e = (fused_score if self.fused else additive_score)(keys, q, self.score.weight[0])  # (B, K, N)
        alpha = masked_softmax(e, mask)
        return attend(alpha, vectors), alpha, {}


class DotAttention(nn.Module):
    """Scaled dot-product ("general") attention: e = (W_q q) . (W_c c) / sqrt(A)."""

    def __init__(self, ctx_dim: int, query_dim: int, att_dim: int):
        super().__init__()
        self.key = nn.Linear(ctx_dim, att_dim, bias=False)
        self.query = nn.Linear(query_dim, att_dim, bias=False)
        self.scale = 1.0 / math.sqrt(att_dim)
        self.fused = False  # two matrix products already: nothing to fuse

    def precompute(self, vectors: Tensor) -> Tensor:
        return self.key(vectors)  # (B, N, A)

    def init_state(self, mask: Tensor, k: int) -> dict[str, Tensor]:
        return {}

    def forward(self, query: Tensor, vectors: Tensor, keys: Tensor, mask: Tensor,
                state: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        q = self.query(query) * self.scale  # (B, K, A)
        e = torch.bmm(q, keys.transpose(1, 2))  # (B, K, A) @ (B, A, N) -> (B, K, N)
        alpha = masked_softmax(e, mask)
        return attend(alpha, vectors), alpha, {}


class LocationAttention(nn.Module):
    """Location-aware attention (Chorowski et al. 2015): additive attention whose score also
    sees a convolution of the previous step's alignment,
    e_n = v . tanh(W_c c_n + W_q q + U (F * alpha_prev)_n).

    The previous alignment is the attention's state (``"att_prev"``, (B, K, N)); the first one
    is uniform over the real positions. It steers the alignment to move on from where it was,
    which keeps it monotonic over long sequences (speech). ``channels`` filters of width
    ``kernel`` (odd) run along the N positions in their layout order. The score is eager
    PyTorch: the (B, K, N, A) location term exists anyway, so ``fused`` has nothing to save.
    """

    STATE = "att_prev"

    def __init__(self, ctx_dim: int, query_dim: int, att_dim: int, channels: int = 8, kernel: int = 15):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"location kernel must be odd and positive, got {kernel}")
        self.key = nn.Linear(ctx_dim, att_dim, bias=True)
        self.query = nn.Linear(query_dim, att_dim, bias=False)
        self.conv = nn.Conv1d(1, channels, kernel, padding=kernel // 2, bias=False)
        self.loc = nn.Linear(channels, att_dim, bias=False)
        self.score = nn.Linear(att_dim, 1, bias=False)
        self.fused = False

    def precompute(self, vectors: Tensor) -> Tensor:
        return self.key(vectors)  # (B, N, A)

    def init_state(self, mask: Tensor, k: int) -> dict[str, Tensor]:
        """A uniform alignment over each input's real positions, (B, K, N)."""
        m = mask.to(torch.float32)
        uniform = m / m.sum(1, keepdim=True).clamp(min=1.0)  # (B, N)
        return {self.STATE: uniform[:, None, :].expand(-1, k, -1).contiguous()}  # (B, N) -> (B, K, N)

    def forward(self, query: Tensor, vectors: Tensor, keys: Tensor, mask: Tensor,
                state: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        prev = state[self.STATE]  # (B, K, N)
        b, k, n = prev.shape
        f = self.conv(prev.reshape(b * k, 1, n).to(keys.dtype))  # (B*K, 1, N) -> (B*K, C, N)
        loc = self.loc(f.transpose(1, 2)).view(b, k, n, -1)  # (B*K, N, C) -> (B, K, N, A)
        q = self.query(query)  # (B, K, A)
        x = loc.add_(keys[:, None, :, :]).add_(q[:, :, None, :])  # (B, K, N, A), in place
        e = (x.tanh_() @ self.score.weight[0][:, None]).squeeze(-1)  # (B, K, N, A) @ (A, 1) -> (B, K, N)
        alpha = masked_softmax(e, mask)
        return attend(alpha, vectors), alpha, {self.STATE: alpha.float()}


ATTENTIONS = {"mlp": MLPAttention, "dot": DotAttention, "location": LocationAttention}
