"""Hard (stochastic) attention: draws respect the mask, REINFORCE trains the attention, test
time reads the expectation; and a tiny recipe trains with it through the CLI."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import RECIPES, mmdesc
from mmdesc.contexts import ContextSet
from mmdesc.decoder import Decoder
from mmdesc.decoder.attention import sample_positions
from mmdesc.model import Describer
from mmdesc.objective import Objective
from mmdesc.tokenize import EOS


class Given(nn.Module):
    """An 'encoder' that returns the batch's vectors (B, N, D) and mask as they are."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim = dim

    def forward(self, batch: dict) -> ContextSet:
        return ContextSet(batch["vectors"], batch["mask"], [None] * batch["mask"].shape[0])


def context(b=3, n=6, d=7, lengths=(6, 4, 2)):
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    return ContextSet(torch.randn(b, n, d), mask, [None] * b)


def marked_task(b: int, g: torch.Generator, n: int = 5, vocab: int = 9, d: int = 11):
    """One target word per input, written at one random position with a marker; the others hold
    noise. Returns the batch, teacher-forcing tensors and the informative position (B,)."""
    y = torch.randint(4, vocab, (b,), generator=g)
    where = torch.randint(0, n, (b,), generator=g)
    v = torch.randn(b, n, d, generator=g) * 0.5
    v[torch.arange(b), where, :vocab] += 3.0 * nn.functional.one_hot(y, vocab).float()
    v[torch.arange(b), where, -1] = 3.0
    inputs = torch.stack([torch.ones(b, dtype=torch.long), y], 1)  # BOS, y
    outputs = torch.stack([y, torch.full((b,), EOS)], 1)  # y, EOS
    return {"vectors": v, "mask": torch.ones(b, n, dtype=torch.bool)}, inputs, outputs, where


def test_draws_never_pick_a_masked_position_and_follow_the_attention():
    torch.manual_seed(0)
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])[None, None].expand(2, 4000, 5)  # (B, K, N)
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    drawn = sample_positions(alpha, mask)  # (B, K)
    assert drawn.shape == (2, 4000)
    assert (drawn[0] < 3).all(), "position 3 of input 0 is masked but has attention 0.4"
    assert (drawn[1] != 4).all()
    freq = torch.bincount(drawn[0], minlength=5).float() / 4000
    torch.testing.assert_close(freq[:3], torch.tensor([1 / 6, 2 / 6, 3 / 6]), atol=0.03, rtol=0)
    freq = torch.bincount(drawn[1], minlength=5).float() / 4000
    torch.testing.assert_close(freq[:4], torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.03, rtol=0)


