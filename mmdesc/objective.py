"""The training objective: named, weighted terms, composed in one place and each logged.

    objective = Objective(label_smoothing=0.1, ds_penalty=1.0, ctc=0.3)
    loss, terms = objective(model, batch, inputs, outputs)   # terms: {"xent": ..., "ds": ..., "ctc": ...}

Terms (the recipe's ``loss:`` section gives their weights):

``xent``  cross-entropy of the decoder's words against the targets, with label smoothing;
``ds``    Show-Attend-Tell's doubly-stochastic penalty sum_n (1 - sum_t alpha_tn)^2: every
          real position should be attended about once over the sentence (weight ``ds_penalty``);
``ctc``   connectionist temporal classification of the target tokens straight from the
          encoder's context vectors through a linear head (Kim et al. 2017's joint CTC-attention
          training): blank = the padding id, input lengths from the ContextSet mask, impossible
          alignments (fewer positions than tokens) count zero (``zero_infinity``).

With ``ctc = w`` the total is ``(1 - w) * xent + w * ctc + ds_penalty * ds`` (the joint
CTC-attention convention); without it, ``xent + ds_penalty * ds``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdesc.contexts import ContextSet
from mmdesc.tokenize import EOS, PAD


def doubly_stochastic_penalty(alphas: Tensor, target_mask: Tensor, ctx_mask: Tensor) -> Tensor:
    """Show-Attend-Tell's (1 - sum_t alpha_tn)^2, averaged over the real positions n and the batch.

    alphas (B, T, N); target_mask (B, T) real output steps; ctx_mask (B, N) real positions."""
    total = (alphas * target_mask.unsqueeze(-1)).sum(1)  # (B, T, N) -> (B, N)
    per_input = (((1.0 - total) ** 2) * ctx_mask).sum(1) / ctx_mask.sum(1).clamp(min=1)  # (B,)
    return per_input.mean()


def ctc_loss(logits: Tensor, ctx: ContextSet, outputs: Tensor) -> Tensor:
    """CTC of the target tokens (``outputs`` (B, T) without EOS and padding) given per-position
    logits (B, N, V) over the context; mean over the batch of the per-token loss."""
    logprobs = torch.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (B, N, V) -> (N, B, V)
    real = (outputs != PAD) & (outputs != EOS)  # (B, T)
    targets = outputs[real]  # (sum of target lengths,)
    return F.ctc_loss(logprobs, targets, ctx.lengths, real.sum(1), blank=PAD,
                      reduction="mean", zero_infinity=True)


class Objective:
    """The weighted sum of the terms above; ``__call__`` runs the model in teacher forcing."""

    # What each term is a mean over within a batch ("tokens" or "inputs"; a term not named here:
    # inputs). A step whose batch is split over processes or micro-batches weighs each part's
    # terms by its share of these, so that it follows the gradient of the whole batch.
    MEAN_OVER = {"xent": "tokens"}

    def __init__(self, label_smoothing: float = 0.0, ds_penalty: float = 0.0, ctc: float = 0.0):
        if not 0.0 <= ctc < 1.0:
            raise ValueError(f"ctc weight must be in [0, 1), got {ctc}")
        self.label_smoothing, self.ds_penalty, self.ctc = label_smoothing, ds_penalty, ctc

    @property
    def names(self) -> list[str]:
        """The terms this objective computes, in the order they are logged."""
        return ["xent"] + (["ds"] if self.ds_penalty > 0 else []) + (["ctc"] if self.ctc > 0 else [])

    def __call__(self, model, batch: dict, inputs: Tensor, outputs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """inputs/outputs (B, T) teacher-forcing tensors -> (total loss, {term: value})."""
        logits, alphas, ctx = model(batch, inputs)
        terms = {"xent": F.cross_entropy(logits.float().flatten(0, 1), outputs.flatten(), ignore_index=PAD,
                                         label_smoothing=self.label_smoothing)}  # (B*T, V) vs (B*T,)
        if self.ds_penalty > 0:
            terms["ds"] = doubly_stochastic_penalty(alphas.float(), (outputs != PAD).float(), ctx.mask.float())
        if self.ctc > 0:
            if getattr(model, "ctc_head", None) is None:
                raise ValueError("the CTC term needs a model built with a CTC head (loss.ctc > 0 in the recipe)")
            terms["ctc"] = ctc_loss(model.ctc_head(ctx.vectors), ctx, outputs)  # (B, N, D) -> (B, N, V)
        return self.combine(terms), terms

    def combine(self, terms: dict[str, Tensor]) -> Tensor:
        """The total loss from its named terms (those ``__call__`` returns, or parts of them)."""
        total = terms["xent"] * (1.0 - self.ctc)
        if "ds" in terms:
            total = total + self.ds_penalty * terms["ds"]
        if "ctc" in terms:
            total = total + self.ctc * terms["ctc"]
        return total
