"""Cached features of a frozen encoder: computed once per input, read back in every epoch.

An encoder that comes in two parts (``Encoder.features``, which uses only its ``backbone``,
and ``Encoder.head``; see mmdesc/modalities) and whose backbone is frozen computes the same
features for an input in every epoch. ``train.cache_features`` (or ``mmdesc data cache``)
computes them once and stores them; training then reads them instead of decoding and
re-encoding the media, and runs the head and the decoder alone. Checkpoints are unchanged:
they hold the whole encoder and describe raw media.

On disk (``train.feature_cache``, by default ``OUT/features``)::

    CACHE/<encoder key>/encoder.json              what the encoder key hashes, readable
    CACHE/<encoder key>/shard-<id>.safetensors    "<input key>" -> vectors (n, C), "<input key>.mask"
                                                  -> (n,); the layouts in the header's metadata

The *encoder key* hashes everything the features depend on: the modality, the input and
encoder settings, the reader's fitted state, the backbone's weights and buffers (every
byte), mmdesc's version and this format's. The *input key* hashes the input's content: a
file's bytes (not its name or time: a renamed file keeps its entry, an edited one gets a new
one), or a line of text. So a changed file or a changed encoder never reads a stale entry;
entries nobody asks for any more stay until the folder is removed. Shards are written under
a temporary name and renamed into place, so a killed run leaves whole shards only.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from mmdesc.contexts import ContextSet, GridLayout, TimeGridLayout, TimeLayout, TokenLayout
from mmdesc.data import TRUTH, Batch, stream_sources, target_tensors
from mmdesc.errors import ConfigError, DataError, MediaError

FORMAT = 1
SHARD_BYTES = 256 << 20  # a shard is written once its entries hold this many bytes
# inputs encoded at a time on a CPU: with small batches the activations' buffers stay in the
# allocator; 100 images of 128 px spend twice the convolutions' time mapping and freeing memory
CPU_BATCH = 8
LAYOUTS = {"grid": GridLayout, "time": TimeLayout, "time_grid": TimeGridLayout, "tokens": TokenLayout}


# ---------------------------------------------------------------- keys


def _digest(data: bytes | None = None) -> "hashlib.blake2b":
    return hashlib.blake2b(data or b"", digest_size=16)


def input_key(source: str) -> str:
    """The content hash of an input: the bytes of a regular file, else the source's text."""
    try:
        is_file = stat.S_ISREG(os.stat(source).st_mode)
    except (OSError, ValueError):
        is_file = False
    if not is_file:
        return _digest(b"text:" + str(source).encode("utf-8", "surrogatepass")).hexdigest()
    h = _digest(b"file:")
    try:
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:  # unreadable: a key of its name; reading it for the features fails clearly
        return _digest(b"unreadable:" + str(source).encode("utf-8", "surrogatepass")).hexdigest()
    return h.hexdigest()


def weights_digest(module: nn.Module) -> str:
    """A hash of every tensor (parameters and buffers) of ``module``, names, shapes and bytes."""
    h = _digest()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # scalars too
    return h.hexdigest()


