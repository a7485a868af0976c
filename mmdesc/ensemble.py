"""Ensembles at decode time: several trained models of one task decode as one.

An ensemble is a ``Describer`` like any other, so search, ``describe`` and ``evaluate`` use it
unchanged:

- ``EnsembleEncoder`` runs every member's encoder on the same batch and puts their context
  vectors side by side in one ContextSet (B, N, D_1 + ... + D_M); the members must read an
  input into the same positions (same mask), which models trained with one recipe on one
  corpus do.
- ``EnsembleDecoder`` has the decoder's step API. ``prepare`` splits the vectors back into
  each member's part; the state is one flat dict holding every member's entries side by
  side (``"0.h"``, ``"1.h"``, ...), so the search reorders them all together when it prunes
  beams, without knowing there are several models. ``step`` returns the **mean of the
  members' log-probabilities** (the log of their geometric mean, unnormalised, as Nematus
  and Marian ensemble), and as the attention the members' mean, or one member's.

The ensemble of a model with itself is that model: the mean of two equal numbers is that
number, exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmdesc.contexts import ContextSet
from mmdesc.errors import CheckpointError


class EnsembleEncoder(nn.Module):
    """Every member's encoder on one batch -> one ContextSet with their vectors side by side."""

    def __init__(self, encoders: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(encoders)
        self.dims = [e.out_dim for e in encoders]
        self.key_dims = [getattr(e, "key_dim", None) or e.out_dim for e in encoders]
        self.out_dim = sum(self.dims)

    def forward(self, batch: dict) -> ContextSet:
        sets = [e(batch) for e in self.members]
        first = sets[0]
        for i, s in enumerate(sets[1:], 1):
            if s.mask.shape != first.mask.shape or not torch.equal(s.mask, first.mask):
                raise CheckpointError(f"ensemble model {i} reads the input into {s.mask.shape[1]} positions, model 0 "
                                      f"into {first.mask.shape[1]} (or masks them differently); an ensemble's models "
                                      f"must see an input the same way")
        vectors = torch.cat([s.vectors for s in sets], dim=-1)  # M x (B, N, D_m) -> (B, N, sum D_m)
        keys = None
        if any(s.keys is not None for s in sets):  # M x (B, N, K_m) -> (B, N, sum K_m)
            keys = torch.cat([s.scored for s in sets], dim=-1)
        return ContextSet(vectors, first.mask, first.layouts, keys)


@dataclass
class EnsembleContext:
    """Each member's prepared context."""

    parts: list

    def select(self, index: Tensor) -> "EnsembleContext":
        return EnsembleContext([p.select(index) for p in self.parts])


class EnsembleDecoder(nn.Module):
    """The members' decoders behind one step API. ``attention``: "mean", or the index of the
    member whose attention is shown."""

    def __init__(self, decoders: list[nn.Module], dims: list[int], attention: str | int = "mean",
                 key_dims: list[int] | None = None):
        super().__init__()
        if attention != "mean" and not (isinstance(attention, int) and 0 <= attention < len(decoders)):
            raise ValueError(f"attention {attention!r} is neither 'mean' nor a model index in [0, {len(decoders) - 1}]")
        self.members = nn.ModuleList(decoders)
        self.dims = list(dims)
        self.key_dims = list(key_dims or dims)
        self.attention = attention
        self.vocab_size = decoders[0].vocab_size

    def fuse_attention(self, enabled: bool = True) -> "EnsembleDecoder":
        for d in self.members:
            d.fuse_attention(enabled)
        return self

    def set_attend(self, attend: str) -> "EnsembleDecoder":
        """Every member reads the context the same way (``Decoder.set_attend``)."""
        for d in self.members:
            d.set_attend(attend)
        return self

    def split(self, ctx: ContextSet) -> list[ContextSet]:
        """Each member's part of the side-by-side vectors (and keys)."""
        parts = ctx.vectors.split(self.dims, dim=-1)  # (B, N, sum D_m) -> M x (B, N, D_m)
        if ctx.keys is None:
            return [ContextSet(v.contiguous(), ctx.mask, ctx.layouts) for v in parts]
        keys = ctx.keys.split(self.key_dims, dim=-1)  # (B, N, sum K_m) -> M x (B, N, K_m); a member
        return [ContextSet(v.contiguous(), ctx.mask, ctx.layouts, k.contiguous())  # without keys: its vectors
                for v, k in zip(parts, keys)]

    def combine_attention(self, alphas: list[Tensor]) -> Tensor:
        if self.attention == "mean":
            return torch.stack(alphas).mean(dim=0)  # M x (B, K, N) -> (B, K, N)
        return alphas[self.attention]

    # --- the step API ---------------------------------------------------------------
    def prepare(self, ctx: ContextSet) -> EnsembleContext:
        return EnsembleContext([d.prepare(c) for d, c in zip(self.members, self.split(ctx))])

    def init_state(self, pctx: EnsembleContext, k: int = 1) -> dict[str, Tensor]:
        return {f"{i}.{name}": s for i, (d, p) in enumerate(zip(self.members, pctx.parts))
                for name, s in d.init_state(p, k).items()}

    def step(self, pctx: EnsembleContext, y: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict, Tensor]:
        """y (B, K) -> the mean of the members' log-probabilities (B, K, V), the new state, alpha (B, K, N)."""
        logprobs, alphas, new = [], [], {}
        for i, (d, p) in enumerate(zip(self.members, pctx.parts)):
            lp, s, alpha = d.step(p, y, own(state, i))
            logprobs.append(lp)
            alphas.append(alpha)
            new.update((f"{i}.{name}", t) for name, t in s.items())
        return torch.stack(logprobs).mean(dim=0), new, self.combine_attention(alphas)  # M x (B, K, V) -> (B, K, V)

    # --- teacher forcing (attention while reading a reference) ------------------------
    def forward(self, ctx: ContextSet, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """inputs (B, T) -> the mean of the members' log-probabilities (B, T, V), alphas (B, T, N)."""
        outs = [d(c, inputs) for d, c in zip(self.members, self.split(ctx))]
        logprobs = torch.stack([torch.log_softmax(lg.float(), dim=-1) for lg, _ in outs]).mean(dim=0)  # (B, T, V)
        return logprobs, self.combine_attention([a for _, a in outs])


def own(state: dict[str, Tensor], i: int) -> dict[str, Tensor]:
    """Member i's entries of the side-by-side state, under their own names."""
    prefix = f"{i}."
    return {name[len(prefix):]: s for name, s in state.items() if name.startswith(prefix)}


def ensemble_model(models: list[nn.Module], attention: str | int = "mean") -> nn.Module:
    """One Describer that decodes with all ``models`` (Describers of one task and tokenizer)."""
    from mmdesc.model import Describer

    encoder = EnsembleEncoder([m.encoder for m in models])
    return Describer(encoder, EnsembleDecoder([m.decoder for m in models], encoder.dims, attention, encoder.key_dims))
