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

``reinforce``   hard attention's REINFORCE term (Show, Attend and Tell, Xu et al. 2015, sec. 4.1),
          with a decoder of ``attention_mode="hard"``, which reads the vector at a position
          drawn from the attention, so no gradient of the cross-entropy reaches the attention.
          ``hard_reward: sequence`` (SAT's, the default) rewards every draw of a sequence with the
          log-likelihood of the whole target, ``R_0``; ``to_go`` rewards the position drawn at
          step t with the log-likelihood from that step on, ``R_t = sum_{t' >= t}
          gamma^(t'-t) log p(y_t' | drawn positions)``: a draw cannot change the words before
          it, so in theory leaving them out only removes variance (``hard_discount`` gamma < 1
          trades a little bias for less again). Measured on the image recipe, ``to_go`` learnt
          slower (validation BLEU-4 29 at step 1000 against 45), so it is not the default. The term is
          ``-sum_t (R_t - b_t) log alpha_t(drawn_t)``, summed over the batch and divided by its
          target tokens like ``xent`` (so weight 1 is SAT's lambda_r = 1 against the likelihood's
          own gradient). The baseline b_t is a moving average (decay ``hard_baseline_decay``,
          SAT's 0.9; it starts at the first batch's value) of the reward per target token,
          times the (discounted) number of target tokens R_t sums over, so a long target's lower
          log-likelihood is not taken for a bad draw. It is kept in the decoder's
          ``reward_baseline`` buffer, so checkpoints and resuming keep it. Weight
          ``hard_reinforce``;
``att_entropy`` the entropy of the attention (nats per target step): a bonus, subtracted with
          weight ``hard_entropy`` (SAT's lambda_e), that keeps hard attention exploring.
``att_truth``   supervised attention (Liu et al. 2016, Mi et al. 2016), weight ``attention_truth``:
          the mean over target pieces with ground truth of ``-log`` (their attention's mass
          inside the regions where their word is: a word's spoken span, an object's box),
          from the examples' meta (mmdesc/truth.py). Training batches carry that ground truth
          only when the weight is > 0; any modality whose corpus has it can use it.

With ``ctc = w`` the total is ``(1 - w) * xent + w * ctc + ds_penalty * ds`` (the joint
CTC-attention convention); without it, ``xent + ds_penalty * ds``; with hard attention,
``+ hard_reinforce * reinforce - hard_entropy * att_entropy``; ``+ attention_truth * att_truth``. In eval mode nothing is drawn,
and the hard terms are left out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdesc.contexts import ContextSet
from mmdesc.tokenize import EOS, PAD
from mmdesc.truth import truth_masks, truth_term


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


def attention_entropy(alphas: Tensor, target_mask: Tensor) -> Tensor:
    """Mean entropy (nats) of the attention distributions alphas (B, T, N) over the real output
    steps ``target_mask`` (B, T); masked positions hold 0 and add nothing."""
    a = alphas.float()
    h = -(a * a.clamp(min=1e-30).log()).sum(-1)  # (B, T, N) -> (B, T)
    return (h * target_mask).sum() / target_mask.sum().clamp(min=1)


def reinforce_term(alphas: Tensor, drawn: Tensor, reward: Tensor, baseline: Tensor, n_tokens: Tensor) -> Tensor:
    """The REINFORCE surrogate ``-sum_bt (reward_bt - baseline_bt) * log alpha_bt(drawn_bt)``
    divided by ``n_tokens``; its gradient is the score-function estimate of the gradient of
    -log p(y) with respect to the attention.

    alphas (B, T, N); drawn (B, T) the drawn positions, -1 at steps that drew none (padding,
    sequences that read the expectation); reward and baseline (B, T) are constants (one reward
    per sequence is that reward on every step)."""
    steps = drawn >= 0  # (B, T)
    logp = alphas.float().gather(-1, drawn.clamp(min=0)[..., None]).squeeze(-1).clamp(min=1e-30).log()  # (B, T)
    advantage = (reward - baseline).detach()  # (B, T)
    weighted = torch.where(steps, advantage * logp, torch.zeros_like(logp))  # (B, T)
    return -weighted.sum() / n_tokens.clamp(min=1)


def discounts(t: int, gamma: float, device=None) -> Tensor:
    """(T, T) upper-triangular ``gamma ** (t' - t)`` for t' >= t, else 0: ``x @ discounts(...).T``
    sums each step's discounted future (its reward-to-go) for a (B, T) x."""
    k = torch.arange(t, device=device)
    gap = (k[None, :] - k[:, None]).float()  # (T, T): t' - t
    return torch.where(gap >= 0, torch.full_like(gap, gamma) ** gap.clamp(min=0), torch.zeros_like(gap))


class Objective:
    """The weighted sum of the terms above; ``__call__`` runs the model in teacher forcing.

    ``hard``: the decoder draws its attention (``decoder.attention_mode: hard``), so the
    REINFORCE and entropy terms are computed (weights ``hard_reinforce``, ``hard_entropy``)."""

    # What each term is a mean over within a batch ("tokens" or "inputs"; a term not named here:
    # inputs). A step whose batch is split over processes or micro-batches weighs each part's
    # terms by its share of these, so that it follows the gradient of the whole batch.
    MEAN_OVER = {"xent": "tokens", "reinforce": "tokens", "att_entropy": "tokens", "att_truth": "tokens"}

    def __init__(self, label_smoothing: float = 0.0, ds_penalty: float = 0.0, ctc: float = 0.0,
                 hard_reinforce: float = 1.0, hard_entropy: float = 0.002, hard_baseline_decay: float = 0.9,
                 hard_discount: float = 1.0, hard_reward: str = "sequence", attention_truth: float = 0.0,
                 hard: bool = False):
        if not 0.0 <= ctc < 1.0:
            raise ValueError(f"ctc weight must be in [0, 1), got {ctc}")
        if not 0.0 <= hard_baseline_decay < 1.0:
            raise ValueError(f"hard_baseline_decay must be in [0, 1), got {hard_baseline_decay}")
        self.label_smoothing, self.ds_penalty, self.ctc = label_smoothing, ds_penalty, ctc
        self.hard, self.hard_reinforce, self.hard_entropy = hard, hard_reinforce, hard_entropy
        if not 0.0 <= hard_discount <= 1.0:
            raise ValueError(f"hard_discount must be in [0, 1], got {hard_discount}")
        if hard_reward not in ("sequence", "to_go"):
            raise ValueError(f"hard_reward {hard_reward!r} is not one of {{sequence, to_go}}")
        self.hard_baseline_decay, self.hard_discount, self.hard_reward = hard_baseline_decay, hard_discount, hard_reward
        if attention_truth < 0:
            raise ValueError(f"attention_truth must be >= 0, got {attention_truth}")
        self.attention_truth = attention_truth

    @property
    def names(self) -> list[str]:
        """The terms this objective computes in training, in the order they are logged."""
        return ["xent"] + (["ds"] if self.ds_penalty > 0 else []) + (["ctc"] if self.ctc > 0 else []) + \
            (["reinforce", "att_entropy"] if self.hard else []) + (["att_truth"] if self.attention_truth > 0 else [])

    def __call__(self, model, batch: dict, inputs: Tensor, outputs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """inputs/outputs (B, T) teacher-forcing tensors -> (total loss, {term: value})."""
        logits, alphas, ctx, drawn = model(batch, inputs, positions=True)
        if drawn is not None and not self.hard:
            raise ValueError("the decoder draws its attention (attention_mode hard) but the objective was "
                             "built without hard=True: nothing would train the attention")
        terms = {"xent": F.cross_entropy(logits.float().flatten(0, 1), outputs.flatten(), ignore_index=PAD,
                                         label_smoothing=self.label_smoothing)}  # (B*T, V) vs (B*T,)
        if self.ds_penalty > 0:
            terms["ds"] = doubly_stochastic_penalty(alphas.float(), (outputs != PAD).float(), ctx.mask.float())
        if self.ctc > 0:
            if getattr(model, "ctc_head", None) is None:
                raise ValueError("the CTC term needs a model built with a CTC head (loss.ctc > 0 in the recipe)")
            terms["ctc"] = ctc_loss(model.ctc_head(ctx.vectors), ctx, outputs)  # (B, N, D) -> (B, N, V)
        if self.hard and drawn is not None:
            terms.update(self._hard_terms(model, logits, alphas, drawn, outputs))
        if self.attention_truth > 0 and batch.get("truth") is not None:  # training batches carry it
            mask, supervised = truth_masks(batch["truth"], ctx.layouts, alphas.shape[1], alphas.shape[2])
            terms["att_truth"] = truth_term(alphas, mask, supervised)
        return self.combine(terms), terms

    def combine(self, terms: dict[str, Tensor]) -> Tensor:
        """The total loss from its named terms (those ``__call__`` returns, or parts of them)."""
        total = terms["xent"] * (1.0 - self.ctc)
        if "ds" in terms:
            total = total + self.ds_penalty * terms["ds"]
        if "ctc" in terms:
            total = total + self.ctc * terms["ctc"]
        if "att_truth" in terms:
            total = total + self.attention_truth * terms["att_truth"]
        if "reinforce" in terms:
            total = total + self.hard_reinforce * terms["reinforce"] - self.hard_entropy * terms["att_entropy"]
        return total

    def _hard_terms(self, model, logits: Tensor, alphas: Tensor, drawn: Tensor, outputs: Tensor) -> dict[str, Tensor]:
        """``reinforce`` and ``att_entropy``; moves the decoder's reward baseline on."""
        real = outputs != PAD  # (B, T)
        nll = F.cross_entropy(logits.detach().float().flatten(0, 1), outputs.flatten(), ignore_index=PAD,
                              reduction="none").view(outputs.shape)  # (B*T,) -> (B, T)
        to_go = discounts(outputs.shape[1], self.hard_discount, nll.device)  # (T, T): gamma^(t'-t), t' >= t
        reward = -nll @ to_go.T  # (B, T) R_t, the log-likelihood from step t on
        counted = real.float() @ to_go.T  # (B, T) the (discounted) target tokens R_t sums over
        if self.hard_reward == "sequence":  # SAT's: every draw of a sequence gets the whole R_0
            reward, counted = reward[:, :1].expand_as(reward), counted[:, :1].expand_as(counted)
        drawn = drawn.masked_fill(~real, -1)
        sampled = (drawn >= 0).any(1)  # (B,) sequences that drew (not the expectation, hard_mix)
        decoder = getattr(model, "module", model).decoder  # under DistributedDataParallel: its module
        baseline = decoder.reward_baseline
        decay = self.hard_baseline_decay
        with torch.no_grad():  # no .item(): no wait on the device
            if baseline.numel() > 1:  # one moving average of each target token's log-likelihood
                steps = (real & sampled[:, None]).float().flatten()  # (B*T,)
                ids = outputs.flatten().clamp(min=0)
                sums = torch.zeros_like(baseline).scatter_add(0, ids, -nll.flatten() * steps)  # (V,)
                counts = torch.zeros_like(baseline).scatter_add(0, ids, steps)
                mean = sums / counts.clamp(min=1)
                previous = torch.where(torch.isnan(baseline), mean, baseline)  # (V,) a first sighting: its own
                baseline.copy_(torch.where(counts > 0, decay * previous + (1.0 - decay) * mean, baseline))
                per_step = torch.nan_to_num(previous[outputs.clamp(min=0)]) * real  # (B, T)
                expected = per_step @ to_go.T  # (B, T): the baselines of the tokens R_t sums
                if self.hard_reward == "sequence":
                    expected = expected[:, :1].expand_as(expected)
            else:
                n = (real.sum(1) * sampled).sum()
                # this batch's reward per (discounted) target token: from the whole targets' R_0 for
                # SAT's reward; from every step's R_t for the reward-to-go (with a discount < 1, R_0
                # alone would be the first tokens' reward: for gamma = 0, the first word's alone)
                if self.hard_reward == "sequence":
                    per_token = (reward[:, 0] * sampled).sum() / (counted[:, 0] * sampled).sum().clamp(min=1e-6)
                else:
                    steps = real & sampled[:, None]  # (B, T)
                    per_token = (reward * steps).sum() / (counted * steps).sum().clamp(min=1e-6)
                previous = torch.where(torch.isnan(baseline), per_token, baseline)  # the first batch: its own
                baseline.copy_(torch.where(n > 0, decay * previous + (1.0 - decay) * per_token, baseline))
                expected = previous * counted
        return {"reinforce": reinforce_term(alphas, drawn, reward, expected, real.sum()),
                "att_entropy": attention_entropy(alphas, real.float())}