def encoder_key(settings: dict, backbone: nn.Module) -> tuple[str, dict]:
    """The key of an encoder's features (``settings``: JSON-able, what else they depend on)
    and the record it hashes."""
    from mmdesc import __version__

    record = {"format": FORMAT, "mmdesc": __version__, **settings, "backbone": weights_digest(backbone)}
    return _digest(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest(), record


# ---------------------------------------------------------------- layouts <-> JSON


def layout_to_json(layout) -> dict:
    out = {"kind": layout.kind}
    for f in fields(layout):
        if f.init:
            v = getattr(layout, f.name)
            out[f.name] = layout_to_json(v) if is_dataclass(v) else v
    return out


def layout_from_json(d: dict):
    cls = LAYOUTS[d["kind"]]
    return cls(**{k: layout_from_json(v) if isinstance(v, dict) else _tuples(v) for k, v in d.items() if k != "kind"})


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


# ---------------------------------------------------------------- the store


class FeatureStore:
    """The entries of one encoder key's folder: ``get(key)`` -> (vectors (n, C), mask (n,), layout).

    Opened by reading the shards' headers only; a shard's tensors are memory-mapped when first
    asked for, in each process that asks (a DataLoader worker opens its own)."""

    def __init__(self, folder: str | Path):
        from safetensors import safe_open

        self.folder = Path(folder)
        self.index: dict[str, Path] = {}
        for shard in sorted(self.folder.glob("shard-*.safetensors")):
            try:
                with safe_open(str(shard), framework="pt") as f:
                    for name in f.keys():
                        if not name.endswith(".mask"):
                            self.index.setdefault(name, shard)
            except Exception:  # noqa: BLE001 - a shard that does not read is as if absent
                continue
        self._open: dict[Path, tuple] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}  # open shards stay in the process that opened them

    def get(self, key: str) -> tuple[Tensor, Tensor, object]:
        from safetensors import safe_open

        shard = self.index[key]
        if shard not in self._open:  # its distinct layouts parsed once
            f = safe_open(str(shard), framework="pt")
            meta = json.loads(f.metadata()["layouts"])
            self._open[shard] = (f, [layout_from_json(d) for d in meta["layouts"]], meta["index"])
        f, layouts, index = self._open[shard]
        return f.get_tensor(key), f.get_tensor(key + ".mask"), layouts[index[key]]

    def write(self, entries: dict[str, tuple[Tensor, Tensor, object]]) -> Path:
        """One new shard of ``entries`` (key -> vectors, mask, layout), put in place atomically."""
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        tensors, distinct, index = {}, {}, {}
        for key, (vectors, mask, layout) in entries.items():
            tensors[key], tensors[key + ".mask"] = vectors.contiguous(), mask.contiguous()
            text = json.dumps(layout_to_json(layout))
            index[key] = distinct.setdefault(text, len(distinct))
        layouts = [json.loads(t) for t in distinct]
        path = self.folder / f"shard-{uuid.uuid4().hex[:16]}.safetensors"
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp), metadata={"layouts": json.dumps({"layouts": layouts, "index": index})})
        os.replace(tmp, path)
        for key in entries:
            self.index.setdefault(key, path)
        return path


# ---------------------------------------------------------------- computing


def check_cacheable(encoder: nn.Module, reader, item, unfreeze_at: int, what: str) -> None:
    """Refuse, in one ``ConfigError`` line, to cache features that training would change:
    an encoder without a frozen ``features`` part, a backbone that unfreezes, augmentation."""
    from mmdesc import transfer

    key = "train.cache_features"
    if not (hasattr(encoder, "features") and hasattr(encoder, "head")):
        raise ConfigError(f"{key}: the {what} encoder has no frozen part to cache (no features/head split); "
                          f"train without train.cache_features")
    if not transfer.frozen(encoder):
        raise ConfigError(f"{key}: the {what} encoder's backbone trains, so its features change at every "
                          f"step; freeze it (encoder.finetune=none) or train without train.cache_features")
    if unfreeze_at:
        raise ConfigError(f"{key}: encoder.unfreeze_at={unfreeze_at} trains the backbone from that step on, so "
                          f"cached features would go stale; set one of the two")
    if item is not None and hasattr(reader, "augment"):
        import random

        if reader.augment(item, random.Random(0)) is not item:
            raise ConfigError(f"{key}: the {what} inputs are augmented in training (input.augment* / masks), so "
                              f"they differ in every epoch; turn augmentation off or train without the cache")


@torch.inference_mode()
def compute(encoder: nn.Module, reader, sources: Sequence[str], keys: Sequence[str], store: FeatureStore,
            batch_size: int, device: torch.device, progress: Callable[[int], None] | None = None
            ) -> dict[str, MediaError]:
    """Encode (``encoder.features``, in eval mode) every source whose key the store lacks, in
    batches, and write the results as shards; returns the key -> MediaError of the unreadable."""
    from mmdesc.data import to_device

    todo, seen = [], set(store.index)
    for source, key in zip(sources, keys):
        if key not in seen:
            seen.add(key)
            todo.append((source, key))
    failures: dict[str, MediaError] = {}
    pending, size = {}, 0
    was_training = encoder.training
    encoder.eval()
    try:
        for idx, items in stream_sources(reader, [s for s, _ in todo], max(1, batch_size)):
            good = [(todo[i][1], it) for i, it in zip(idx, items) if not isinstance(it, MediaError)]
            failures.update((todo[i][1], it) for i, it in zip(idx, items) if isinstance(it, MediaError))
            if good:
                ctx = encoder.features(to_device(reader.collate([it for _, it in good]), device))
                vectors, mask = ctx.vectors.float().cpu(), ctx.mask.cpu()
                for b, (key, _) in enumerate(good):
                    n = int(mask[b].nonzero().max()) + 1 if mask[b].any() else 1  # up to its last real position
                    pending[key] = (vectors[b, :n].clone(), mask[b, :n].clone(), ctx.layouts[b])
                    size += pending[key][0].nbytes
            if size >= SHARD_BYTES:
                store.write(pending)
                pending, size = {}, 0
            if progress is not None:
                progress(len(idx))
        if pending:
            store.write(pending)
    finally:
        encoder.train(was_training)
    return failures


