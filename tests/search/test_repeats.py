"""Options against repetition: n-gram blocking and the repetition penalty, in every search."""
import pytest
import torch

from mmdesc.contexts import ContextSet
from mmdesc.decoder import Decoder
from mmdesc.search import decode
from mmdesc.search.repeats import block_ngrams, penalize_repeats

BOS, EOS, V, LOOP = 1, 2, 11, 5


def repeater(seed=0, strength=4.0):
    """A decoder that wants to say token LOOP again and again, and hardly ever to stop."""
    torch.manual_seed(seed)
    dec = Decoder(V, 7, cell="gru", emb=5, hidden=9, att=3, out=4, dropout=0.0).eval()
    with torch.no_grad():
        dec.proj.bias[LOOP] += strength
        dec.proj.bias[EOS] -= 6.0
    return dec


def context(b=4, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, n + 1, (b,), generator=g)
    return ContextSet(torch.randn(b, n, 7, generator=g), torch.arange(n)[None, :] < lengths[:, None], [None] * b)


def ngrams(tokens, n):
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repeated(tokens, n):
    grams = ngrams(tokens, n)
    return len(grams) - len(set(grams))


SEARCHES = [dict(beam=1), dict(beam=4, n_best=4), dict(sample=True, n_best=3, seed=5)]


@pytest.mark.parametrize("search", SEARCHES, ids=["greedy", "beam", "sample"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_blocking_never_repeats_an_ngram(search, n):
    dec, ctx = repeater(), context()
    free = decode(dec, ctx, max_lens=12, **search)
    assert any(repeated(h.tokens, n) for hs in free for h in hs)  # without blocking it repeats
    held = decode(dec, ctx, max_lens=12, no_repeat_ngram=n, **search)
    for hs in held:
        for h in hs:
            assert repeated(h.tokens, n) == 0, h.tokens
            assert len(h.tokens) > n  # it goes on, saying something else


@pytest.mark.parametrize("search", SEARCHES, ids=["greedy", "beam", "sample"])
def test_repetition_penalty_lowers_repeats(search):
    dec, ctx = repeater(1, strength=1.0), context(b=6, seed=1)  # all outputs reach the limit: counts compare
    counts = []
    for penalty in (1.0, 2.0, 4.0):
        out = decode(dec, ctx, max_lens=10, repetition_penalty=penalty, **search)
        counts.append(sum(repeated(h.tokens, 1) for hs in out for h in hs))
    assert counts[0] > counts[1] > counts[2]


def test_block_ngrams_matches_a_plain_reference():
    """Vectorised over inputs, beams and history: the same bans as a loop over each hypothesis."""
    g = torch.Generator().manual_seed(3)
    history = torch.randint(3, 7, (3, 4, 9), generator=g)  # few distinct tokens: many repeats
    for n in (1, 2, 3, 4):
        got = block_ngrams(torch.zeros(3, 4, V), history, n)
        for b in range(3):
            for k in range(4):
                toks = history[b, k].tolist()
                banned = {g_[-1] for g_ in ngrams(toks, n) if list(g_[:-1]) == toks[len(toks) - n + 1:]}
                assert {v for v in range(V) if got[b, k, v] == float("-inf")} == banned


def test_repetition_penalty_scales_only_tokens_already_said():
    lp = torch.log_softmax(torch.randn(2, 1, V), dim=-1)
    history = torch.tensor([[[3, 3, 4]], [[5, 6, 7]]])
    out = penalize_repeats(lp.clone(), history, 2.0)
    for b, said in enumerate(({3, 4}, {5, 6, 7})):
        for v in range(V):
            assert out[b, 0, v] == pytest.approx(float(lp[b, 0, v]) * (2.0 if v in said else 1.0))
