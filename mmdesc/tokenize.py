"""Tokenizers: sentencepiece (default) or a plain word vocabulary, trained on training text.

Both share ids 0..3 = <pad>, <s>, </s>, <unk> and serialise to a JSON-able dict, so a
checkpoint carries its tokenizer without pickle.
"""
from __future__ import annotations

import base64
import io
from collections import Counter
from typing import Iterable, Sequence

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
WORD_START = "\u2581"  # sentencepiece's word-start marker
MAX_VOCAB = 1_000_000  # entries of a vocabulary read back from a checkpoint
MAX_WORD = 1000  # characters of one entry
MAX_MODEL_CHARS = 48 << 20  # base64 characters of a serialised sentencepiece model


class Tokenizer:
    """Common interface. ``encode`` gives ids without BOS/EOS; ``decode`` drops specials."""

    kind: str

    def __len__(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def pieces(self, ids: Sequence[int]) -> list[str]: ...
    def to_dict(self) -> dict: ...

    def word_index(self, ids: Sequence[int]) -> list[int]:
        """For each id, the 0-based index of the whitespace word of ``decode(ids)`` it belongs to."""
        out, w = [], -1
        for i, p in enumerate(self.pieces(ids)):
            if i == 0 or p.startswith(WORD_START) or w < 0:
                w += 1
            out.append(w)
        return out

    @staticmethod
    def train(texts: Iterable[str], kind: str = "sentencepiece", vocab_size: int = 1000,
              model_type: str = "unigram", min_count: int = 1) -> "Tokenizer":
        texts = [t for t in texts if t.strip()]
        if kind == "sentencepiece":
            return SentencePieceTokenizer.train(texts, vocab_size, model_type)
        if kind == "word":
            return WordTokenizer.train(texts, vocab_size, min_count)
        raise ValueError(f"tokenizer kind {kind!r} is not one of {{sentencepiece, word}}")

    @staticmethod
    def from_dict(d: dict) -> "Tokenizer":
        """The tokenizer ``to_dict`` wrote; raises ValueError (a short reason) for anything else,
        e.g. a checkpoint's crafted metadata."""
        kind = d.get("kind") if isinstance(d, dict) else None
        if kind == "sentencepiece" and isinstance(d.get("model"), str) and len(d["model"]) <= MAX_MODEL_CHARS:
            try:
                raw = base64.b64decode(d["model"], validate=True)
                if not raw:  # sentencepiece takes b"" for a model, then complains on every call
                    raise ValueError
                tok: Tokenizer = SentencePieceTokenizer(raw)
            except (ValueError, RuntimeError):
                raise ValueError("the sentencepiece model is not readable") from None
        elif kind == "word" and isinstance(d.get("vocab"), list) and len(d["vocab"]) <= MAX_VOCAB \
                and all(isinstance(w, str) and 0 < len(w) <= MAX_WORD for w in d["vocab"]):
            tok = WordTokenizer(d["vocab"])
        else:
            raise ValueError("not a tokenizer mmdesc writes (kind sentencepiece with a model, or word with a vocab)")
        if len(tok) <= len(SPECIALS):
            raise ValueError(f"a vocabulary of {len(tok)} entries, not more than the {len(SPECIALS)} special ones")
        specials = tok.vocab[: len(SPECIALS)] if kind == "word" else [tok.sp.id_to_piece(i) for i in range(len(SPECIALS))]
        if list(specials) != list(SPECIALS):
            raise ValueError(f"the vocabulary does not start with {', '.join(SPECIALS)}")
        return tok


class WordTokenizer(Tokenizer):
    """Whitespace words; unknown words map to <unk>."""

    kind = "word"

    def __init__(self, vocab: Sequence[str]):
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @staticmethod
    def train(texts: Sequence[str], vocab_size: int, min_count: int = 1) -> "WordTokenizer":
        counts = Counter(w for t in texts for w in t.split())
        words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
        return WordTokenizer(list(SPECIALS) + words[: max(0, vocab_size - len(SPECIALS))])

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, UNK) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if i >= len(SPECIALS) or i == UNK)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [WORD_START + self.vocab[i] for i in ids]

    def to_dict(self) -> dict:
        return {"kind": "word", "vocab": self.vocab}


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model held in memory (serialised model proto, not pickle)."""

    kind = "sentencepiece"

    def __init__(self, model: bytes):
        import sentencepiece as spm

        self.model = model
        self.sp = spm.SentencePieceProcessor(model_proto=model)

    @staticmethod
    def train(texts: Sequence[str], vocab_size: int, model_type: str = "unigram") -> "SentencePieceTokenizer":
        import sentencepiece as spm

        if not texts:
            raise ValueError("cannot train a tokenizer on no text")
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size,
            model_type=model_type, character_coverage=1.0, hard_vocab_limit=False,
            pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK, num_threads=1,
            minloglevel=2, max_sentence_length=1 << 16, shuffle_input_sentence=False,
        )
        return SentencePieceTokenizer(buf.getvalue())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([i for i in ids if i >= len(SPECIALS) or i == UNK])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]

    def to_dict(self) -> dict:
        return {"kind": "sentencepiece", "model": base64.b64encode(self.model).decode("ascii")}
