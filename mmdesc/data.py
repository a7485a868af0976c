"""Loading a corpus into model items, length-bucketed batches, and target tensors."""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from mmdesc.corpora import Example
from mmdesc.errors import MediaError
from mmdesc.tokenize import BOS, EOS, PAD


@dataclass
class Loaded:
    """Examples whose sources were read, their items (same order), and what failed."""

    examples: list[Example] = field(default_factory=list)
    items: list = field(default_factory=list)
    failures: list[MediaError] = field(default_factory=list)


def read_sources(reader, sources: Sequence[str], workers: int = 2,
                 progress: Callable[[int], None] | None = None) -> list:
    """``reader.load`` of every source, in threads and in order: an item, or the MediaError it raised."""
    def one(source: str):
        try:
            return reader.load(source)
        except MediaError as e:
            return e

    out = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for item in pool.map(one, sources, chunksize=32):
            out.append(item)
            if progress:
                progress(1)
    return out


def load_all(reader, examples: Sequence[Example], workers: int = 2,
             progress: Callable[[int], None] | None = None) -> Loaded:
    """Read every example's source; keep the items of those that load and the failures."""
    out = Loaded()
    for ex, item in zip(examples, read_sources(reader, [ex.source for ex in examples], workers, progress)):
        if isinstance(item, MediaError):
            out.failures.append(item)
        else:
            out.examples.append(ex)
            out.items.append(item)
    return out


def make_pairs(loaded: Loaded, tokenizer, max_words: int = 0) -> list[tuple[int, list[int]]]:
    """(item index, target ids) for every reference of every loaded example."""
    pairs = []
    for i, ex in enumerate(loaded.examples):
        for ref in ex.references:
            words = ref.split()
            if max_words > 0 and len(words) > max_words:
                ref = " ".join(words[:max_words])
            ids = tokenizer.encode(ref)
            if ids:
                pairs.append((i, ids))
    return pairs


def bucket_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                   bucket: int = 50) -> list[list[int]]:
    """Batches of indices with similar lengths, in an order fixed by (seed, epoch).

    Indices are shuffled, sorted by length within chunks of ``bucket`` batches, cut into
    batches, and the batches shuffled: little padding, still random, reproducible."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * bucket
    batches = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s:s + chunk], key=lambda i: lengths[i])
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def target_tensors(targets: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Teacher-forcing tensors: inputs = BOS + y, outputs = y + EOS, both (B, T) padded with PAD."""
    t = max(len(y) for y in targets) + 1
    inputs = torch.full((len(targets), t), PAD, dtype=torch.long)
    outputs = torch.full((len(targets), t), PAD, dtype=torch.long)
    for b, y in enumerate(targets):
        inputs[b, 0] = BOS
        inputs[b, 1:len(y) + 1] = torch.tensor(y)
        outputs[b, :len(y)] = torch.tensor(y)
        outputs[b, len(y)] = EOS
    return inputs, outputs


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