@pytest.mark.parametrize("attention", ["mlp", "dot", "location", "coverage"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_training_draws_real_positions_and_eval_reads_the_expectation(attention, cell):
    torch.manual_seed(1)
    kw = dict(cell=cell, attention=attention, emb=5, hidden=9, att=3, out=4, dropout=0.0, location_kernel=3)
    hard, soft = Decoder(11, 7, attention_mode="hard", **kw), Decoder(11, 7, **kw)
    soft.load_state_dict({k: v for k, v in hard.state_dict().items() if k != "reward_baseline"})
    ctx, y = context(), torch.randint(4, 11, (3, 5))
    logits, alphas, drawn = hard.train()(ctx, y, positions=True)
    assert drawn.shape == (3, 5)
    assert (drawn < ctx.mask.sum(1)[:, None]).all() and (drawn >= 0).all()
    assert not torch.allclose(logits, soft.train()(ctx, y)[0])  # one vector read, not the mean
    hard.eval(), soft.eval()
    first, again = hard(ctx, y, positions=True), hard(ctx, y, positions=True)
    assert first[2] is None  # nothing drawn at test time
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)  # deterministic
    torch.testing.assert_close(first[0], soft(ctx, y)[0])  # the expectation: soft attention's reading


def test_one_real_position_reads_the_same_vector_every_way():
    torch.manual_seed(2)
    dec = Decoder(11, 7, emb=5, hidden=9, att=3, out=4, dropout=0.0, attention_mode="hard")
    ctx, y = context(lengths=(1, 1, 1)), torch.randint(4, 11, (3, 4))
    drawn = dec.train()(ctx, y, positions=True)
    expectation = dec.eval()(ctx, y)[0]
    torch.testing.assert_close(drawn[0], expectation)
    assert (drawn[2] == 0).all()
    torch.testing.assert_close(dec.set_attend("argmax")(ctx, y)[0], expectation)
    with pytest.raises(ValueError, match="expectation, argmax"):
        dec.set_attend("mode")


def test_argmax_is_deterministic_and_not_the_expectation():
    torch.manual_seed(3)
    dec = Decoder(11, 7, emb=5, hidden=9, att=3, out=4, dropout=0.0).eval()
    ctx, y = context(), torch.randint(4, 11, (3, 5))
    mean = dec(ctx, y)[0]
    peak = dec.set_attend("argmax")(ctx, y)[0]
    torch.testing.assert_close(peak, dec(ctx, y)[0], rtol=0, atol=0)
    assert not torch.allclose(peak, mean)


def test_hard_mix_reads_the_expectation_in_that_share_of_sequences():
    torch.manual_seed(4)
    kw = dict(emb=5, hidden=9, att=3, out=4, dropout=0.0)
    all_soft = Decoder(11, 7, attention_mode="hard", hard_mix=1.0, **kw).train()
    soft = Decoder(11, 7, **kw).train()
    soft.load_state_dict({k: v for k, v in all_soft.state_dict().items() if k != "reward_baseline"})
    ctx, y = context(b=64, lengths=[6] * 64), torch.randint(4, 11, (64, 5))
    logits, _, drawn = all_soft(ctx, y, positions=True)
    assert (drawn == -1).all()
    torch.testing.assert_close(logits, soft(ctx, y)[0])
    half = Decoder(11, 7, attention_mode="hard", hard_mix=0.5, **kw).train()
    rows = (half(ctx, y, positions=True)[2] == -1).all(1).float().mean().item()  # (B,) read the expectation
    assert 0.25 < rows < 0.75


def test_only_the_reinforce_term_reaches_the_attention():
    torch.manual_seed(5)
    model = Describer(Given(11), Decoder(9, 11, emb=6, hidden=10, att=7, out=6, dropout=0.0,
                                         attention_mode="hard")).train()
    batch, inputs, outputs, _ = marked_task(16, torch.Generator().manual_seed(5))
    att = list(model.decoder.att.parameters())
    loss, terms = Objective(hard=True, hard_entropy=0.0)(model, batch, inputs, outputs)
    assert list(terms) == ["xent", "reinforce", "att_entropy"] == Objective(hard=True).names
    terms["xent"].backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in att)  # the drawn vector hides the attention
    assert model.decoder.proj.weight.grad.abs().max() > 0
    model.zero_grad()
    terms["reinforce"].backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in att)
    assert torch.isfinite(model.decoder.reward_baseline)


def test_a_soft_objective_refuses_a_hard_decoder():
    model = Describer(Given(11), Decoder(9, 11, emb=6, hidden=10, att=7, out=6, attention_mode="hard")).train()
    batch, inputs, outputs, _ = marked_task(4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="nothing would train the attention"):
        Objective()(model, batch, inputs, outputs)


@pytest.mark.parametrize("weight, learns, reward", [(1.0, True, "sequence"), (1.0, True, "to_go"),
                                                   (0.0, False, "sequence")])
def test_reinforce_teaches_the_attention_where_to_look(weight, learns, reward):
    """The target word sits at one random position: only the REINFORCE term can make the hard
    attention find it (without it the attention stays uniform)."""
    objective = Objective(hard=True, hard_reinforce=weight, hard_entropy=0.0, hard_reward=reward)
    mass = mass_after_training(objective)
    assert (mass > 0.9) if learns else (mass < 0.4), mass


def mass_after_training(objective: Objective, **decoder) -> float:
    """Train a hard-attention model on ``marked_task`` for 80 steps with ``objective``; return
    its mean attention on the informative position of fresh inputs."""
    torch.manual_seed(6)
    g = torch.Generator().manual_seed(6)
    model = Describer(Given(11), Decoder(9, 11, emb=6, hidden=10, att=7, out=6, dropout=0.0, attention_mode="hard",
                                         **decoder))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(80):
        batch, inputs, outputs, _ = marked_task(32, g)
        loss, _ = objective(model.train(), batch, inputs, outputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    batch, inputs, outputs, where = marked_task(200, g)
    with torch.no_grad():
        _, alphas, _ = model.eval()(batch, inputs)
    return alphas[torch.arange(200), 0, where].mean().item()  # attention on the word's position


def test_tiny_recipe_trains_with_hard_attention_through_the_cli(tiny_data, tmp_path):
    out = tmp_path / "hard"
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={out}",
               "decoder.attention_mode=hard", "loss.hard_entropy=0.01")
    assert r.code == 0, r.err
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [s for s in steps if "xent" in s]
    assert len(logged) >= 3 and all("reinforce" in s and "att_entropy" in s for s in logged)
    assert logged[-1]["xent"] < logged[0]["xent"] - 0.1
    image = sorted((tiny_data / "images").glob("test_*.png"))[0]
    first = mmdesc("describe", image, "--checkpoint", out)
    again = mmdesc("describe", image, "--checkpoint", out)
    assert first.code == 0 and first.out == again.out != ""  # test time reads the expectation
    peak = mmdesc("describe", image, "--checkpoint", out, "--attend", "argmax")
    assert peak.code == 0 and peak.out.startswith(str(image))