# ---------------------------------------------------------------- training over the cache


class CachedPairs(torch.utils.data.Dataset):
    """``data.Pairs`` over cached features: (example, reference) pairs whose input is its
    features, read from the store (or the MediaError its decoding raised). ``truth``: as
    ``data.Pairs``, where each pair's target pieces are (``loss.attention_truth``)."""

    def __init__(self, store: FeatureStore, keys: Sequence[str], pairs: Sequence[tuple[int, list[int]]],
                 failures: dict[str, MediaError] | None = None, truth: Sequence | None = None):
        self.store, self.keys, self.pairs = store, list(keys), list(pairs)
        self.failures = dict(failures or {})
        self.truth = truth
        self.epoch = 0  # as Pairs: the trainer sets it (features do not change with it)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        ex, ids = self.pairs[i]
        key = self.keys[ex]
        if key in self.failures:
            return self.failures[key]
        return (*self.store.get(key), None if self.truth is None else self.truth[i]), ids


class FeatureCollate:
    """((vectors, mask, layout, truth), ids) pairs -> ``data.Batch`` whose data is
    ``{"features": (B, N, C), "features_mask": (B, N), "layouts": [...]}`` (zero-padded to the
    longest), which ``Describer.encode`` hands to the encoder's head, and ``data.TRUTH`` where
    the pairs carry ground truth (``CachedPairs(truth=...)``)."""

    def __call__(self, got: list) -> Batch:
        bad = [g for g in got if isinstance(g, MediaError)]
        good = [g for g in got if not isinstance(g, MediaError)]
        if not good:
            return Batch(None, None, None, bad)
        n = max(v.shape[0] for (v, _, _, _), _ in good)
        c = good[0][0][0].shape[1]
        vectors = torch.zeros(len(good), n, c)
        mask = torch.zeros(len(good), n, dtype=torch.bool)
        for b, ((v, m, _, _), _) in enumerate(good):
            vectors[b, : v.shape[0]] = v
            mask[b, : m.shape[0]] = m
        inputs, outputs = target_tensors([ids for _, ids in good])
        data = {"features": vectors, "features_mask": mask, "layouts": [lay for (_, _, lay, _), _ in good]}
        truth = [t for (_, _, _, t), _ in good]
        if any(t is not None for t in truth):
            data[TRUTH] = truth  # as data.Collate: the objective's att_truth term reads it
        return Batch(data, inputs, outputs, bad)


def cached(folder: str | Path, settings: dict, encoder: nn.Module, reader, sources: Sequence[str],
           batch_size: int, device: torch.device, unfreeze_at: int = 0, what: str = "",
           say: Callable[[str], None] = print) -> tuple[FeatureStore, list[str], dict[str, MediaError]]:
    """The store of ``encoder``'s features under ``folder``, with every source in it (computed
    now where missing); the sources' keys and the failures (key -> MediaError)."""
    first = None
    for source in sources[:1]:
        try:
            first = reader.load(source)
        except MediaError:
            pass
    check_cacheable(encoder, reader, first, unfreeze_at, what)
    key, record = encoder_key(settings, encoder.backbone)
    store = FeatureStore(Path(folder) / key)
    keys = [input_key(s) for s in sources]
    missing = len({k for k in keys if k not in store})
    if missing:
        say(f"caching the features of {missing:,} inputs in {store.folder} ...")
        store.folder.mkdir(parents=True, exist_ok=True)
        (store.folder / "encoder.json").write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
        failures = compute(encoder, reader, sources, keys, store, batch_size, device)
    else:
        failures = {}
    say(f"features of {len(set(keys)) - len(failures):,} inputs in {store.folder} "
        f"({missing - len(failures):,} computed now, {len(set(keys)) - missing:,} read)")
    return store, keys, failures


def report(failures: dict[str, MediaError], total: int, split: str, skip_bad: bool,
           say: Callable[[str], None]) -> None:
    """As the trainer's up-front check: the unreadable inputs, then a DataError unless skip_bad."""
    if not failures:
        return
    errors = list(failures.values())
    shown = "\n".join(f"  {e}" for e in errors[:10])
    more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
    if not skip_bad:
        raise DataError(f"{len(errors)} of {total} {split} inputs cannot be read:\n{shown}{more}\n"
                        f"(train.skip_bad=true trains on the rest)")
    say(f"skipping {len(errors)} unreadable {split} inputs:\n{shown}{more}")
