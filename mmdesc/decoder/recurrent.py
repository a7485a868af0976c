"""The shared attention decoder: a conditional GRU or a Show-Attend-Tell LSTM.

The decoder reads any ContextSet. Its step API is all that search needs::

    pctx = decoder.prepare(ctx)             # once per input: keys of the attention
    state = decoder.init_state(pctx, k)     # flat dict of (B, K, ...) tensors
    logprobs, state, alpha = decoder.step(pctx, y, state)   # y (B, K) -> (B, K, V), ..., (B, K, N)

The state holds the recurrence (``h``, and ``m`` for the LSTM) and whatever the attention
keeps between steps (location-aware attention: the previous alignment); search reorders
every entry the same way without knowing what it holds.

``forward`` is teacher forcing over the same cells; the parts that do not depend on the
recurrence (embeddings, input projections, the deep output and vocabulary projection)
are computed for all time steps at once.

cell="gru": conditional GRU (Sennrich et al. 2017; Bahdanau et al. 2015):
    s' = GRU1(E y_prev, s);  c, alpha = att(s', ctx);  s = GRU2(c, s')
cell="lstm": Show, Attend and Tell (Xu et al. 2015):
    c, alpha = att(h, ctx);  [c = beta * c];  h, m = LSTM([E y_prev; c], (h, m))
Both emit through a deep output: logits = W_v tanh(W_s s + W_e E y_prev + W_c c).

attention_mode="hard": Show, Attend and Tell's stochastic hard attention. While training,
the context c is the vector at one position drawn from alpha (never a masked one), not
alpha's expectation; ``forward(..., positions=True)`` returns the drawn positions, from
which the objective's REINFORCE term trains the attention (mmdesc/objective.py: nothing
else reaches the attention's weights, as the drawn vector does not depend on them).
``hard_mix``: the share of sequences that read the expectation instead (SAT used 0.5).
``reward_baseline`` (a buffer, so checkpoints and resuming keep it) is the moving average
of the reward that the objective keeps: one number, or with ``hard_baseline="token"`` one
per target token (vocab_size,). At test time (``eval()``) every model reads
``attend``: the expectation (soft, the default) or the most attended vector ("argmax").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdesc.contexts import ContextSet
from mmdesc.decoder.attention import ATTENTIONS, gather_positions, sample_positions

State = dict[str, Tensor]


@dataclass
class PreparedContext:
    """A ContextSet plus its attention keys, prepared once per input for all steps."""

    vectors: Tensor  # (B, N, D)
    mask: Tensor  # (B, N)
    keys: Tensor  # (B, N, A)

    def select(self, index: Tensor) -> "PreparedContext":
        return PreparedContext(self.vectors.index_select(0, index), self.mask.index_select(0, index),
                               self.keys.index_select(0, index))


def gru_update(gi: Tensor, h: Tensor, gh: Tensor) -> Tensor:
    """One GRU update given the input part ``gi`` = W_ih x + b_ih (..., 3H), state h (..., H)
    and its part ``gh`` = W_hh h + b_hh (..., 3H)."""
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)


def lstm_update(gi: Tensor, gh: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM update given the input part ``gi`` (..., 4H) and the state's part ``gh``
    = W_hh h + b_hh (..., 4H); returns (h, m)."""
    gates = gi + gh  # (..., 4H)
    i, f, g, o = gates.chunk(4, dim=-1)
    m = torch.sigmoid(f) * m + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(m), m


