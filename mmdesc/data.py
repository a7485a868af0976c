"""Reading a corpus for training and inference without holding it in memory.

Training streams: ``Pairs`` is a map-style dataset over (example, reference) pairs that
decodes its input on demand (``reader.load``, then ``reader.augment`` when training);
``BucketSampler`` yields length-bucketed batches in an order fixed by (seed, epoch), from
any batch on (exact resume); ``loader`` puts both in a ``torch.utils.data.DataLoader`` with
worker processes. The lengths for bucketing come from ``probe_all``: a cheap probe of
every source (``reader.probe``: a header, not a decode), which is also the up-front check
that every file can be used. Inference streams too: ``stream_sources`` reads sources in
chunks, so the first results come after one chunk and memory stays flat.
"""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from mmdesc.corpora import Example
from mmdesc.errors import DataError, MediaError
from mmdesc.tokenize import BOS, EOS, PAD

TRUTH = "truth"  # the key of a training item's (and batch's) ground-truth regions per target piece


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


def make_pairs(examples: Sequence[Example], tokenizer, max_words: int = 0) -> list[tuple[int, list[int]]]:
    """(example index, target ids) for every reference of every example."""
    pairs = []
    for i, ex in enumerate(examples):
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


# ---------------------------------------------------------------- streaming


def probe(reader, source: str) -> int:
    """A cheap length of ``source``: ``reader.probe`` where the reader has one, else a full read."""
    if hasattr(reader, "probe"):
        return int(reader.probe(source))
    return int(reader.length(reader.load(source)))


def probe_all(reader, examples: Sequence[Example], full: bool = False, workers: int = 2,
              progress: Callable[[int], None] | None = None) -> tuple[list[Example], list[int], list[MediaError]]:
    """Probe (``full``: decode) every example's source, in threads and in order.

    Returns the usable examples, their lengths, and a MediaError for each that failed."""
    def one(ex: Example):
        try:
            return reader.length(reader.load(ex.source)) if full else probe(reader, ex.source)
        except MediaError as e:
            return e

    kept, lengths, failures = [], [], []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for ex, n in zip(examples, pool.map(one, examples, chunksize=64)):
            if isinstance(n, MediaError):
                failures.append(n)
            else:
                kept.append(ex)
                lengths.append(n)
            if progress:
                progress(1)
    return kept, lengths, failures


class Pairs(torch.utils.data.Dataset):
    """(example, reference) pairs whose input is decoded when a batch asks for it.

    ``pairs[i] = (example index, target ids)``. ``augment_seed`` not None: training, so
    ``reader.augment(item, rng)`` runs (where the reader has it) with an rng fixed by
    (seed, epoch, i), which keeps resumed runs exact whatever process decodes the item."""

    def __init__(self, reader, examples: Sequence[Example], pairs: Sequence[tuple[int, list[int]]],
                 augment_seed: int | None = None, truth: Sequence | None = None):
        self.reader, self.examples, self.pairs = reader, list(examples), list(pairs)
        self.augment_seed, self.epoch = augment_seed, 0
        self.truth = truth  # per pair, where each target piece is (mmdesc/truth.py), or None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        ex, ids = self.pairs[i]
        try:
            item = self.reader.load(self.examples[ex].source)
        except MediaError as e:
            return e  # raised again in the main process, where it keeps its type
        if self.augment_seed is not None and hasattr(self.reader, "augment"):
            rng = random.Random(f"{self.augment_seed}:{self.epoch}:{i}")
            item = self.reader.augment(item, rng)
        if self.truth is not None:
            item = {**item, TRUTH: self.truth[i]}
        return item, ids


class Collate:
    """(item, ids) pairs -> ``Batch``: the reader's batch and the teacher-forcing tensors of the
    readable pairs, and the MediaErrors of the others (the caller decides; in a worker process
    an exception would lose its type and arrive as a traceback)."""

    def __init__(self, reader):
        self.reader = reader

    def __call__(self, got: list) -> "Batch":
        bad = [g for g in got if isinstance(g, MediaError)]
        good = [g for g in got if not isinstance(g, MediaError)]
        if not good:
            return Batch(None, None, None, bad)
        inputs, outputs = target_tensors([ids for _, ids in good])
        items = [item for item, _ in good]
        truth = [item.pop(TRUTH, None) if isinstance(item, dict) else None for item in items]
        data = self.reader.collate(items)
        if any(t is not None for t in truth):
            data[TRUTH] = truth  # a list, as it is: the objective's att_truth term reads it
        return Batch(data, inputs, outputs, bad)


@dataclass
class Batch:
    """A collated training batch; ``data`` is None when no input of it could be read."""

    data: dict | None
    inputs: Tensor | None  # (B, T) BOS + target
    outputs: Tensor | None  # (B, T) target + EOS
    failures: list = field(default_factory=list)
    weight: float = 1.0  # of its loss in a step (0: it only stands in for a batch that failed)


class BucketSampler(torch.utils.data.Sampler):
    """``bucket_batches`` of one epoch as a batch sampler, from batch ``start`` on.

    Each batch is one optimisation step of the whole run. With ``world`` processes and
    ``accumulate`` micro-batches per step it is cut into ``world * accumulate`` shards (shard
    j: every (world * accumulate)-th pair from the j-th on, so the shards keep the batch's
    lengths) and process ``rank`` yields its ``accumulate`` shards of every step in turn. A
    batch too small to give every shard a pair is left out on every process alike, so all of
    them take the same steps; with one process and no accumulation none is."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, epoch: int, start: int = 0,
                 rank: int = 0, world: int = 1, accumulate: int = 1):
        parts = world * accumulate
        self.steps = [b for b in bucket_batches(lengths, batch_size, seed, epoch) if len(b) >= parts][start:]
        self.batches = [b[m * world + rank::parts] for b in self.steps for m in range(accumulate)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _worker_init(_: int) -> None:
    """A worker leaves SIGTERM to the training process (``kill`` of the whole process group):
    that one writes its checkpoint and then ends the workers, which otherwise would die first
    and fail the step in progress."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def loader(dataset: Pairs, sampler: BucketSampler, collate: Collate, workers: int = 0,
           pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """The DataLoader of one epoch: ``workers`` processes decode ahead of the training step."""
    # its own generator: making an iterator must not draw from the global RNG (exact resume)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                       pin_memory=pin_memory, prefetch_factor=4 if workers else None,
                                       generator=torch.Generator(), worker_init_fn=_worker_init if workers else None)


def stream_sources(reader, sources: Sequence[str], chunk: int, workers: int = 2) -> Iterator[tuple[list[int], list]]:
    """Read ``sources`` ``chunk`` at a time in threads, the next chunk while the caller works on
    this one; yields (indices, items or MediaErrors), in order."""
    def one(source: str):
        try:
            return reader.load(source)
        except MediaError as e:
            return e

    starts = range(0, len(sources), max(1, chunk))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def submit(s: int):
            idx = list(range(s, min(s + chunk, len(sources))))
            return idx, [pool.submit(one, sources[i]) for i in idx]

        ahead = submit(starts[0]) if starts else None
        for n, _ in enumerate(starts):
            idx, futures = ahead
            ahead = submit(starts[n + 1]) if n + 1 < len(starts) else None
            yield idx, [f.result() for f in futures]
