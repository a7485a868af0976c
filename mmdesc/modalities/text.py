"""Text: a source sentence becomes one context vector per subword token, read by a
bidirectional GRU (Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly
Learning to Align and Translate").

Every source ends with ``</s>``, so an empty line still has one position and the mask is never
empty. The layout keeps each token's piece and the index of the whitespace word it belongs to
(``</s>`` gets the index just past the last word), which is what word-alignment scores need.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmdesc.config import MAX_DIM, MAX_VOCAB, EncoderTransfer, check_range
from mmdesc.contexts import ContextSet, TokenLayout
from mmdesc.corpora import Example
from mmdesc.errors import MediaError
from mmdesc.tokenize import EOS, PAD, SPECIALS, Tokenizer

SUFFIXES: tuple[str, ...] = ()

NAME = "text"  # this modality's key in MODALITIES, its corpus part and manifest forms
TOKENIZERS = ("sentencepiece", "word")
RNNS = ("gru", "lstm")
SOURCE = "<input>"  # how a MediaError names a line of text
INVALID = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")  # control chars but tab; surrogates


@dataclass(frozen=True)
class ReaderConfig:
    tokenizer: Literal["sentencepiece", "word"] = "sentencepiece"
    vocab_size: int = 1000
    model_type: Literal["unigram", "bpe"] = "unigram"
    max_len: int = 200

    def problems(self) -> list[str]:
        return check_range(self, 5, MAX_VOCAB, "vocab_size") + check_range(self, 1, 100_000, "max_len")


@dataclass(frozen=True)
class EncoderConfig(EncoderTransfer):  # + init_from, unfreeze_at, backbone_lr (mmdesc/transfer.py)
    emb: int = 128
    hidden: int = 128
    layers: int = 1
    rnn: Literal["gru", "lstm"] = "gru"
    dropout: float = 0.1

    def problems(self) -> list[str]:
        found = check_range(self, 1, MAX_DIM, "emb", "hidden") + check_range(self, 1, 16, "layers")
        if not 0 <= self.dropout < 1:
            found.append(f"dropout: must be in [0, 1), got {self.dropout}")
        return found


@dataclass(frozen=True)
class SplitConfig:
    src: str | None = None
    tgt: str | None = None
    tsv: str | None = None
    align: str | None = None


class Reader:
    """Source sentence -> ``{"ids": long (S,), "tokens": [piece, ...], "words": [word index, ...]}``.

    ``S <= max_len`` including the final ``</s>``; longer inputs are truncated with a warning.
    The source tokenizer is trained by ``fit`` on the training sources and travels in ``state()``.
    """

    def __init__(self, tokenizer: str = "sentencepiece", vocab_size: int = 1000, max_len: int = 200,
                 model_type: str = "unigram"):
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer: {tokenizer!r} is not one of {{{', '.join(TOKENIZERS)}}}")
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1 (the </s> position), got {max_len}")
        self.kind = tokenizer
        self.vocab_size = vocab_size
        self.model_type = model_type
        self.max_len = max_len
        self.tok: Tokenizer | None = None

    def fit(self, examples: Sequence[Example]) -> None:
        self.tok = Tokenizer.train((ex.source for ex in examples), self.kind, self.vocab_size, self.model_type)

    def state(self) -> dict:
        return {"tokenizer": self._tokenizer().to_dict()}

    def load_state(self, state: dict) -> None:
        self.tok = Tokenizer.from_dict(state["tokenizer"])

    def encoder_kwargs(self) -> dict:
        return {"vocab_size": len(self._tokenizer())}

    def length(self, item: dict) -> int:
        return int(item["ids"].numel())

    def probe(self, text: str) -> int:
        """A line is its own header: its length in tokens."""
        return self.length(self.load(text))

    def _tokenizer(self) -> Tokenizer:
        if self.tok is None:
            raise RuntimeError("the text reader has no tokenizer yet: call fit(examples) or load_state()")
        return self.tok

    def load(self, text: str) -> dict:
        """Raises :class:`MediaError` for a non-string or a line with control characters."""
        tok = self._tokenizer()
        if not isinstance(text, str):
            raise MediaError(SOURCE, f"expected a line of text, got {type(text).__name__}")
        bad = INVALID.search(text)
        if bad:
            raise MediaError(SOURCE, f"invalid character U+{ord(bad.group()):04X} at position {bad.start()}")
        ids = tok.encode(text)
        if len(ids) + 1 > self.max_len:
            warnings.warn(f"source of {len(ids) + 1} tokens (with </s>) truncated to max_len={self.max_len}",
                          stacklevel=2)
            ids = ids[: self.max_len - 1]
        words = tok.word_index(ids)
        n_words = words[-1] + 1 if words else 0
        return {"ids": torch.tensor(ids + [EOS], dtype=torch.long),
                "tokens": tok.pieces(ids) + [SPECIALS[EOS]],
                "words": words + [n_words]}

    def collate(self, items: Sequence[dict]) -> dict:
        """Items -> ``ids`` long (B, S_max) padded with 0, ``lengths`` long (B,),
        ``layouts`` a list of B :class:`TokenLayout` (not a tensor)."""
        lengths = torch.tensor([it["ids"].numel() for it in items], dtype=torch.long)
        ids = torch.full((len(items), int(lengths.max())), PAD, dtype=torch.long)
        for b, it in enumerate(items):
            ids[b, : it["ids"].numel()] = it["ids"]
        layouts = [TokenLayout(tokens=tuple(it["tokens"]), words=tuple(it["words"])) for it in items]
        return {"ids": ids, "lengths": lengths, "layouts": layouts}


class Encoder(nn.Module):
    """Token ids -> ContextSet of S vectors of ``out_dim = 2 * hidden`` (forward ++ backward).

    Sequences are packed, so padding never reaches the real positions; padded outputs are 0.
    """

    def __init__(self, vocab_size: int, emb: int = 128, hidden: int = 128, layers: int = 1,
                 rnn: str = "gru", dropout: float = 0.1):
        super().__init__()
        if rnn not in RNNS:
            raise ValueError(f"rnn: {rnn!r} is not one of {{{', '.join(RNNS)}}}")
        self.embed = nn.Embedding(vocab_size, emb, padding_idx=PAD)
        cell = nn.GRU if rnn == "gru" else nn.LSTM
        self.rnn = cell(emb, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                        dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = 2 * hidden

    def forward(self, batch: dict) -> ContextSet:
        ids, lengths = batch["ids"], batch["lengths"]
        s = ids.shape[1]
        x = self.dropout(self.embed(ids))  # (B, S, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=s)  # (B, S, 2H)
        mask = torch.arange(s, device=ids.device)[None, :] < lengths.to(ids.device)[:, None]  # (B, S)
        return ContextSet(self.dropout(h), mask, list(batch["layouts"]))


def read_split(split: SplitConfig, root: Path) -> list[Example]:
    """Parallel text: a TSV, or src/tgt files (optionally a word alignment); paths resolve against root."""
    from mmdesc.corpora.parallel import read_parallel

    root = Path(root)

    def resolve(p: str | None) -> Path | None:
        return None if p is None else root / p

    return read_parallel(resolve(split.src), resolve(split.tgt), resolve(split.tsv), resolve(split.align))


def synthesize(root: Path, train: int, valid: int, test: int, seed: int, size: int = 64) -> None:
    """The translation part of the synthetic corpus: ``{split}.en``, ``{split}.fr``, ``{split}.align``
    (Pharaoh), the scene-manifest entries, then the completion marker.

    ``train`` counts scenes; each of a training scene's references becomes a pair, while valid
    and test hold only each scene's canonical caption (one line per scene, in scene order).
    """
    from mmdesc.corpora import synth

    root = Path(root)
    synth.start_part(root, NAME)
    counts = {"train": train, "valid": valid, "test": test}
    for split, n in counts.items():
        scenes = synth.split_scenes(seed, split, n, size)
        en, fr, al, entries = [], [], [], {}
        for k, scene in enumerate(scenes):
            refs = synth.captions(scene)
            first = len(en)
            for cap in refs if split == "train" else refs[:1]:
                french, alignment = synth.translate_fr(cap)
                en.append(cap)
                fr.append(french)
                al.append(synth.pharaoh(alignment))
            entries[synth.scene_id(split, k)] = {"line": first, "source": en[first], "caption": fr[first],
                                                 "alignment": al[first]}
        for ext, lines in (("en", en), ("fr", fr), ("align", al)):
            synth.write_text_atomic(root / f"{split}.{ext}", "".join(line + "\n" for line in lines))
        synth.add_to_manifest(root, split, NAME, entries, scenes)
    synth.mark_complete(root, NAME, {"seed": seed, "size": size, **counts})


def bench_inputs(root: Path, n: int) -> list[str]:
    """``n`` synthetic English captions (no files), for bench/encode.py."""
    import random

    from mmdesc.corpora import synth

    rng = random.Random(0)
    return [synth.captions(synth.sample_scene(rng, 64))[0] for _ in range(n)]
