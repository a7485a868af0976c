"""The shared decoder: step API == teacher forcing, masks respected, options wired."""
import pytest
import torch

from mmdesc.contexts import ContextSet
from conftest import needs_cxx
from mmdesc.decoder import Decoder


def context(b=3, n=6, d=7, lengths=(6, 4, 2)):
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    return ContextSet(torch.randn(b, n, d), mask, [None] * b)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention", ["mlp", "dot", "coverage"])
@pytest.mark.parametrize("gate", [False, True])
def test_step_matches_teacher_forcing(cell, attention, gate):
    torch.manual_seed(0)
    dec = Decoder(11, 7, cell=cell, attention=attention, emb=5, hidden=9, att=3, out=4, gate=gate).eval()
    ctx, y = context(), torch.randint(4, 11, (3, 5))
    logits, alphas = dec(ctx, y)
    pctx, state = dec.prepare(ctx), None
    state = dec.init_state(pctx, 1)
    for t in range(5):
        lp, state, alpha = dec.step(pctx, y[:, t:t + 1], state)
        torch.testing.assert_close(lp[:, 0], torch.log_softmax(logits[:, t], -1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alpha[:, 0], alphas[:, t])


def test_masked_positions_get_no_attention_and_do_not_matter():
    torch.manual_seed(1)
    dec = Decoder(11, 7, emb=5, hidden=9, att=3, out=4).eval()
    ctx, y = context(), torch.randint(4, 11, (3, 5))
    logits, alphas = dec(ctx, y)
    assert alphas[1, :, 4:].abs().max() == 0 and alphas[2, :, 2:].abs().max() == 0
    torch.testing.assert_close(alphas.sum(-1), torch.ones(3, 5))
    noisy = ContextSet(ctx.vectors.masked_fill(~ctx.mask[..., None], 1e3), ctx.mask, ctx.layouts)
    torch.testing.assert_close(dec(noisy, y)[0], logits)


def test_k_queries_share_one_context():
    """Beam search asks K queries per input; each must equal a K=1 query."""
    torch.manual_seed(2)
    dec = Decoder(11, 7, cell="lstm", emb=5, hidden=9, att=3, out=4).eval()
    pctx = dec.prepare(context())
    state = {k: torch.randn(3, 4, 9) for k in dec.init_state(pctx, 4)}
    y = torch.randint(4, 11, (3, 4))
    lp, _, alpha = dec.step(pctx, y, state)
    for k in range(4):
        lp1, _, a1 = dec.step(pctx, y[:, k:k + 1], {n: s[:, k:k + 1] for n, s in state.items()})
        torch.testing.assert_close(lp[:, k], lp1[:, 0])
        torch.testing.assert_close(alpha[:, k], a1[:, 0])


def test_tied_embeddings_share_the_matrix():
    dec = Decoder(11, 7, emb=6, out=6, tied=True)
    assert dec.proj.weight.data_ptr() == dec.embed.weight.data_ptr()
    with pytest.raises(ValueError, match="tied"):
        Decoder(11, 7, emb=6, out=5, tied=True)


def test_init_state_from_mean_context_ignores_padding():
    dec = Decoder(11, 7, emb=5, hidden=9, att=3, out=4)
    ctx = context()
    h = dec.init_state(dec.prepare(ctx), 2)["h"]
    assert h.shape == (3, 2, 9)
    expected = torch.tanh(dec.init_h(ctx.vectors[2, :2].mean(0)))
    torch.testing.assert_close(h[2, 0], expected)


def test_location_attention_keeps_the_previous_alignment_in_the_state():
    torch.manual_seed(0)
    dec = Decoder(11, 7, attention="location", emb=5, hidden=9, att=6, out=4, dropout=0.0,
                  location_channels=3, location_kernel=5)
    ctx = context()
    pctx = dec.prepare(ctx)
    state = dec.init_state(pctx, 2)
    prev = state["att_prev"]  # uniform over each input's real positions
    assert prev.shape == (3, 2, ctx.vectors.shape[1])
    torch.testing.assert_close(prev.sum(-1), torch.ones(3, 2))
    assert (prev[~ctx.mask[:, None, :].expand_as(prev)] == 0).all()
    _, state, alpha = dec.step(pctx, torch.full((3, 2), 4), state)
    torch.testing.assert_close(state["att_prev"], alpha)  # what it looked at is what it keeps
    # the score depends on that state: another previous alignment, another attention
    other = dict(state, att_prev=torch.roll(state["att_prev"], 1, dims=-1) * ctx.mask[:, None, :])
    _, _, a1 = dec.step(pctx, torch.full((3, 2), 5), state)
    _, _, a2 = dec.step(pctx, torch.full((3, 2), 5), other)
    assert not torch.allclose(a1, a2)


def test_location_attention_teacher_forcing_matches_the_steps():
    torch.manual_seed(1)
    dec = Decoder(11, 7, cell="lstm", attention="location", emb=5, hidden=9, att=6, out=4, dropout=0.0,
                  location_channels=2, location_kernel=3).eval()
    ctx, y = context(), torch.randint(4, 11, (3, 4))
    logits, alphas = dec(ctx, y)
    pctx = dec.prepare(ctx)
    state = dec.init_state(pctx, 1)
    for t in range(4):
        lp, state, alpha = dec.step(pctx, y[:, t:t + 1], state)
        torch.testing.assert_close(lp[:, 0], torch.log_softmax(logits[:, t], -1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alpha[:, 0], alphas[:, t], atol=1e-6, rtol=1e-6)


def test_coverage_attention_keeps_the_sum_of_the_alignments_and_it_steers_the_score():
    torch.manual_seed(4)
    dec = Decoder(11, 7, attention="coverage", emb=5, hidden=9, att=6, out=4, dropout=0.0).eval()
    with torch.no_grad():
        dec.att.cover.weight.mul_(20.0)  # make the coverage matter
    ctx = context()
    pctx = dec.prepare(ctx)
    state = dec.init_state(pctx, 2)
    assert state["coverage"].shape == (3, 2, 6) and not state["coverage"].any()  # nothing seen yet
    total = torch.zeros(3, 2, 6)
    for t in range(4):
        _, state, alpha = dec.step(pctx, torch.full((3, 2), 4 + t), state)
        total += alpha
        torch.testing.assert_close(state["coverage"], total)  # every step adds what it looked at
    assert (state["coverage"][~ctx.mask[:, None, :].expand(-1, 2, -1)] == 0).all()  # padding: never
    torch.testing.assert_close(state["coverage"].sum(-1), torch.full((3, 2), 4.0))
    # another history of attention, another attention now (same recurrent state)
    other = dict(state, coverage=torch.roll(state["coverage"], 1, dims=-1) * ctx.mask[:, None, :])
    _, _, a1 = dec.step(pctx, torch.full((3, 2), 5), state)
    _, _, a2 = dec.step(pctx, torch.full((3, 2), 5), other)
    assert (a1 - a2).abs().max() > 1e-3


def assert_fused_equals_eager(dec: Decoder) -> None:
    """The compiled score (``fuse_attention``) is the same function: forward and backward."""
    from mmdesc.decoder import attention

    ctx, y = context(), torch.randint(4, 11, (3, 5))
    runs = []
    for fused in (False, True):
        dec.zero_grad()
        logits, alphas = dec.fuse_attention(fused)(ctx, y)
        (logits.logsumexp(-1).sum() + (alphas ** 2).sum()).backward()
        runs.append((logits, alphas, [p.grad.clone() for p in dec.parameters() if p.grad is not None]))
    assert attention._compiled not in (None, False), "the fused path was not compiled"
    (l0, a0, g0), (l1, a1, g1) = runs
    torch.testing.assert_close(l1, l0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a1, a0, atol=1e-5, rtol=1e-5)
    for p0, p1 in zip(g0, g1):
        torch.testing.assert_close(p1, p0, atol=1e-4, rtol=1e-4)


@needs_cxx
def test_fused_attention_score_equals_eager_values_and_gradients():
    torch.manual_seed(3)
    assert_fused_equals_eager(Decoder(11, 7, cell="lstm", emb=5, hidden=9, att=6, out=4, dropout=0.0))


@needs_cxx
def test_fused_coverage_score_equals_eager_values_and_gradients():
    torch.manual_seed(5)
    dec = Decoder(11, 7, cell="gru", attention="coverage", emb=5, hidden=9, att=6, out=4, dropout=0.0)
    with torch.no_grad():
        dec.att.cover.weight.mul_(5.0)
    assert_fused_equals_eager(dec)
    assert dec.att.cover.weight.grad.abs().sum() > 0  # the coverage term is trained


@pytest.mark.parametrize("attention", ["mlp", "dot", "location", "coverage"])
def test_keys_apart_from_the_vectors_decide_the_attention_and_the_vectors_what_is_read(attention):
    """A ContextSet with keys: the attention scores the keys (of key_dim), the context read is
    a mix of the vectors; without keys the vectors are scored, as before."""
    torch.manual_seed(3)
    ctx = context()
    keys = torch.randn(3, 6, 5)
    dec = Decoder(11, 7, attention=attention, emb=4, hidden=8, att=6, out=4, dropout=0.0, key_dim=5,
                  init="zero").eval()  # the first query does not see the vectors
    y = torch.randint(4, 11, (3, 4))
    with torch.no_grad():
        _, a1 = dec(ContextSet(ctx.vectors, ctx.mask, ctx.layouts, keys), y)
        _, a2 = dec(ContextSet(ctx.vectors * 2, ctx.mask, ctx.layouts, keys), y)
        _, a3 = dec(ContextSet(ctx.vectors, ctx.mask, ctx.layouts, keys.flip(1)), y)
    torch.testing.assert_close(a1[:, 0], a2[:, 0])  # the first step's attention: the keys' alone
    assert not torch.allclose(a1[:, 0], a3[:, 0])
    picked = ContextSet(ctx.vectors, ctx.mask, ctx.layouts, keys).select(torch.tensor([2, 0]))
    torch.testing.assert_close(picked.keys, keys[[2, 0]])
    with pytest.raises(ValueError, match="keys"):
        ContextSet(ctx.vectors, ctx.mask, ctx.layouts, keys[:, :3])
