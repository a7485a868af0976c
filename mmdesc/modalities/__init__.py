"""The one registry of modalities.

Each modality is one module here that defines, with these exact names:

``ReaderConfig``, ``EncoderConfig``, ``SplitConfig``
    frozen dataclasses: the recipe sections ``input:``, ``encoder:`` and ``data.<split>:``.
    Every field of ``ReaderConfig``/``EncoderConfig`` is a constructor argument of
    ``Reader``/``Encoder`` (``build.py`` passes them as plain arguments), except those
    ``EncoderConfig`` inherits from ``config.EncoderTransfer`` (``init_from``, ``unfreeze_at``,
    ``backbone_lr``: build.py applies them, mmdesc/transfer.py).
``Reader(**ReaderConfig)``
    turns a source (a file path, or a line of text) into an item and items into a batch:
    ``fit(examples)``, ``state() -> dict`` / ``load_state(dict)`` (JSON-able, saved with the
    model), ``encoder_kwargs() -> dict`` (constructor arguments the encoder needs from the
    data, e.g. a vocabulary size), ``load(source) -> item`` (raises ``MediaError``),
    ``length(item) -> int`` (input length, for relative output limits and bucketing),
    ``collate(items) -> dict[str, Tensor]``.
``Encoder(**EncoderConfig, **reader.encoder_kwargs())``
    an ``nn.Module`` with ``out_dim`` whose ``forward(batch) -> ContextSet``.
``read_split(split: SplitConfig, root: Path) -> list[Example]``
    reads one split of a corpus (relative paths resolve against ``root``).
``synthesize(root: Path, train: int, valid: int, test: int, seed: int) -> None``
    writes this modality's part of the synthetic corpus under ``root`` from the shared scenes
    (``corpora.synth.split_scenes``), its scene-manifest entries (``synth.add_to_manifest``)
    and its completion marker (``synth.mark_complete``), all under its registry name.
``bench_inputs(root: Path, n: int) -> list``
    ``n`` sources ``Reader.load`` accepts (files written under ``root``, or lines), for bench/.
``SUFFIXES``
    file suffixes that ``describe`` routes to this modality (empty for text: a modality
    without suffixes reads lines of text, so ``translate`` takes it and ``describe`` does not).

Optional, used where present:

``Reader.probe(source) -> int``
    a cheap length (from a header, not a decode) for bucketing and the up-front data check;
    raises ``MediaError`` for a clearly unusable file. Without it, ``length(load(source))``.
``Reader.augment(item, rng: random.Random) -> item``
    training-time augmentation; called by the training data only, never in evaluation.
``Encoder.features(batch) -> ContextSet`` and ``Encoder.head(ContextSet) -> ContextSet``
    the encoder in two parts, ``forward(batch) == head(features(batch))``, where ``features``
    uses no weights but those of ``Encoder.backbone``: with that backbone frozen, its
    features are computed once and cached (``train.cache_features``, mmdesc/features.py) and
    training runs ``head`` alone. ``Reader.augment`` returns the item itself when it is off.
``claims(path) -> bool``
    whether a file holds this modality's kind of input (its streams), for ``describe`` when
    several models claim the same suffix (an ``.mp4`` may hold video or only sound).
``backdrop(source, layout) -> PIL.Image | None``
    the picture that attention is drawn over (the image, key frames, a spectrogram).
``ReaderConfig.problems()``, ``EncoderConfig.problems()`` (and any config's)
    range checks of every number (``config.check_range``), so a recipe or a checkpoint from
    elsewhere cannot ask for a model that does not fit in memory.
``EncoderConfig.without_pretrained() -> EncoderConfig``
    the same encoder without reading a pretrained-weights file: used when the weights come
    from a checkpoint, so a trained checkpoint never needs the file it started from.

Adding a modality is one module and one line in ``_MODULES``. Modules are imported on
first use so that ``mmdesc --help`` stays light.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from types import ModuleType

_MODULES = {
    "image": "mmdesc.modalities.image",
    "speech": "mmdesc.modalities.speech",
    "text": "mmdesc.modalities.text",
    "video": "mmdesc.modalities.video",
}


class _Registry(Mapping[str, ModuleType]):
    def __getitem__(self, name: str) -> ModuleType:
        if name not in _MODULES:
            raise KeyError(name)
        return importlib.import_module(_MODULES[name])

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


MODALITIES: Mapping[str, ModuleType] = _Registry()
