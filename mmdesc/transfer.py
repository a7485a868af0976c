"""Transfer learning: where a new model's weights start, and when a frozen backbone trains.

Recipe settings (``build.py`` applies the first three when a training starts; a checkpoint
already holds their result, so a trained model never needs the files it started from)::

    encoder.init_from: CKPT   the encoder weights (and the reader state) of another mmdesc model
    decoder.init_from: CKPT   the decoder weights (and the tokenizer) of another mmdesc model
    decoder.embeddings: FILE  word vectors in word2vec or GloVe text format for the decoder's
                              embeddings, looked up by the tokenizer's words
    encoder.unfreeze_at: N    the backbone stages ``encoder.finetune`` froze train from step N on
    encoder.backbone_lr: LR   the backbone's own learning rate (an optimizer group of its own)

CKPT is a checkpoint or run folder of the same modality; every weight of the part must exist
there with the same shape, else one ``ConfigError`` line lists what differs. A pretrained
backbone (``encoder.pretrained``, ``encoder.weights``) is the modality's own business
(mmdesc/modalities); this module only needs it to be the encoder's ``backbone`` attribute.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mmdesc.errors import CheckpointError, ConfigError

MAX_EMBEDDING_LINE = 1 << 20  # characters of one line of a word-vector file


# ---------------------------------------------------------------- another model's checkpoint


def source(key: str, path: str, modality: str) -> tuple[Path, dict]:
    """The checkpoint folder ``path`` names (``key``: the recipe key, for messages) and its
    metadata, which must be a model of ``modality``."""
    from mmdesc import checkpoint

    try:
        folder = checkpoint.resolve(path)
        meta = checkpoint.read_meta(folder)
    except CheckpointError as e:
        raise ConfigError(f"{key}: {e}") from None
    theirs = (meta.get("recipe") or {}).get("modality") if isinstance(meta.get("recipe"), dict) else None
    if theirs != modality:
        raise ConfigError(f"{key}: {folder} holds a {theirs or 'non-mmdesc'} model, not a {modality} one")
    return folder, meta


def reader_state(path: str, modality: str) -> dict | None:
    """The reader state of ``encoder.init_from``'s checkpoint ``path`` (its encoder was trained
    on inputs read that way), or None when there is none (``path`` empty)."""
    if not path:
        return None
    _, meta = source("encoder.init_from", path, modality)
    state = meta.get("reader", {})
    if not isinstance(state, dict):
        raise ConfigError(f"encoder.init_from: {path}: its reader state is not a mapping")
    return state


def tokenizer(path: str, modality: str):
    """The tokenizer of ``decoder.init_from``'s checkpoint ``path`` (its decoder's vocabulary),
    or None (``path`` empty)."""
    from mmdesc.tokenize import Tokenizer

    if not path:
        return None
    folder, meta = source("decoder.init_from", path, modality)
    try:
        return Tokenizer.from_dict(meta.get("tokenizer"))
    except ValueError as e:
        raise ConfigError(f"decoder.init_from: {folder}: its tokenizer is not usable ({e})") from None


def load_part(module: nn.Module, prefix: str, key: str, path: str, modality: str) -> int:
    """Copy the weights ``prefix``* of the checkpoint ``path`` into ``module``; returns how many
    tensors. Every tensor of ``module`` must be there with the same shape (and nothing more):
    otherwise one ``ConfigError`` listing the differences, and nothing is copied."""
    from safetensors import safe_open

    from mmdesc import checkpoint

    folder, _ = source(key, path, modality)
    try:
        header = checkpoint.read_header(folder / checkpoint.MODEL)
    except CheckpointError as e:
        raise ConfigError(f"{key}: {e}") from None
    theirs = {name[len(prefix):]: tuple(shape) for name, (_, shape) in header.items() if name.startswith(prefix)}
    ours = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    wrong = [f"{n} {_shape(ours[n])} here, {_shape(theirs[n])} there" for n in ours if n in theirs
             and theirs[n] != ours[n]]
    wrong += [f"{n} missing there" for n in ours if n not in theirs]
    wrong += [f"{n} not here" for n in theirs if n not in ours]
    if wrong:
        more = f" and {len(wrong) - 6} more" if len(wrong) > 6 else ""
        raise ConfigError(f"{key}: {folder} does not fit this {prefix.rstrip('.')}: {len(wrong)} "
                          f"mismatches ({'; '.join(wrong[:6])}{more})")
    state = {}
    with safe_open(str(folder / checkpoint.MODEL), framework="pt") as f:
        for name in ours:
            state[name] = f.get_tensor(prefix + name)
    module.load_state_dict(state, strict=True)
    return len(state)


def _shape(shape: tuple) -> str:
    return str(tuple(shape))


# ---------------------------------------------------------------- word vectors


def read_vectors(path: str | Path, words: set[str], dim: int) -> dict[str, torch.Tensor]:
    """The vectors of ``words`` in a word2vec or GloVe text file (``word v1 ... vD`` a line; word2vec's
    first line ``count D`` is skipped), each (D,). Reads the file once, keeping only those
    words (the first entry of a word wins). Raises ``ConfigError`` naming the file and the line
    for a file that is not in that format, and when its D is not ``dim``."""
    key = "decoder.embeddings"
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{key}: {p}: {'no such file' if not p.exists() else 'not a regular file'}")
    found: dict[str, torch.Tensor] = {}
    width, entries = None, 0
    with open(p, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if len(line) > MAX_EMBEDDING_LINE:
                raise ConfigError(f"{key}: {p}, line {number}: longer than {MAX_EMBEDDING_LINE:,} characters; "
                                  f"not a word-vector text file")
            parts = line.rstrip().split(" ")
            header = number == 1 and len(parts) == 2 and all(x.isdigit() for x in parts)  # word2vec: "count D"
            if not line.strip() or (header and width is None):
                width = int(parts[1]) if header else width
                continue
            width = width or len(parts) - 1
            if width != dim:
                raise ConfigError(f"{key}: {p} has {width}-dimensional vectors but decoder.emb is {dim} "
                                  f"(set decoder.emb={width}, or give {dim}-dimensional vectors)")
            if len(parts) <= width:
                raise ConfigError(f"{key}: {p}, line {number}: {len(parts)} fields, not a word and {width} numbers")
            word, entries = " ".join(parts[:-width]), entries + 1
            if word not in words or word in found:
                continue
            try:
                vector = torch.tensor([float(v) for v in parts[-width:]])
            except ValueError:
                raise ConfigError(f"{key}: {p}, line {number}: not a word and {width} numbers") from None
            if not torch.isfinite(vector).all():
                raise ConfigError(f"{key}: {p}, line {number}: the vector of {word[:40]!r} is not finite")
            found[word] = vector
    if not entries:
        raise ConfigError(f"{key}: {p} holds no word vectors")
    return found


def vocabulary_words(tokenizer) -> dict[int, str]:
    """id -> the word a vocabulary entry stands for: entries that start a word (the tokenizer's
    pieces marked with ``WORD_START``), less the marker; specials and word-inner pieces have none."""
    from mmdesc.tokenize import SPECIALS, WORD_START

    ids = list(range(len(SPECIALS), len(tokenizer)))
    return {i: p[len(WORD_START):] for i, p in zip(ids, tokenizer.pieces(ids))
            if p.startswith(WORD_START) and len(p) > len(WORD_START)}


def load_embeddings(embedding: nn.Embedding, tokenizer, path: str) -> tuple[int, int]:
    """Copy the vectors of ``path`` into the rows of ``embedding`` whose vocabulary entry is a
    word of the file (as it is, else lower-cased); the others keep their initialisation.
    Returns (rows set, rows that could have been: the vocabulary less its specials)."""
    from mmdesc.tokenize import SPECIALS

    words = vocabulary_words(tokenizer)
    wanted = set(words.values()) | {w.lower() for w in words.values()}
    vectors = read_vectors(path, wanted, embedding.embedding_dim)
    rows = {i: vectors.get(w, vectors.get(w.lower())) for i, w in words.items()}
    rows = {i: v for i, v in rows.items() if v is not None}
    if rows:
        index = torch.tensor(list(rows))
        with torch.no_grad():
            embedding.weight[index] = torch.stack(list(rows.values())).to(embedding.weight)  # (R, E)
    return len(rows), len(tokenizer) - len(SPECIALS)


# ---------------------------------------------------------------- the start of a training


def initialise(model: nn.Module, tokenizer, modality: str, encoder_from: str = "", decoder_from: str = "",
               embeddings: str = "", say: Callable[[str], None] = print) -> None:
    """Start a newly built Describer's encoder and decoder from other checkpoints (``*_from``),
    and its word embeddings from a word-vector file, where given; says what it did."""
    if encoder_from:
        n = load_part(model.encoder, "encoder.", "encoder.init_from", encoder_from, modality)
        say(f"encoder: {n} tensors from {encoder_from}")
    if decoder_from:
        n = load_part(model.decoder, "decoder.", "decoder.init_from", decoder_from, modality)
        say(f"decoder: {n} tensors from {decoder_from} (and its tokenizer)")
    if embeddings:
        got, of = load_embeddings(model.decoder.embed, tokenizer, embeddings)
        say(f"embeddings: {got} of {of} vocabulary entries found in {embeddings} "
            f"({100 * got / max(of, 1):.0f}%); the others (word pieces among them) start random")


# ---------------------------------------------------------------- the backbone in training


def backbone(model: nn.Module) -> nn.Module | None:
    return getattr(model.encoder, "backbone", None)


def param_groups(model: nn.Module, weight_decay: float, lr: float = 0.0, at: int = 0) -> list[dict]:
    """The optimizer's parameter groups: weight decay on matrices, none on vectors; with a
    backbone learning rate ``lr`` or an unfreezing step ``at``, the backbone's parameters in
    groups of their own (at ``lr``; with the frozen ones too when they train from ``at`` on: an
    optimizer skips parameters without gradients, so they wait untouched until then). Without
    either, the same two groups as before these settings existed (old runs resume)."""
    trunk = backbone(model)
    if (lr or at) and trunk is None:
        raise ConfigError(f"encoder.{'backbone_lr' if lr else 'unfreeze_at'}: this encoder has no backbone")
    own = {id(p) for p in trunk.parameters()} if (lr or at) else set()
    rest = [p for p in model.parameters() if id(p) not in own and p.requires_grad]
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
    if own:
        mine = [p for p in trunk.parameters() if p.requires_grad or at]
        extra = {"lr": lr} if lr else {}
        groups += [{"params": [p for p in mine if p.dim() >= 2], "weight_decay": weight_decay, **extra},
                   {"params": [p for p in mine if p.dim() < 2], "weight_decay": 0.0, **extra}]
    return groups


def unfreeze(model: nn.Module, step: int, at: int) -> bool:
    """Before training step ``step``: from step ``at`` (> 0) on, every backbone parameter trains
    (BatchNorm statistics stay as they were: frozen stages keep eval mode). Cheap to call at
    every step, and right after a resume. Returns whether it changed anything."""
    trunk = backbone(model)
    if not at or step < at or trunk is None:
        return False
    frozen = [p for p in trunk.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    return bool(frozen)


def frozen(encoder: nn.Module) -> bool:
    """Whether ``encoder``'s backbone exists and nothing of it trains (its features can be cached)."""
    trunk = getattr(encoder, "backbone", None)
    return trunk is not None and not any(p.requires_grad for p in trunk.parameters())
