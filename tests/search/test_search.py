"""Search: properties, and agreement with a plain one-input-at-a-time reference."""
import math

import pytest
import torch

from mmdesc.contexts import ContextSet
from mmdesc.decoder import Decoder
from conftest import needs_cxx
from mmdesc.search import decode, length_norm, output_limits

BOS, EOS, V = 1, 2, 13


def model(seed=0, cell="gru", attention="mlp"):
    torch.manual_seed(seed)
    dec = Decoder(V, 7, cell=cell, attention=attention, emb=5, hidden=9, att=3, out=4, dropout=0.0).eval()
    with torch.no_grad():  # make EOS reachable so hypotheses end at different lengths
        dec.proj.bias[EOS] += 2.0
    return dec


def context(b=5, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, n + 1, (b,), generator=g)
    mask = torch.arange(n)[None, :] < lengths[:, None]
    return ContextSet(torch.randn(b, n, 7, generator=g), mask, [None] * b)


@torch.no_grad()
def reference_beam(dec, ctx, k, max_len, lp_alpha):
    """Beam search written the obvious way, one input at a time, in Python lists."""
    pctx = dec.prepare(ctx)
    state = {n: s[:, 0] for n, s in dec.init_state(pctx, 1).items()}
    beams = [(0.0, [], state)]
    finished = []
    for t in range(max_len + 1):
        cands = []
        for score, toks, st in beams:
            y = torch.tensor([[toks[-1] if toks else BOS]])
            lp, new, _ = dec.step(pctx, y, {n: s[:, None] for n, s in st.items()})
            lp = lp[0, 0].clone()
            lp[0] = lp[BOS] = -math.inf
            if t >= max_len:
                keep = lp[EOS].item()
                lp[:] = -math.inf
                lp[EOS] = keep
            for v in range(V):
                cands.append((score + lp[v].item(), toks + [v], {n: s[:, 0] for n, s in new.items()}))
        cands.sort(key=lambda c: -c[0])
        cands = [c for c in cands if c[0] > -math.inf][: 2 * k]
        for rank, c in enumerate(cands[:k]):
            if c[1][-1] == EOS:
                finished.append((c[0] / length_norm(len(c[1]), lp_alpha), c[1][:-1]))
        beams = [c for c in cands if c[1][-1] != EOS][:k]
        if len(finished) >= k:
            break
    finished.sort(key=lambda f: -f[0])
    return finished[:k]


@pytest.mark.parametrize("cell,eos_bias", [("gru", -1.4), ("lstm", -2.0)])
def test_beam_one_equals_greedy(cell, eos_bias):
    dec, ctx = model(cell=cell), context()
    with torch.no_grad():  # sentences of different lengths: rows leave the batch at different steps
        dec.proj.bias[EOS] += eos_bias
    greedy = decode(dec, ctx, beam=1, n_best=1, max_lens=8)
    assert len({len(g[0].tokens) for g in greedy}) > 1
    from mmdesc.search.beam import beam_search

    with torch.inference_mode():
        beam1 = beam_search(dec, ctx, beam=1, n_best=1, max_lens=torch.full((5,), 8))
    for g, b in zip(greedy, beam1):
        assert g[0].tokens == b[0].tokens
        assert g[0].score == pytest.approx(b[0].score, abs=1e-5)
        torch.testing.assert_close(g[0].alpha, b[0].alpha)


@pytest.mark.parametrize("k,lp", [(3, 0.0), (5, 1.0), (8, 0.5)])  # 8: 2k > V
def test_batched_beam_matches_reference(k, lp):
    dec, ctx = model(seed=3), context(seed=4)
    batched = decode(dec, ctx, beam=k, n_best=k, max_lens=7, length_penalty=lp)
    for i in range(5):
        ref = reference_beam(dec, ctx.select(torch.tensor([i])), k, 7, lp)
        assert [h.tokens for h in batched[i]] == [r[1] for r in ref]
        assert [h.score for h in batched[i]] == pytest.approx([r[0] for r in ref], abs=1e-4)


def test_n_best_sorted_and_attention_shapes():
    dec, ctx = model(seed=5), context(seed=6)
    out = decode(dec, ctx, beam=4, n_best=4, max_lens=9)
    for b, hyps in enumerate(out):
        assert len(hyps) == 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for h in hyps:
            assert h.alpha.shape == (len(h.tokens), int(ctx.lengths[b]))
            assert torch.allclose(h.alpha.sum(-1), torch.ones(len(h.tokens)), atol=1e-5)
            assert EOS not in h.tokens and BOS not in h.tokens and 0 not in h.tokens


def test_padded_batch_equals_one_by_one():
    dec, ctx = model(seed=7, cell="lstm", attention="dot"), context(seed=8)
    batched = decode(dec, ctx, beam=5, n_best=2, max_lens=8)
    for i in range(5):
        one = ctx.select(torch.tensor([i]))
        n = int(one.lengths[0])
        trimmed = ContextSet(one.vectors[:, :n], one.mask[:, :n], one.layouts)
        single = decode(dec, trimmed, beam=5, n_best=2, max_lens=8)[0]
        assert [h.tokens for h in single] == [h.tokens for h in batched[i]]


