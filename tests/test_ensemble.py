"""Ensembles at decode time: the search, and the describe / evaluate front door."""
import json

import pytest
import torch

from conftest import mmdesc
from mmdesc.contexts import ContextSet
from mmdesc.decoder import Decoder
from mmdesc.ensemble import EnsembleDecoder
from mmdesc.search import decode

BOS, EOS, V = 1, 2, 13


def decoder(seed, ctx_dim=7, attention="mlp", cell="gru"):
    torch.manual_seed(seed)
    extra = dict(location_channels=3, location_kernel=3) if attention == "location" else {}
    dec = Decoder(V, ctx_dim, cell=cell, attention=attention, emb=5, hidden=9, att=3, out=4, dropout=0.0,
                  **extra).eval()
    with torch.no_grad():
        dec.proj.bias[EOS] += 1.5
    return dec


def context(dim, b=5, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, n + 1, (b,), generator=g)
    return ContextSet(torch.randn(b, n, dim, generator=g), torch.arange(n)[None, :] < lengths[:, None], [None] * b)


def side_by_side(*ctxs):
    return ContextSet(torch.cat([c.vectors for c in ctxs], dim=-1), ctxs[0].mask, ctxs[0].layouts)


@pytest.mark.parametrize("search", [dict(beam=1), dict(beam=4, n_best=3), dict(sample=True, n_best=2, seed=1)],
                         ids=["greedy", "beam", "sample"])
def test_a_model_with_itself_is_that_model(search):
    dec, ctx = decoder(0, attention="location", cell="lstm"), context(7)
    alone = decode(dec, ctx, max_lens=9, **search)
    both = decode(EnsembleDecoder([dec, dec], [7, 7]), side_by_side(ctx, ctx), max_lens=9, **search)
    for a, b in zip(alone, both):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == [h.score for h in b]
        for ha, hb in zip(a, b):
            assert torch.equal(ha.alpha, hb.alpha)


@pytest.mark.parametrize("attention", ["mean", 0, 1])
def test_ensemble_hypotheses_score_what_the_models_give_them(attention):
    """Two different models (other sizes of context, location attention whose state must follow
    the beams): every n-best hypothesis's score is the sum of the models' mean log-probabilities
    of its tokens, and its attention the mean (or the chosen model's) while reading it. Were
    one model's state not reordered with the beams, neither would hold."""
    decs = [decoder(1, 7, "location"), decoder(2, 5, "location", cell="lstm")]
    ens = EnsembleDecoder(decs, [7, 5], attention)
    ca, cb = context(7, seed=3), context(5, seed=3)
    out = decode(ens, side_by_side(ca, cb), beam=4, n_best=4, max_lens=8, length_penalty=0.0)
    with torch.no_grad():
        for i, hyps in enumerate(out):
            pick = torch.tensor([i])
            n = int(ca.lengths[i])
            for h in hyps:
                y = torch.tensor([[BOS] + h.tokens])
                target = torch.tensor(h.tokens + [EOS])
                runs = [d(c.select(pick), y) for d, c in zip(decs, (ca, cb))]
                lps = [torch.log_softmax(lg[0], dim=-1)[torch.arange(len(target)), target] for lg, _ in runs]
                assert h.score == pytest.approx(float((lps[0] + lps[1]).sum() / 2), abs=1e-4)
                alphas = [a[0, :len(h.tokens), :n] for _, a in runs]
                want = (alphas[0] + alphas[1]) / 2 if attention == "mean" else alphas[attention]
                torch.testing.assert_close(h.alpha, want, atol=1e-5, rtol=1e-5)


def test_describe_and_evaluate_with_an_ensemble_of_one_model(tiny_image_run, tiny_data):
    imgs = sorted((tiny_data / "images").glob("test_*.png"))
    alone = mmdesc("describe", *imgs, "-c", tiny_image_run, "--json")
    both = mmdesc("describe", *imgs, "-c", tiny_image_run, "--ensemble", tiny_image_run, "--json")
    assert alone.code == both.code == 0, both.err
    assert json.loads(both.out) == json.loads(alone.out)  # captions, scores and attention
    ev = [json.loads(mmdesc("evaluate", "-c", tiny_image_run, *more, "--json").out)
          for more in ([], ["--ensemble", tiny_image_run, "--ensemble-attention", "1"])]
    assert ev[1]["bleu4"] == ev[0]["bleu4"] and ev[1]["grounding"] == ev[0]["grounding"]
    assert len(ev[1]["ensemble"]) == 2


def test_an_ensemble_refuses_another_tokenizer_in_one_line(tiny_image_run, tiny_data, tmp_path):
    from checkpoints import variant

    other = variant(tiny_image_run, tmp_path / "other", {"tokenizer": {"vocab_size": 30}})
    img = sorted((tiny_data / "images").glob("test_*.png"))[0]
    r = mmdesc("describe", img, "-c", tiny_image_run, "--ensemble", other)
    assert r.code == 2 and r.out == ""
    assert r.err.strip().count("\n") == 0 and "tokenizer differs" in r.err and str(other) in r.err
    r = mmdesc("describe", img, "-c", tiny_image_run, "--ensemble", tiny_image_run, "--ensemble-attention", "2")
    assert r.code == 2 and r.err.strip().count("\n") == 0 and "--ensemble-attention" in r.err
