"""Streaming training data: the loader yields the batches bucket_batches orders, the same
whatever process decodes them, from any batch on; probes check every file up front."""
from __future__ import annotations

import torch

from conftest import RECIPES
from mmdesc import build
from mmdesc.config import load_recipe
from mmdesc.data import BucketSampler, Collate, Pairs, bucket_batches, loader, make_pairs, probe_all


def dataset(tiny_data):
    r = load_recipe(RECIPES / "tiny" / "image.yaml", [f"data.root={tiny_data}"])
    reader = build.build_reader(r)
    examples = build.read_split(r, "train")
    tok = build.build_tokenizer(r, examples)
    kept, lengths, failures = probe_all(reader, examples)
    assert kept == examples and not failures and lengths == [1] * len(examples)
    pairs = make_pairs(examples, tok)
    return reader, Pairs(reader, examples, pairs), [lengths[i] * 1000 + len(y) for i, y in pairs]


def collect(reader, data, lengths, workers: int, start: int = 0):
    sampler = BucketSampler(lengths, 8, seed=3, epoch=1, start=start)
    return [(b.inputs, b.outputs, b.data["pixels"]) for b in loader(data, sampler, Collate(reader), workers=workers)]


def test_the_loader_yields_the_seeded_batches_in_any_process_from_any_batch(tiny_data):
    reader, data, lengths = dataset(tiny_data)
    order = bucket_batches(lengths, 8, seed=3, epoch=1)
    here = collect(reader, data, lengths, workers=0)
    assert len(here) == len(order)
    for (inputs, outputs, pixels), idx in zip(here, order):  # what the batches hold: the pairs the order names
        direct = Collate(reader)([data[i] for i in idx])
        assert torch.equal(inputs, direct.inputs) and torch.equal(pixels, direct.data["pixels"])
    workers = collect(reader, data, lengths, workers=2)
    resumed = collect(reader, data, lengths, workers=1, start=5)
    for a, b in zip(here, workers):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len(resumed) == len(here) - 5
    for a, b in zip(here[5:], resumed):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_making_a_loader_draws_nothing_from_the_global_rng(tiny_data):
    reader, data, lengths = dataset(tiny_data)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    iter(loader(data, BucketSampler(lengths, 8, 3, 0), Collate(reader), workers=0))
    assert torch.equal(torch.rand(3), expected)  # exact resume depends on it


def test_probe_reports_unusable_files_without_decoding(tiny_data, tmp_path):
    from mmdesc.corpora import Example

    reader, _, _ = dataset(tiny_data)
    (tmp_path / "empty.png").write_bytes(b"")
    examples = [Example("a", str(tiny_data / "images" / "train_000000.png"), ["x"]),
                Example("b", str(tmp_path / "empty.png"), ["y"]), Example("c", str(tmp_path / "gone.png"), ["z"])]
    kept, lengths, failures = probe_all(reader, examples)
    assert [e.id for e in kept] == ["a"]
    assert sorted(f.reason for f in failures) == ["empty file (0 bytes)", "no such file"]