def test_a_draws_reward_is_the_log_likelihood_from_its_step_on():
    """Reward-to-go: ``x @ discounts(T, gamma).T`` sums each step's (discounted) future only, so
    the words before a draw, which it cannot change, add nothing to its reward's variance."""
    from mmdesc.objective import discounts

    torch.testing.assert_close(discounts(3, 0.5), torch.tensor([[1.0, 0.5, 0.25], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]]))
    logp = torch.tensor([[-1.0, -2.0, -4.0, 0.0]])  # the last step is padding (0)
    torch.testing.assert_close(logp @ discounts(4, 1.0).T, torch.tensor([[-7.0, -6.0, -4.0, 0.0]]))


@pytest.mark.parametrize("gamma", [-0.1, 1.5])
def test_hard_discount_outside_zero_one_is_a_recipe_error(tiny_data, tmp_path, gamma):
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={tmp_path / 'x'}",
               "decoder.attention_mode=hard", f"loss.hard_discount={gamma}")
    assert r.code == 2 and "hard_discount: must be in [0, 1]" in r.err, r.err


def test_with_no_discount_the_baseline_is_the_mean_reward_of_a_token():
    """gamma = 0 rewards each draw with its own step's log-likelihood: the baseline's first value
    is the batch's mean token log-likelihood, not the first tokens' (which R_0 alone would give)."""
    import torch.nn.functional as F

    torch.manual_seed(7)
    model = Describer(Given(11), Decoder(9, 11, emb=6, hidden=10, att=7, out=6, dropout=0.0,
                                         attention_mode="hard")).train()
    batch, inputs, outputs, _ = marked_task(16, torch.Generator().manual_seed(7))
    objective = Objective(hard=True, hard_reward="to_go", hard_discount=0.0)
    torch.manual_seed(8)
    objective(model, batch, inputs, outputs)
    torch.manual_seed(8)
    logits = model(batch, inputs)[0]
    nll = F.cross_entropy(logits.flatten(0, 1), outputs.flatten(), reduction="none").view(outputs.shape)
    first = -nll[:, 0].mean().item()
    assert model.decoder.reward_baseline.item() == pytest.approx(-nll.mean().item(), abs=1e-4)
    assert abs(model.decoder.reward_baseline.item() - first) > 1e-3


def test_a_token_baseline_keeps_each_target_tokens_mean_reward():
    """``hard_baseline="token"``: one moving average per vocabulary entry, of the log-likelihood
    of that token where it is the target; entries never seen stay NaN, and REINFORCE still
    teaches the attention where to look."""
    import torch.nn.functional as F

    torch.manual_seed(9)
    model = Describer(Given(11), Decoder(9, 11, emb=6, hidden=10, att=7, out=6, dropout=0.0,
                                         attention_mode="hard", hard_baseline="token")).train()
    assert model.decoder.reward_baseline.shape == (9,)
    batch, inputs, outputs, _ = marked_task(16, torch.Generator().manual_seed(9))
    objective = Objective(hard=True, hard_reward="to_go", hard_discount=0.0)
    torch.manual_seed(10)
    objective(model, batch, inputs, outputs)
    torch.manual_seed(10)
    nll = F.cross_entropy(model(batch, inputs)[0].flatten(0, 1), outputs.flatten(), reduction="none").view(outputs.shape)
    b = model.decoder.reward_baseline
    for v in range(9):
        seen = outputs == v
        if seen.any():
            assert b[v].item() == pytest.approx(-nll[seen].mean().item(), abs=1e-4)
        else:
            assert torch.isnan(b[v])
    with pytest.raises(ValueError, match="hard_baseline"):
        Decoder(9, 11, attention_mode="hard", hard_baseline="median")
    assert mass_after_training(Objective(hard=True, hard_entropy=0.0), hard_baseline="token") > 0.9