class Decoder(nn.Module):
    """Attention decoder over a set of context vectors of size ``ctx_dim``."""

    def __init__(self, vocab_size: int, ctx_dim: int, cell: str = "gru", attention: str = "mlp",
                 emb: int = 128, hidden: int = 256, att: int = 128, out: int = 128, dropout: float = 0.1,
                 tied: bool = False, gate: bool = False, init: str = "mean", pad: int = 0,
                 location_channels: int = 8, location_kernel: int = 15, attention_mode: str = "soft",
                 hard_mix: float = 0.0, key_dim: int | None = None, hard_baseline: str = "scalar"):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell {cell!r} is not one of {{gru, lstm}}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention {attention!r} is not one of {{{', '.join(ATTENTIONS)}}}")
        if tied and out != emb:
            raise ValueError(f"tied embeddings need out == emb, got out={out}, emb={emb}")
        if attention_mode not in ("soft", "hard"):
            raise ValueError(f"attention_mode {attention_mode!r} is not one of {{soft, hard}}")
        if not 0.0 <= hard_mix <= 1.0:
            raise ValueError(f"hard_mix must be in [0, 1], got {hard_mix}")
        self.attention_mode, self.hard_mix = attention_mode, hard_mix
        self.attend = "expectation"  # at test time: or "argmax" (set_attend)
        if hard_baseline not in ("scalar", "token"):
            raise ValueError(f"hard_baseline {hard_baseline!r} is not one of {{scalar, token}}")
        if attention_mode == "hard":  # NaN until the objective sees its first batch (token: each token)
            shape = (vocab_size,) if hard_baseline == "token" else ()
            self.register_buffer("reward_baseline", torch.full(shape, float("nan")))
        self.cell, self.hidden, self.ctx_dim, self.vocab_size = cell, hidden, ctx_dim, vocab_size
        self.use_gate, self.init_mode = gate, init
        self.embed = nn.Embedding(vocab_size, emb, padding_idx=pad)
        self.drop = nn.Dropout(dropout)
        extra = {"channels": location_channels, "kernel": location_kernel} if attention == "location" else {}
        # the attention scores the context's keys where its encoder gives them (key_dim), else its vectors
        self.att = ATTENTIONS[attention](key_dim or ctx_dim, hidden, att, **extra)
        n_gates = 3 if cell == "gru" else 4
        # input weights of the first recurrence split into the embedding part (precomputable
        # over all steps in teacher forcing) and, for the LSTM, the context part
        self.w_e = nn.Linear(emb, n_gates * hidden)
        self.w_hh = nn.Parameter(torch.empty(n_gates * hidden, hidden))
        self.b_hh = nn.Parameter(torch.zeros(n_gates * hidden))
        if cell == "gru":
            self.w_c2 = nn.Linear(ctx_dim, 3 * hidden)  # second GRU: input is the context
            self.w_hh2 = nn.Parameter(torch.empty(3 * hidden, hidden))
            self.b_hh2 = nn.Parameter(torch.zeros(3 * hidden))
        else:
            self.w_c = nn.Linear(ctx_dim, 4 * hidden, bias=False)
            self.init_m = nn.Linear(ctx_dim, hidden)
        self.init_h = nn.Linear(ctx_dim, hidden)
        self.gate = nn.Linear(hidden, 1) if gate else None
        self.out_s = nn.Linear(hidden, out)
        self.out_e = nn.Linear(emb, out, bias=False)
        self.out_c = nn.Linear(ctx_dim, out, bias=False)
        self.proj = nn.Linear(out, vocab_size)
        if tied:
            self.proj.weight = self.embed.weight
        self.hidden_layers: nn.ModuleDict | None = None  # set by mmdesc.precision (int8): W_hh h + b_hh as layers
        self.graphs = None  # set by mmdesc.graphs: the step replayed as CUDA graphs
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w in [self.w_hh] + ([self.w_hh2] if self.cell == "gru" else []):
            for chunk in w.data.chunk(w.shape[0] // self.hidden, dim=0):
                nn.init.orthogonal_(chunk)
        if self.cell == "lstm":  # forget-gate bias 1
            self.b_hh.data[self.hidden:2 * self.hidden].fill_(1.0)

    def fuse_attention(self, enabled: bool = True) -> "Decoder":
        """Score additive attention with one compiled loop (``attention.fused_score``).

        Pays off most in training, whose backward pass the eager score doubles: on the classic
        sizes, teacher forcing + backward at batch 32 x 8 steps takes 0.8 s instead of 1.2 s
        (one thread). In decoding the eager score is already blocked and cache-resident
        (``attention.additive_score``), and the compiled one saves 10-20% of the attention
        (64 inputs x 5 beams x 196 positions: ~45 against ~50 ms); the first call waits
        seconds for the compiler."""
        self.att.fused = enabled
        return self

    def recurrent_weights(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The recurrences' own (W_hh, b_hh), by name: what ``hidden_layers`` may stand in for."""
        names = ("w_hh", "w_hh2") if self.cell == "gru" else ("w_hh",)
        return {n: (getattr(self, n), getattr(self, "b" + n[1:])) for n in names}

    def _hidden(self, h: Tensor, name: str) -> Tensor:
        """W_hh h + b_hh of the recurrence ``name`` (``w_hh`` or the GRU's ``w_hh2``): (..., H) -> (..., G)."""
        if self.hidden_layers is not None:
            return self.hidden_layers[name](h)
        return F.linear(h, getattr(self, name), getattr(self, "b" + name[1:]))

    def set_attend(self, attend: str) -> "Decoder":
        """What the context is at test time: the attention's expectation ("expectation") or the
        vector at its peak ("argmax", hard attention's deterministic reading)."""
        if attend not in ("expectation", "argmax"):
            raise ValueError(f"attend {attend!r} is not one of {{expectation, argmax}}")
        self.attend = attend
        return self

    def _pick(self, pctx: PreparedContext, c: Tensor, alpha: Tensor,
              soft: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The context the recurrence reads, given the expectation ``c`` (B, K, D) and ``alpha``
        (B, K, N): ``c`` itself, or the vector at a drawn position (hard attention, training) or
        at the peak (``attend="argmax"``, test time). Returns it and the drawn positions (B, K),
        -1 where a sequence of ``soft`` (B,) read the expectation; None when nothing was drawn."""
        if self.training and self.attention_mode == "hard":
            drawn = sample_positions(alpha, pctx.mask)  # (B, K)
            picked = gather_positions(pctx.vectors, drawn)  # (B, K, D)
            if soft is None:
                return picked, drawn
            return torch.where(soft[:, None, None], c, picked), drawn.masked_fill(soft[:, None], -1)
        if not self.training and self.attend == "argmax":
            return gather_positions(pctx.vectors, alpha.argmax(-1)), None
        return c, None

    # --- the step API ---------------------------------------------------------------
    def prepare(self, ctx: ContextSet) -> PreparedContext:
        """Project the context's attention keys (``ContextSet.scored``) once per input."""
        return PreparedContext(ctx.vectors, ctx.mask, self.att.precompute(ctx.scored))

    def init_state(self, pctx: PreparedContext, k: int = 1) -> State:
        """Initial state: (B, K, H) from the mean of the real context vectors (or zeros), and the
        attention's own entries."""
        b = pctx.vectors.shape[0]
        m = pctx.mask.unsqueeze(1).to(pctx.vectors.dtype)  # (B, 1, N)
        mean = torch.bmm(m, pctx.vectors).squeeze(1) / m.sum(2).clamp(min=1.0)  # (B, 1, N) @ (B, N, D) -> (B, D)
        if self.init_mode == "zero":
            mean = torch.zeros_like(mean)
        state = {"h": torch.tanh(self.init_h(mean))}
        if self.cell == "lstm":
            state["m"] = torch.tanh(self.init_m(mean))
        state = {name: s[:, None, :].expand(b, k, self.hidden).contiguous() for name, s in state.items()}
        return {**state, **self.att.init_state(pctx.mask, k)}

    def _recur(self, pctx: PreparedContext, gi: Tensor, state: State,
               soft: Tensor | None = None) -> tuple[State, Tensor, Tensor, Tensor | None]:
        """One recurrence given the embedding part ``gi`` (B, K, G) of the input gates.

        Returns the new state, the (gated) context (B, K, D), alpha (B, K, N) and the positions
        hard attention drew (B, K) or None (``_pick``)."""
        h = state["h"]
        if self.cell == "gru":
            h1 = gru_update(gi, h, self._hidden(h, "w_hh"))
            c, alpha, att_state = self.att(h1, pctx.vectors, pctx.keys, pctx.mask, state)
            c, drawn = self._pick(pctx, c, alpha, soft)
            if self.gate is not None:
                c = torch.sigmoid(self.gate(h1)) * c
            h2 = gru_update(self.w_c2(c), h1, self._hidden(h1, "w_hh2"))
            return {"h": h2, **att_state}, c, alpha, drawn
        c, alpha, att_state = self.att(h, pctx.vectors, pctx.keys, pctx.mask, state)
        c, drawn = self._pick(pctx, c, alpha, soft)
        if self.gate is not None:
            c = torch.sigmoid(self.gate(h)) * c
        h2, m2 = lstm_update(gi + self.w_c(c), self._hidden(h, "w_hh"), state["m"])
        return {"h": h2, "m": m2, **att_state}, c, alpha, drawn

    def _logits(self, s: Tensor, e: Tensor, c: Tensor) -> Tensor:
        """Deep output: (..., H), (..., E), (..., D) -> (..., V)."""
        o = torch.tanh(self.out_s(s) + self.out_e(e) + self.out_c(c))
        return self.proj(self.drop(o))

    def step(self, pctx: PreparedContext, y: Tensor, state: State) -> tuple[Tensor, State, Tensor]:
        """y (B, K) previous tokens -> float32 log-probabilities (B, K, V), new state, alpha (B, K, N)."""
        if self.graphs is not None:
            return self.graphs(pctx, y, state)
        return self.eager_step(pctx, y, state)

    def eager_step(self, pctx: PreparedContext, y: Tensor, state: State) -> tuple[Tensor, State, Tensor]:
        """``step`` as PyTorch runs it op by op (what a CUDA graph records)."""
        e = self.drop(self.embed(y))  # (B, K, E)
        state, c, alpha, _ = self._recur(pctx, self.w_e(e), state)
        logprobs = torch.log_softmax(self._logits(state["h"], e, c).float(), dim=-1)
        return logprobs, state, alpha

    # --- teacher forcing ----------------------------------------------------------------
    def forward(self, ctx: ContextSet, inputs: Tensor, positions: bool = False):
        """inputs (B, T) = BOS + target[:-1] -> logits (B, T, V), alphas (B, T, N).

        ``positions=True``: also the positions (B, T) hard attention drew while training (-1
        in the sequences that read the expectation, ``hard_mix``), or None when none were."""
        pctx = self.prepare(ctx)
        state = self.init_state(pctx, 1)
        e = self.drop(self.embed(inputs))  # (B, T, E)
        gi = self.w_e(e)  # (B, T, G) for all steps at once
        soft = None
        if self.training and self.attention_mode == "hard" and self.hard_mix > 0:
            soft = torch.rand(inputs.shape[0], device=inputs.device) < self.hard_mix  # (B,)
        hs, cs, alphas, drawn = [], [], [], []
        for t in range(inputs.shape[1]):
            state, c, alpha, d = self._recur(pctx, gi[:, t:t + 1], state, soft)  # K = 1
            hs.append(state["h"])
            cs.append(c)
            alphas.append(alpha)
            drawn.append(d)
        s = torch.cat(hs, dim=1)  # T x (B, 1, H) -> (B, T, H)
        logits = self._logits(s, e, torch.cat(cs, dim=1))  # (B, T, V)
        alphas = torch.cat(alphas, dim=1)  # (B, T, N)
        if not positions:
            return logits, alphas
        return logits, alphas, (torch.cat(drawn, dim=1) if drawn and drawn[0] is not None else None)  # (B, T)
