"""The training objective: each term, its weight, and CTC on a tiny sequence task."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdesc.contexts import ContextSet, TimeLayout
from mmdesc.decoder import Decoder
from mmdesc.model import Describer
from mmdesc.objective import Objective, ctc_loss, doubly_stochastic_penalty
from mmdesc.tokenize import EOS, PAD


def test_doubly_stochastic_penalty():
    alphas = torch.zeros(1, 2, 3)
    alphas[0, 0, 0] = alphas[0, 1, 1] = 1.0
    tmask, cmask = torch.ones(1, 2), torch.tensor([[1.0, 1.0, 0.0]])
    assert doubly_stochastic_penalty(alphas, tmask, cmask).item() == 0.0
    cmask = torch.ones(1, 3)
    assert doubly_stochastic_penalty(alphas, tmask, cmask).item() == pytest.approx(1 / 3)  # the unattended third cell


class SeqEncoder(nn.Module):
    """Token ids (B, N) -> a ContextSet of N vectors with a time layout (a stand-in 'speech')."""

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.out_dim = dim
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.GRU(dim, dim // 2, batch_first=True, bidirectional=True)

    def forward(self, batch):
        x, mask = batch["ids"], batch["mask"]
        v, _ = self.rnn(self.embed(x))  # (B, N, D)
        n = mask.sum(1).tolist()
        layouts = [TimeLayout(tuple((i * 0.1, (i + 1) * 0.1) for i in range(k)), k * 0.1) for k in n]
        return ContextSet(v, mask, layouts)


def sequence_task(b: int = 8, n: int = 12, vocab: int = 9, seed: int = 0):
    """Inputs: each target token repeated twice (so CTC has room); targets: the tokens."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, n // 2 + 1, (b,), generator=g)
    ids = torch.full((b, n), PAD)
    outputs = torch.full((b, n // 2 + 1), PAD)
    inputs = torch.full((b, n // 2 + 1), PAD)
    for i, k in enumerate(lengths.tolist()):
        y = torch.randint(3, vocab, (k,), generator=g)
        ids[i, : 2 * k] = y.repeat_interleave(2)
        outputs[i, :k], outputs[i, k] = y, EOS
        inputs[i, 0], inputs[i, 1:k + 1] = 1, y
    mask = ids != PAD
    return {"ids": ids, "mask": mask}, inputs, outputs


def test_terms_are_named_weighted_and_combined():
    torch.manual_seed(0)
    model = Describer(SeqEncoder(9, 6), Decoder(9, 6, emb=5, hidden=7, att=3, out=4, dropout=0.0), ctc_vocab=9)
    batch, inputs, outputs = sequence_task()
    total, terms = Objective(label_smoothing=0.1, ds_penalty=0.5, ctc=0.3)(model, batch, inputs, outputs)
    assert list(terms) == ["xent", "ds", "ctc"] == Objective(0.1, 0.5, 0.3).names
    assert all(torch.isfinite(v) for v in terms.values())
    expected = 0.7 * terms["xent"] + 0.5 * terms["ds"] + 0.3 * terms["ctc"]
    torch.testing.assert_close(total, expected)
    plain, only = Objective()(model, batch, inputs, outputs)
    assert list(only) == ["xent"]
    assert not torch.allclose(plain, terms["xent"])  # label smoothing changes the cross-entropy


def test_ctc_needs_a_head():
    model = Describer(SeqEncoder(9, 6), Decoder(9, 6, emb=5, hidden=7, att=3, out=4))
    with pytest.raises(ValueError, match="CTC head"):
        Objective(ctc=0.3)(model, *sequence_task())


def test_ctc_is_finite_and_decreases_on_a_tiny_sequence_task():
    torch.manual_seed(0)
    enc = SeqEncoder(9, 16)
    head = nn.Linear(16, 9)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=0.03)
    batch, _, outputs = sequence_task(b=16)
    losses = []
    for _ in range(60):
        ctx = enc(batch)
        loss = ctc_loss(head(ctx.vectors), ctx, outputs)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_ctc_with_too_few_positions_counts_zero_not_infinity():
    enc, head = SeqEncoder(9, 6), nn.Linear(6, 9)
    batch, _, outputs = sequence_task(b=2)
    batch["mask"][:, 2:] = False  # 2 positions for 3+ tokens: no CTC alignment exists
    batch["ids"][:, 2:] = PAD
    ctx = enc(batch)
    assert ctc_loss(head(ctx.vectors), ctx, outputs).item() == 0.0


def test_attention_truth_asks_for_the_mass_inside_each_words_region():
    """The sequence task's token k sits at positions 2k and 2k+1 (0.1 s each): with ground truth
    saying so, ``att_truth`` is -log(mass there), it is in the total with its weight, and
    training on it puts the attention there."""
    from mmdesc.truth import piece_regions, region_mask, truth_masks, truth_term

    lay = TimeLayout(tuple((i * 0.1, (i + 1) * 0.1) for i in range(4)), 0.4)
    assert region_mask(lay, ((0.1, 0.3),)).tolist() == [False, True, True, False]  # centres inside
    alphas = torch.tensor([[[0.5, 0.25, 0.25, 0.0], [0.25, 0.25, 0.25, 0.25]]])  # (1, 2, 4)
    mask, sup = truth_masks([(((0.0, 0.1),), ())], [lay], 2, 4)  # the second piece has no truth
    assert sup.tolist() == [[True, False]]
    assert truth_term(alphas, mask, sup).item() == pytest.approx(-torch.tensor(0.5).log().item())

    class Words:  # a whitespace tokenizer: one piece per word
        def decode(self, ids):
            return " ".join(f"w{i}" for i in ids)

        def word_index(self, ids):
            return list(range(len(ids)))

    assert piece_regions({"spans": [[0, 1], [1, 2]]}, Words(), [5, 6]) == (((0.0, 1.0),), ((1.0, 2.0),))
    assert piece_regions({"spans": [[0, 1]]}, Words(), [5, 6]) is None  # another sentence's spans
    assert piece_regions({"regions": {"w6": [[1, 2, 3, 4]]}}, Words(), [5, 6]) == ((), ((1.0, 2.0, 3.0, 4.0),))
    assert piece_regions({}, Words(), [5]) is None

    torch.manual_seed(0)
    model = Describer(SeqEncoder(9, 12), Decoder(9, 12, emb=6, hidden=12, att=8, out=6, dropout=0.0))
    batch, inputs, outputs = sequence_task(b=16, seed=1)
    lengths = (outputs != PAD).sum(1) - 1  # tokens before EOS
    batch["truth"] = [tuple(((0.2 * k, 0.2 * k + 0.2),) for k in range(n)) for n in lengths.tolist()]
    objective = Objective(attention_truth=2.0)
    total, terms = objective(model, batch, inputs, outputs)
    assert list(terms) == ["xent", "att_truth"] == objective.names
    torch.testing.assert_close(total, terms["xent"] + 2.0 * terms["att_truth"])
    first = terms["att_truth"].item()
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(60):
        loss, terms = objective(model, batch, inputs, outputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert terms["att_truth"].item() < 0.3 * first
    without = {k: v for k, v in batch.items() if k != "truth"}  # validation batches carry none
    assert list(objective(model, without, inputs, outputs)[1]) == ["xent"]
