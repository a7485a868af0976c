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
rest. Location-aware attention keeps the previous alignment there, coverage attention the
sum of all earlier ones.

Every attention gives a distribution ``alpha`` over the positions and its expectation as the
context (soft attention). Hard attention (Show, Attend and Tell) reads one position instead,
drawn from ``alpha`` (``sample_positions``) or its peak; the decoder makes that choice
(``Decoder(attention_mode="hard")``), so it works with every attention here.

Additive attention's score v . tanh(k_n + q) is elementwise work over (B, K, N, A), 128 MB
of float32 at 64 inputs x 5 beams x 196 positions x 512. ``additive_score`` computes it in
blocks over inputs and positions that stay in the core's cache (``SCORE_BLOCK`` elements),
so no (B, K, N, A) tensor is ever written and the cost per position stays flat as N grows
(speech: hundreds to thousands of positions), and as 2 v . sigmoid(2x) - sum(v), since
eager tanh on CPU costs six times a sigmoid. ``fused=True`` runs the score as one loop
compiled by ``torch.compile`` instead (``fused_score``).

Scores and the softmax are computed in float32 whatever the weights' dtype (bfloat16 under
``--precision bf16``); ``alpha`` is float32.
"""
from __future__ import annotations

import logging
import math
import warnings

import torch
from torch import Tensor, nn

from mmdesc.errors import MmdescWarning


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax in float32 over the last axis of ``scores`` (B, K, N) where ``mask`` (B, N) is True."""
    scores = scores.float().masked_fill(~mask[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


SCORE_BLOCK = 1 << 17  # elements of one (b, K, n, A) block of the additive score: 512 KB of float32


def additive_score(keys: Tensor, q: Tensor, v: Tensor, loc: Tensor | None = None,
                   loc_weight: Tensor | None = None) -> Tensor:
    """keys (B, N, A), queries (B, K, A), v (A,) -> float32 scores (B, K, N) = v . tanh(keys + q [+ W f]).

    ``loc`` (B, K, C, N) with ``loc_weight`` (A, C): location features of each position, whose
    projection joins the sum (location-aware attention). Computed block by block over inputs
    and positions (``SCORE_BLOCK`` elements each), as v . tanh(x) = 2 v . sigmoid(2x) - sum(v),
    in float32 (at least) whatever the inputs' dtype; the blocks are concatenated, so autograd
    runs through them as through one tensor."""
    b, n, a = keys.shape
    k = q.shape[1]
    dtype = torch.promote_types(q.dtype, torch.float32)
    q2 = q.to(dtype) * 2.0  # (B, K, A)
    v2 = v.to(dtype)[:, None] * 2.0  # (A, 1)
    w2 = None if loc is None else loc_weight.t() * 2.0  # (C, A)
    per_input = k * n * a
    bb, nb = (max(1, SCORE_BLOCK // per_input), n) if per_input <= SCORE_BLOCK else (1, max(1, SCORE_BLOCK // (k * a)))
    rows = []
    for i in range(0, b, bb):
        parts = []
        for s in range(0, n, nb):
            x = torch.add(q2[i:i + bb, :, None, :], keys[i:i + bb, None, s:s + nb, :], alpha=2.0)  # (b, K, n, A)
            if loc is not None:
                x = x.add_(loc[i:i + bb, :, :, s:s + nb].transpose(2, 3) @ w2)  # (b, K, n, C) @ (C, A)
            parts.append((x.sigmoid_() @ v2).squeeze(-1))  # (b, K, n, A) @ (A, 1) -> (b, K, n)
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    return (rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)) - v.to(dtype).sum()


def _fusable_score(keys: Tensor, q: Tensor, v: Tensor, cov: Tensor | None = None,
                   w: Tensor | None = None) -> Tensor:
    # tanh(x) = 2 sigmoid(2x) - 1: inductor's CPU code for sigmoid is ~3x faster than its
    # tanh, and the gradient (through sigmoid's output) stays finite where exp overflows.
    x = keys[:, None, :, :] + q[:, :, None, :]
    if cov is not None:  # coverage attention: (B, K, N) x (A,), a rank-one term
        x = x + cov[..., None].to(x.dtype) * w
    return ((torch.sigmoid(2.0 * x) * 2.0 - 1.0) * v).sum(-1)


_compiled = None  # the compiled score, made on first use; False once compiling has failed


def fused_score(keys: Tensor, q: Tensor, v: Tensor, cov: Tensor | None = None,
                w: Tensor | None = None) -> Tensor:
    """``additive_score`` compiled into one loop over (B, K, N) with the A-sum inside.

    ``cov`` (B, K, N) with ``w`` (A,): a feature of each position, projected into the sum
    (coverage attention; ``additive_score``'s ``loc`` with one channel).

    Equal to it up to float rounding (~1e-6 relative). Shapes are dynamic, so a new batch
    or beam size does not recompile. The first call compiles (seconds; cached on disk
    by torch afterwards); where compiling is impossible (on CPU it needs a C++ compiler)
    it warns once and falls back to ``additive_score``."""
    global _compiled
    if _compiled is None:
        # compiling on a CPU-only machine logs "No CUDA runtime is found" once: not news
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        _compiled = torch.compile(_fusable_score, dynamic=True)

    def eager() -> Tensor:
        if cov is None:
            return additive_score(keys, q, v)
        return additive_score(keys, q, v, cov[:, :, None, :], w[:, None])  # (B, K, 1, N), (A, 1)

    if _compiled is False:
        return eager()
    try:
        return _compiled(keys, q, v, cov, w)
    except torch._dynamo.exc.TorchDynamoException as err:
        _compiled = False
        reason = str(err).strip().splitlines()[0][:200]
        warnings.warn(f"cannot compile the fused attention score, using the eager one: {reason}",
                      MmdescWarning, stacklevel=2)
        return eager()


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

    FLOAT_LAYERS = ("score",)  # its weight is read as a tensor: never replaced by an int8 layer

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
    ``kernel`` (odd) run along the N positions in their layout order. The location term is
    projected block by block inside ``additive_score``, so it never exists as one
    (B, K, N, A) tensor either; ``fused`` is not used.
    """

    STATE = "att_prev"
    FLOAT_LAYERS = ("score", "loc")  # weights read as tensors: never replaced by int8 layers

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
        q = self.query(query)  # (B, K, A)
        e = additive_score(keys, q, self.score.weight[0], f.view(b, k, -1, n), self.loc.weight)  # (B, K, N)
        alpha = masked_softmax(e, mask)
        return attend(alpha, vectors), alpha, {self.STATE: alpha.float()}


class CoverageAttention(nn.Module):
    """Coverage attention (Tu et al. 2016; See et al. 2017): additive attention whose score
    also sees how much attention each position has had so far,
    e_n = v . tanh(W_c c_n + W_q q + w cov_n),   cov_n = sum of alpha_n over the earlier steps.

    The coverage is the attention's state (``"coverage"``, (B, K, N), zero at the start), so
    beam search carries it per hypothesis. It tells the decoder which positions it has
    described already: without it, a caption of a scene's third object can attend the first
    one again and name it twice. Unlike SAT's doubly-stochastic penalty it asks nothing of
    the attention: it is a feature, and the score learns what to do with it (a word can
    still attend where the words before it did, as "large red star" does). Positions keep
    no layout here, so it fits every modality. ``fused`` scores it through ``fused_score``.
    """

    STATE = "coverage"
    FLOAT_LAYERS = ("score", "cover")  # weights read as tensors: never replaced by int8 layers

    def __init__(self, ctx_dim: int, query_dim: int, att_dim: int):
        super().__init__()
        self.key = nn.Linear(ctx_dim, att_dim, bias=True)
        self.query = nn.Linear(query_dim, att_dim, bias=False)
        self.cover = nn.Linear(1, att_dim, bias=False)
        self.score = nn.Linear(att_dim, 1, bias=False)
        self.fused = False

    def precompute(self, vectors: Tensor) -> Tensor:
        return self.key(vectors)  # (B, N, A)

    def init_state(self, mask: Tensor, k: int) -> dict[str, Tensor]:
        """No attention yet: zeros (B, K, N)."""
        return {self.STATE: mask.new_zeros(mask.shape[0], k, mask.shape[1], dtype=torch.float32)}

    def forward(self, query: Tensor, vectors: Tensor, keys: Tensor, mask: Tensor,
                state: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        cov = state[self.STATE]  # (B, K, N)
        q = self.query(query)  # (B, K, A)
        w = self.cover.weight[:, 0]  # (A,)
        if self.fused:
            e = fused_score(keys, q, self.score.weight[0], cov.to(keys.dtype), w)
        else:
            e = additive_score(keys, q, self.score.weight[0], cov.to(keys.dtype)[:, :, None, :], w[:, None])
        alpha = masked_softmax(e, mask)  # (B, K, N)
        return attend(alpha, vectors), alpha, {self.STATE: cov + alpha}


ATTENTIONS = {"mlp": MLPAttention, "dot": DotAttention, "location": LocationAttention,
              "coverage": CoverageAttention}