def test_length_limits_absolute_relative_and_minimum():
    dec, ctx = model(seed=9), context(seed=10)
    with torch.no_grad():
        dec.proj.bias[EOS] -= 50.0  # never wants to stop: every hypothesis hits its limit
    limits = output_limits(ctx.lengths, 6, max_len_a=1.0, max_len_b=1)
    out = decode(dec, ctx, beam=3, n_best=1, max_lens=limits)
    for hyps, limit in zip(out, limits.tolist()):
        assert len(hyps[0].tokens) == limit <= 6
    with torch.no_grad():
        dec.proj.bias[EOS] += 100.0  # always wants to stop: min_len holds it back
    for beam in (1, 3):
        out = decode(dec, ctx, beam=beam, n_best=1, max_lens=9, min_len=3)
        assert all(len(h[0].tokens) == 3 for h in out)


@needs_cxx
def test_fused_attention_beam_matches_reference():
    """The compiled attention score changes nothing that beam search finds."""
    dec, ctx = model(seed=9, cell="lstm"), context(seed=10)
    with torch.no_grad():  # a larger attention, so that the compiled loop is not trivial
        dec.att.score.weight.mul_(3.0)
    batched = decode(dec.fuse_attention(True), ctx, beam=4, n_best=4, max_lens=7)
    dec.fuse_attention(False)
    for i in range(5):
        ref = reference_beam(dec, ctx.select(torch.tensor([i])), 4, 7, 0.0)
        assert [h.tokens for h in batched[i]] == [r[1] for r in ref]
        assert [h.score for h in batched[i]] == pytest.approx([r[0] for r in ref], abs=1e-4)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention", ["location", "coverage"])
def test_stateful_attention_beam_matches_reference(cell, attention):
    """The attention's own state (the previous alignment; the coverage) is reordered with the beams."""
    torch.manual_seed(11)
    extra = dict(location_channels=3, location_kernel=3) if attention == "location" else {}
    dec = Decoder(V, 7, cell=cell, attention=attention, emb=5, hidden=9, att=3, out=4, dropout=0.0,
                  **extra).eval()
    with torch.no_grad():
        dec.proj.bias[EOS] += 2.0
        (dec.att.conv if attention == "location" else dec.att.cover).weight.mul_(4.0)  # make the state matter
    ctx = context(seed=12)
    batched = decode(dec, ctx, beam=4, n_best=4, max_lens=7)
    for i in range(5):
        ref = reference_beam(dec, ctx.select(torch.tensor([i])), 4, 7, 0.0)
        assert [h.tokens for h in batched[i]] == [r[1] for r in ref]
        assert [h.score for h in batched[i]] == pytest.approx([r[0] for r in ref], abs=1e-4)


@torch.no_grad()
def test_assembled_attention_is_the_attention_of_the_hypothesis():
    """The back-pointer walk gives each hypothesis the attention it had: teacher-forcing its
    tokens through the decoder reproduces it, for every n-best hypothesis."""
    dec, ctx = model(seed=13, cell="lstm"), context(b=6, seed=14)
    out = decode(dec, ctx, beam=4, n_best=3, max_lens=8)
    for i, hyps in enumerate(out):
        one = ctx.select(torch.tensor([i]))
        for h in hyps:
            y = torch.tensor([[BOS] + h.tokens])
            _, alphas = dec(one, y)
            torch.testing.assert_close(h.alpha, alphas[0, :len(h.tokens), : int(one.lengths[0])],
                                       atol=1e-5, rtol=1e-5)


def test_no_attention_asked_none_kept_same_result():
    dec, ctx = model(seed=15), context(seed=16)
    for beam in (1, 4):
        full = decode(dec, ctx, beam=beam, n_best=1, max_lens=8)
        bare = decode(dec, ctx, beam=beam, n_best=1, max_lens=8, attention=False)
        assert [h[0].tokens for h in bare] == [h[0].tokens for h in full]
        assert [h[0].score for h in bare] == pytest.approx([h[0].score for h in full])
        assert all(h[0].alpha is None for h in bare)


def _astray(alpha, limit):
    """Steps whose attention peak moved back more than ``limit`` or stayed put for more than ``limit``."""
    peaks, bad, still = alpha.argmax(-1).tolist(), [], 0
    for t in range(1, len(peaks)):
        still = still + 1 if peaks[t] == peaks[t - 1] else 0
        if peaks[t - 1] - peaks[t] > limit or still > limit:
            bad.append(t)
    return bad


@pytest.mark.parametrize("beam", [1, 3])
def test_attention_shift_limit_ends_hypotheses_that_go_astray(beam):
    torch.manual_seed(17)
    dec = Decoder(V, 7, emb=5, hidden=9, att=3, out=4, dropout=0.0).eval()
    with torch.no_grad():
        dec.proj.bias[EOS] -= 3.0  # long outputs over short inputs: the attention must wander
    ctx = context(b=6, n=10, seed=18)
    free = decode(dec, ctx, beam=beam, n_best=1, max_lens=12)
    assert any(_astray(h[0].alpha, 1) for h in free)  # without the limit, some go astray
    held = decode(dec, ctx, beam=beam, n_best=1, max_lens=12, max_attention_shift=1)
    assert not any(_astray(h[0].alpha, 1) for h in held)
    assert sum(len(h[0].tokens) for h in held) < sum(len(h[0].tokens) for h in free)
