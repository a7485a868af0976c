"""Text modality: tokenizer state, the </s> position, truncation, layouts, and a BiRNN that
ignores padding."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from mmdesc.contexts import ContextSet, TokenLayout
from mmdesc.corpora import Example
from mmdesc.errors import MediaError
from mmdesc.modalities.text import Encoder, Reader
from mmdesc.tokenize import EOS

SOURCES = [
    "a small red circle to the left of a large blue square",
    "a large green triangle above a small yellow star",
    "two crosses and a circle",
    "the blue star is below the red square",
    "a circle",
] * 4


def _examples() -> list[Example]:
    return [Example(id=str(i), source=s, references=["x"]) for i, s in enumerate(SOURCES)]


@pytest.fixture(scope="module", params=["sentencepiece", "word"])
def reader(request) -> Reader:
    r = Reader(tokenizer=request.param, vocab_size=40, max_len=50)
    r.fit(_examples())
    return r


def test_state_round_trip(reader):
    state = json.loads(json.dumps(reader.state()))  # JSON-able, as saved with a checkpoint
    again = Reader(tokenizer=reader.kind, vocab_size=40, max_len=50)
    again.load_state(state)
    assert again.encoder_kwargs() == reader.encoder_kwargs() == {"vocab_size": len(reader.tok)}
    for text in ["a small red circle", "an unseen zebra", ""]:
        a, b = reader.load(text), again.load(text)
        assert torch.equal(a["ids"], b["ids"]) and a["tokens"] == b["tokens"] and a["words"] == b["words"]


def test_unfitted_reader_says_so():
    with pytest.raises(RuntimeError, match="fit"):
        Reader().load("a circle")


def test_empty_line_is_one_position(reader):
    item = reader.load("")
    assert item["ids"].tolist() == [EOS] and item["tokens"] == ["</s>"] and item["words"] == [0]
    assert reader.length(item) == 1
    batch = reader.collate([item])
    ctx = Encoder(reader.encoder_kwargs()["vocab_size"], emb=5, hidden=7).eval()(batch)
    assert ctx.vectors.shape == (1, 1, 14) and ctx.mask.tolist() == [[True]]


def test_layout_tokens_and_words_align_with_ids(reader):
    text = "a small red circle to the left of a large blue square"
    item = reader.load(text)
    ids, tokens, words = item["ids"].tolist(), item["tokens"], item["words"]
    assert len(ids) == len(tokens) == len(words) == reader.length(item)
    assert ids[-1] == EOS and tokens[-1] == "</s>" and words[-1] == len(text.split())
    assert words[0] == 0 and all(b - a in (0, 1) for a, b in zip(words, words[1:]))
    assert sorted(set(words[:-1])) == list(range(len(text.split())))
    spelled = "".join(tokens[:-1]).replace("\u2581", " ").split()
    assert spelled == text.split()  # every word of this sentence is in the vocabulary

    batch = reader.collate([item, reader.load("a circle")])
    lay = batch["layouts"][0]
    assert isinstance(lay, TokenLayout) and lay.tokens == tuple(tokens) and lay.words == tuple(words)


def test_long_input_is_truncated_with_a_warning():
    r = Reader(tokenizer="word", vocab_size=40, max_len=4)
    r.fit(_examples())
    with pytest.warns(UserWarning, match=r"source of 13 tokens.*max_len=4"):
        item = r.load("a small red circle to the left of a large blue square")
    assert item["ids"].tolist()[-1] == EOS and len(item["ids"]) == 4
    assert item["words"] == [0, 1, 2, 3] and item["tokens"][-1] == "</s>"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r.load("a small circle")  # fits: no warning


@pytest.mark.parametrize("bad", ["a\x00circle", "line\nbreak", "bell\x07", "\ud800"])
def test_invalid_text_raises_media_error(reader, bad):
    with pytest.raises(MediaError, match="U\\+"):
        reader.load(bad)
    assert reader.load("a\tcircle")["ids"].numel() >= 2  # a tab is fine


def test_non_string_raises_media_error(reader):
    with pytest.raises(MediaError, match="expected a line of text"):
        reader.load(b"a circle")


def test_collate_pads_with_zero(reader):
    texts = ["a circle", "a small red circle to the left of a large blue square", ""]
    items = [reader.load(s) for s in texts]
    batch = reader.collate(items)
    lengths = [len(it["ids"]) for it in items]
    assert batch["lengths"].tolist() == lengths
    assert batch["ids"].shape == (3, max(lengths))
    for b, it in enumerate(items):
        assert batch["ids"][b, : lengths[b]].tolist() == it["ids"].tolist()
        assert (batch["ids"][b, lengths[b]:] == 0).all()


@pytest.mark.parametrize("rnn,layers", [("gru", 1), ("lstm", 2)])
def test_padded_batch_equals_items_one_by_one(reader, rnn, layers):
    torch.manual_seed(0)
    enc = Encoder(reader.encoder_kwargs()["vocab_size"], emb=5, hidden=7, layers=layers, rnn=rnn,
                  dropout=0.3).eval()
    assert enc.out_dim == 14
    texts = ["a circle", "a small red circle to the left of a large blue square", "", "two crosses"]
    items = [reader.load(t) for t in texts]
    ctx = enc(reader.collate(items))
    assert isinstance(ctx, ContextSet) and ctx.vectors.shape[::2] == (4, 14)
    assert ctx.lengths.tolist() == [len(it["ids"]) for it in items]
    for b, it in enumerate(items):
        alone = enc(reader.collate([it]))
        n = len(it["ids"])
        assert torch.allclose(ctx.vectors[b, :n], alone.vectors[0], atol=1e-6)
        assert (ctx.vectors[b, n:] == 0).all()
        assert ctx.layouts[b] == alone.layouts[0]


def test_encoder_trains():
    enc = Encoder(vocab_size=11, emb=5, hidden=7, layers=1)
    batch = {"ids": torch.tensor([[4, 5, 2], [6, 2, 0]]), "lengths": torch.tensor([3, 2]),
             "layouts": [TokenLayout(("a", "b", "</s>"), (0, 1, 2)), TokenLayout(("c", "</s>"), (0, 1))]}
    ctx = enc(batch)
    assert ctx.mask.tolist() == [[True, True, True], [True, True, False]]
    ctx.vectors.sum().backward()
    assert enc.embed.weight.grad[0].abs().sum() == 0  # padding_idx gets no gradient
    assert all(p.grad is not None for p in enc.rnn.parameters())
