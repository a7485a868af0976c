"""Scores for descriptions and for where the attention looked.

Text scores: corpus BLEU and chrF (sacrebleu, tokenizer ``13a``), CIDEr-D and ROUGE-L (written
here, as in the coco-caption reference code), WER and CER (jiwer); the whole COCO caption
evaluation, tokenizer included, is in :mod:`mmdesc.cocoeval`. Attention scores: grounding
(does the attention peak of a word fall inside its referent's region?), the alignment error
rate of attention-derived word alignments against sure/possible ground truth, and time
alignment (does a word's attention sit inside the time span where it is spoken?). Object
scores, where the objects of each input are known: hallucination (CHAIR), counting,
attributes and relations of the objects a caption names.

Every text score takes ``hyps: list[str]`` (one per input) and ``refs: list[list[str]]``
(one or more references per input; the count may differ between inputs). Nothing here
imports torch; attention matrices may be numpy arrays or torch tensors.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "bleu", "chrf", "cider_d", "rouge_l", "lcs_length", "wer", "cer", "error_rates", "corpus_scores", "SELECTION", "selection_value",
    "improved", "word_attention", "grounding", "alignment_error_rate", "argmax_alignment", "time_alignment",
    "ObjectVocabulary", "parse_objects", "object_scores",
]

# The scores that can pick the best checkpoint (``train.metric``), and which way is better.
SELECTION: dict[str, str] = {
    "bleu": "max", "bleu1": "max", "bleu2": "max", "bleu3": "max", "bleu4": "max",
    "chrf": "max", "cider_d": "max", "rouge_l": "max", "wer": "min", "cer": "min", "loss": "min",
}
_ALIASES = {"bleu": "bleu4"}  # "bleu" is corpus BLEU-4, the usual meaning


def selection_value(scores: dict[str, Any], metric: str) -> float:
    """The value of ``metric`` (a SELECTION name) in a dict of validation scores."""
    key = _ALIASES.get(metric, metric)
    if key not in scores:
        raise KeyError(f"validation produced no {metric!r} score (it has {', '.join(sorted(scores))})")
    return float(scores[key])


def improved(metric: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of ``metric`` beats ``best`` (None: nothing yet) in its direction."""
    if best is None:
        return math.isfinite(value)
    return value < best if SELECTION[metric] == "min" else value > best


# ----------------------------------------------------------------------------- sacrebleu


def _check_pairs(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference lists")
    for i, r in enumerate(refs):
        if isinstance(r, str):
            raise ValueError(f"refs[{i}] is a string; give a list of references per hypothesis")
        if len(r) == 0:
            raise ValueError(f"hypothesis {i} has no reference")


def _ref_streams(refs: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-hypothesis reference lists -> sacrebleu's reference streams.

    sacrebleu wants ``max_refs`` streams, each with one entry per hypothesis; an input with
    fewer references has ``None`` in the streams it lacks (sacrebleu drops those, and its
    signature then says ``nrefs:var``).
    """
    k = max(len(r) for r in refs)
    return [[r[i] if i < len(r) else None for r in refs] for i in range(k)]


def _bleu_metric(max_order: int):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize="13a", max_ngram_order=max_order)


def _bleu(hyps, refs, max_order: int) -> tuple[float, str]:
    _check_pairs(hyps, refs)
    if not hyps:
        return 0.0, ""
    metric = _bleu_metric(max_order)
    score = metric.corpus_score(list(hyps), _ref_streams(refs))
    return float(score.score), str(metric.get_signature())


def _chrf(hyps, refs) -> tuple[float, str]:
    from sacrebleu.metrics import CHRF

    _check_pairs(hyps, refs)
    if not hyps:
        return 0.0, ""
    metric = CHRF()
    score = metric.corpus_score(list(hyps), _ref_streams(refs))
    return float(score.score), str(metric.get_signature())


def bleu(hyps: list[str], refs: list[list[str]], max_order: int = 4) -> float:
    """Corpus BLEU (0-100) with n-grams up to ``max_order``, sacrebleu tokenizer 13a.

    The number of references may differ between hypotheses. Raises ValueError when the
    lists differ in length or a hypothesis has no reference.
    """
    return _bleu(hyps, refs, max_order)[0]


def chrf(hyps: list[str], refs: list[list[str]]) -> float:
    """Corpus chrF (0-100), sacrebleu defaults (character 6-grams, beta 2)."""
    return _chrf(hyps, refs)[0]


# ----------------------------------------------------------------------------- CIDEr-D


def _ngrams(sentence: str, n: int) -> Counter:
    """All 1..n-grams of the lowercased whitespace tokens, with their counts."""
    words = sentence.lower().split()
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def cider_d(hyps: list[str], refs: list[list[str]], n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D as computed by coco-caption's ``pycocoevalcap/cider/cider_scorer.py``.

    Per image: tf-idf vectors of 1..n-grams, with document frequencies counted over the
    reference sets of this corpus and idf ``log(#images) - log(max(1, df))``; for each
    reference and each n, the cosine of the hypothesis vector clipped by the reference
    vector (``sum min(h, r) * r / (|h| |r|)``) times a Gaussian length penalty
    ``exp(-delta^2 / (2 sigma^2))``; mean over n, mean over references, times 10.
    The corpus score is the mean over images. Input is lowercased and split on whitespace
    (coco-caption runs the PTB tokenizer first; tokenize beforehand to match it exactly).

    As in the reference code, ``delta`` is the difference in the number of *bigrams*
    (its ``if n == 1`` counts the n-gram index), i.e. the word-length difference except for
    empty or one-word sentences. A corpus of one image scores 0 (every idf is log 1 = 0).
    """
    _check_pairs(hyps, refs)
    if not hyps:
        return 0.0
    crefs = [[_ngrams(r, n) for r in rs] for rs in refs]
    ctest = [_ngrams(h, n) for h in hyps]
    df: Counter = Counter()
    for rs in crefs:
        df.update(set(g for r in rs for g in r))
    log_images = math.log(len(crefs))

    def to_vec(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            w = tf * (log_images - math.log(max(1.0, df[gram])))
            vec[k][gram] = w
            norm[k] += w * w
            if k == 1:  # the reference code's length: the number of bigrams
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    scores = []
    for test, rs in zip(ctest, crefs):
        vh, nh, lh = to_vec(test)
        total = np.zeros(n)
        for r in rs:
            vr, nr, lr = to_vec(r)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * penalty
        scores.append(float(np.mean(total)) / len(rs) * 10.0)
    return float(np.mean(scores))


# ----------------------------------------------------------------------------- ROUGE-L


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diag = 0
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(hyps: list[str], refs: list[list[str]], beta: float = 1.2) -> float:
    """ROUGE-L (0-100) as coco-caption's ``pycocoevalcap/rouge/rouge.py`` computes it.

    Per input: for each reference, the longest common subsequence with the hypothesis gives
    a precision (LCS / hypothesis length) and a recall (LCS / reference length); with P and R
    the *largest* precision and the largest recall over the references (taken separately, as
    the reference code does), the score is ``(1 + beta^2) P R / (R + beta^2 P)`` (0 when either
    is 0), beta = 1.2. The corpus score is the mean over inputs, times 100. Words are the
    lowercased whitespace tokens (coco-caption runs the PTB tokenizer first; tokenize
    beforehand, or use ``mmdesc.cocoeval``, to match it exactly). An empty hypothesis scores 0.
    """
    _check_pairs(hyps, refs)
    if not hyps:
        return 0.0
    scores = []
    for hyp, rs in zip(hyps, refs):
        h = hyp.lower().split()
        best_p = best_r = 0.0
        for ref in rs:
            r = ref.lower().split()
            lcs = lcs_length(h, r)
            best_p = max(best_p, lcs / len(h) if h else 0.0)
            best_r = max(best_r, lcs / len(r) if r else 0.0)
        scores.append((1 + beta ** 2) * best_p * best_r / (best_r + beta ** 2 * best_p) if best_p and best_r else 0.0)
    return 100.0 * float(np.mean(scores))


# ----------------------------------------------------------------------------- WER / CER


def _single_refs(hyps: Sequence[str], refs: Sequence[Any]) -> list[str]:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    out = []
    for i, r in enumerate(refs):
        if not isinstance(r, str):
            if len(r) == 0:
                raise ValueError(f"hypothesis {i} has no reference")
            r = r[0]
        out.append(r)
    return out


def _squeeze(texts: Iterable[str]) -> list[str]:
    """Runs of whitespace become one space, ends stripped (what WER and CER compare)."""
    return [" ".join(t.split()) for t in texts]


def error_rates(hyps: list[str], refs: list[str] | list[list[str]]) -> dict[str, float]:
    """Corpus WER and CER in percent with their edit counts, by jiwer 4.

    ``refs`` holds one transcript per hypothesis (a list of references uses its first).
    Words are whitespace tokens, compared as given (normalise case/punctuation beforehand);
    for CER, spaces count as characters and runs of whitespace become one.
    Returns ``{"wer", "cer"}`` (edits / reference length x 100) and the word-level counts
    ``{"substitutions", "deletions", "insertions", "ref_words"}``. Empty references count 0
    words: a corpus of only empty references scores 0 without errors and 100 with any.
    """
    import jiwer

    rs, hs = _squeeze(_single_refs(hyps, refs)), _squeeze(hyps)
    if not hs:
        return {"wer": 0.0, "cer": 0.0, "substitutions": 0, "deletions": 0, "insertions": 0, "ref_words": 0}
    words = jiwer.process_words(rs, hs)
    chars = jiwer.process_characters(rs, hs)

    def rate(o) -> float:
        errors, length = o.substitutions + o.deletions + o.insertions, o.substitutions + o.deletions + o.hits
        return 100.0 * errors / length if length else (0.0 if errors == 0 else 100.0)

    return {"wer": rate(words), "cer": rate(chars), "substitutions": words.substitutions,
            "deletions": words.deletions, "insertions": words.insertions,
            "ref_words": words.substitutions + words.deletions + words.hits}


def wer(hyps: list[str], refs: list[str] | list[list[str]]) -> float:
    """Corpus word error rate in percent (jiwer): word edits / reference words; see ``error_rates``."""
    return error_rates(hyps, refs)["wer"]


def cer(hyps: list[str], refs: list[str] | list[list[str]]) -> float:
    """Corpus character error rate in percent (jiwer); spaces count, runs of whitespace become one."""
    return error_rates(hyps, refs)["cer"]


def corpus_scores(hyps: list[str], refs: list[list[str]]) -> dict[str, Any]:
    """BLEU-1..4, chrF, CIDEr-D, ROUGE-L, WER and CER of a corpus, plus the sacrebleu signatures.

    Returns ``{"bleu1", "bleu2", "bleu3", "bleu4", "chrf", "cider_d", "rouge_l"}`` (floats, 0-100
    for BLEU/chrF/ROUGE-L, CIDEr-D on its own x10 scale), ``error_rates``' ``{"wer", "cer",
    "substitutions", "deletions", "insertions", "ref_words"}`` (against the first reference)
    and ``{"bleu_signature", "chrf_signature"}``.
    """
    out: dict[str, Any] = {}
    signature = ""
    for k in range(1, 5):
        out[f"bleu{k}"], signature = _bleu(hyps, refs, k)
    out["chrf"], chrf_signature = _chrf(hyps, refs)
    out["cider_d"] = cider_d(hyps, refs)
    out["rouge_l"] = rouge_l(hyps, refs)
    out.update(error_rates(hyps, refs))
    out["bleu_signature"] = signature
    out["chrf_signature"] = chrf_signature
    return out


# ----------------------------------------------------------------------------- attention


def _as_numpy(alpha: Any) -> np.ndarray:
    """A numpy float array from a numpy array, a nested list or a torch tensor."""
    if hasattr(alpha, "detach"):  # a torch tensor, without importing torch
        alpha = alpha.detach().float().cpu().numpy()
    return np.asarray(alpha, dtype=np.float64)


def _group_sum(index: Sequence[int], size: int) -> np.ndarray:
    """(groups, size) 0/1 matrix with a 1 where ``index[n] == group``."""
    index = np.asarray(index, dtype=np.int64)
    if index.shape != (size,):
        raise ValueError(f"{index.shape[0]} word indices for {size} pieces")
    if size and index.min() < 0:
        raise ValueError("word indices must be >= 0")
    groups = int(index.max()) + 1 if size else 0
    onehot = np.zeros((groups, size))
    onehot[index, np.arange(size)] = 1.0
    return onehot


def word_attention(alpha: Any, tgt_words: Sequence[int],
                   src_words: Sequence[int] | None = None) -> np.ndarray:
    """Piece-level attention -> word-level attention.

    alpha: (T, N) attention of T target pieces over N positions. ``tgt_words[t]`` is the
    index of the target word piece t belongs to; the rows of one word's pieces are
    averaged, so each word row still sums to 1. With ``src_words`` (N entries, the source
    word of each position) the columns of one source word are summed.
    Returns (T_words, N), or (T_words, N_words) with ``src_words``.
    """
    a = _as_numpy(alpha)
    if a.ndim != 2:
        raise ValueError(f"alpha must be (T, N), got shape {a.shape}")
    rows = _group_sum(tgt_words, a.shape[0])  # (T_words, T)
    counts = rows.sum(axis=1, keepdims=True)
    out = rows @ a / np.maximum(counts, 1.0)  # (T_words, N)
    if src_words is not None:
        cols = _group_sum(src_words, a.shape[1])  # (N_words, N)
        out = out @ cols.T  # (T_words, N_words)
    return out


def grounding(items: Iterable[tuple[Sequence[str], Any, Any, dict]]) -> dict[str, float]:
    """How often the attention peak of a grounded word lies inside its referent.

    items: ``(words, alpha_words, layout, regions)`` per output sentence; ``alpha_words``
    is (T_words, N) with row t for ``words[t]``; ``regions`` maps a word to its regions
    (``Example.meta["regions"]``). Every word that is a key of ``regions`` counts once; it
    is a hit when ``layout.contains(argmax_n alpha_words[t], region)`` for one of them.
    Columns beyond ``len(layout)`` (padding) are ignored.
    Returns ``{"grounding": hits / total * 100, "grounding_n": total}`` (0.0 when total is 0).
    """
    hits = total = 0
    for words, alpha_words, layout, regions in items:
        a = _as_numpy(alpha_words)
        if a.ndim != 2 or a.shape[0] < len(words):
            raise ValueError(f"alpha_words of shape {a.shape} for {len(words)} words")
        a = a[:, :len(layout)]
        for t, w in enumerate(words):
            if w not in regions:
                continue
            total += 1
            n = int(np.argmax(a[t]))
            hits += any(layout.contains(n, r) for r in regions[w])
    return {"grounding": 100.0 * hits / total if total else 0.0, "grounding_n": total}


def argmax_alignment(alpha_words: Any) -> set[tuple[int, int]]:
    """``{(i, j)}``: for each target word j (row), the source word i (column) it attends most."""
    a = _as_numpy(alpha_words)
    if a.ndim != 2:
        raise ValueError(f"alpha_words must be (T_words, N_words), got shape {a.shape}")
    if a.shape[1] == 0:
        return set()
    return {(int(i), j) for j, i in enumerate(np.argmax(a, axis=1))}


def alignment_error_rate(items: Iterable[tuple[Iterable, Iterable, Iterable]]) -> dict[str, float]:
    """Corpus alignment error rate (Och & Ney 2003), precision and recall, in percent.

    items: ``(predicted, sure, possible)`` sets of ``(i, j)`` pairs (source word i, target
    word j; lists such as JSON's ``[i, j]`` are accepted). ``possible`` is taken as
    S ∪ P. Counts are summed over the corpus:
    AER = 1 - (|A∩S| + |A∩P|) / (|A| + |S|), precision = |A∩P| / |A|, recall = |A∩S| / |S|.
    Returns ``{"aer", "align_precision", "align_recall"}`` (an empty side gives 0.0).
    """
    a_n = s_n = a_s = a_p = 0
    for predicted, sure, possible in items:
        a = {tuple(x) for x in predicted}
        s = {tuple(x) for x in sure}
        p = {tuple(x) for x in possible} | s
        a_n += len(a)
        s_n += len(s)
        a_s += len(a & s)
        a_p += len(a & p)
    denom = a_n + s_n
    return {
        "aer": 100.0 * (1.0 - (a_s + a_p) / denom) if denom else 0.0,
        "align_precision": 100.0 * a_p / a_n if a_n else 0.0,
        "align_recall": 100.0 * a_s / s_n if s_n else 0.0,
    }


def time_alignment(items: Iterable[tuple[Any, Sequence[int], Any, Sequence[Sequence[float]]]]) -> dict[str, float]:
    """Whether the attention of each word sits where the word is, in time, and moves forwards.

    items: ``(alpha, word_index, layout, spans)`` per input: ``alpha`` (T, N) the attention of T
    output pieces (the model reading the reference) over N positions of a time layout,
    ``word_index[t]`` the whitespace word piece t belongs to, ``spans[w] = (start_s, end_s)``
    of word w (``Example.meta["spans"]``). An input whose word count differs from its spans is
    skipped. Columns beyond ``len(layout)`` (padding) are ignored.

    A word is a hit when the centre of mass of its attention, ``sum_n alpha[w, n] * centre(n)``
    in seconds (the word's pieces averaged, each row renormalised), lies in its span. A step
    moves backwards when its centre of mass, in positions, is more than half a position before
    the previous step's.
    Returns ``{"time_alignment": hits / words * 100, "backward_steps": backward / steps * 100,
    "time_alignment_n": words, "time_alignment_skipped": inputs skipped}``.
    """
    hits = words = backward = steps = skipped = 0
    for alpha, word_index, layout, spans in items:
        a = _as_numpy(alpha)
        if a.ndim != 2 or a.shape[0] != len(word_index):
            raise ValueError(f"alpha of shape {a.shape} for {len(word_index)} pieces")
        a = a[:, :len(layout)]
        a = a / np.maximum(a.sum(axis=1, keepdims=True), 1e-12)  # (T, N), rows sum to 1
        w = word_attention(a, word_index) if len(word_index) else np.zeros((0, a.shape[1]))  # (W, N)
        if w.shape[0] != len(spans):
            skipped += 1
            continue
        centres = np.array([layout.center(n) for n in range(a.shape[1])])  # (N,) seconds
        com = w @ centres  # (W,)
        s = np.asarray(spans, dtype=np.float64).reshape(-1, 2)  # (W, 2)
        hits += int(((s[:, 0] <= com) & (com <= s[:, 1])).sum())
        words += len(s)
        pos = a @ np.arange(a.shape[1])  # (T,) centre of mass in positions
        backward += int((np.diff(pos) < -0.5).sum())
        steps += max(0, len(pos) - 1)
    return {"time_alignment": 100.0 * hits / words if words else 0.0,
            "backward_steps": 100.0 * backward / steps if steps else 0.0,
            "time_alignment_n": words, "time_alignment_skipped": skipped}


# ----------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class ObjectVocabulary:
    """The words a caption grammar names objects with, and what its relations mean.

    words: ground-truth key -> the words of its values, e.g. ``{"shape": ("circle", ...),
      "colour": (...), "size": (...)}``; objects' ground truth uses the same keys.
    head: the key whose word ends a mention (the noun, e.g. ``"shape"``); the other words
      seen since the last mention are its attributes.
    relations: phrase -> ``holds(a_box, b_box, boxes)``: whether "<a> phrase <b>" is true
      of the objects in boxes a and b of a scene whose objects have ``boxes``.
    """

    words: Mapping[str, Sequence[str]]
    head: str
    relations: Mapping[str, Callable[[Sequence[float], Sequence[float], Sequence[Sequence[float]]], bool]]


def parse_objects(caption: str, vocab: ObjectVocabulary) -> tuple[list[dict], list[tuple[int, str, int]]]:
    """The objects a caption names and the relations it states between them.

    Returns ``(mentions, relations)``: one ``{key: word}`` per head word, with the attribute
    words met since the previous mention; ``(i, phrase, j)`` when a relation phrase stands
    between mentions i and j = i + 1. Tolerant: words outside the vocabulary are skipped,
    and attributes with no head after them (a cut-off caption) are dropped.
    """
    key_of = {w: k for k, ws in vocab.words.items() for w in ws}
    phrases = sorted((tuple(p.split()) for p in vocab.relations), key=len, reverse=True)
    words = caption.lower().split()
    mentions: list[dict] = []
    relations: list[tuple[int, str, int]] = []
    pending: dict = {}
    after: tuple[int, str] | None = None  # (mention, phrase) waiting for its second object
    i = 0
    while i < len(words):
        phrase = next((p for p in phrases if tuple(words[i:i + len(p)]) == p), None)
        if phrase is not None:
            after = (len(mentions) - 1, " ".join(phrase)) if mentions else None
            pending, i = {}, i + len(phrase)
            continue
        key = key_of.get(words[i])
        if key == vocab.head:
            mentions.append({**pending, key: words[i]})
            pending = {}
            if after is not None:
                relations.append((after[0], after[1], len(mentions) - 1))
                after = None
        elif key is not None:
            pending[key] = words[i]
        elif words[i] == "and":
            pending, after = {}, None
        i += 1
    return mentions, relations


def _assign(mentions: list[dict], objects: Sequence[Mapping], head: str, keys: Sequence[str]) -> list[int | None]:
    """One-to-one mention -> object (or None) assignment with the most agreeing words.

    Agreement on the head outweighs all attributes together; among equals, assigning
    beats leaving a mention unassigned. Exact, by dynamic programming over the set of
    objects already taken (scenes hold a handful of objects).
    """
    k, n = len(mentions), len(objects)
    big = len(keys) + 1

    def gain(m: dict, o: Mapping) -> int:
        agree = sum((big if key == head else 1) * (m[key] == o.get(key)) for key in m)
        return agree * (k + 1) + 1

    best: dict[int, tuple[int, list]] = {0: (0, [])}
    for m in mentions:
        nxt: dict[int, tuple[int, list]] = {}
        for used, (score, picks) in best.items():
            options = [(used, score, picks + [None])]
            options += [(used | 1 << j, score + gain(m, objects[j]), picks + [j]) for j in range(n) if not used >> j & 1]
            for u, sc, pk in options:
                if u not in nxt or sc > nxt[u][0]:
                    nxt[u] = (sc, pk)
        best = nxt
    return max(best.values(), key=lambda v: v[0])[1] if k else []


def object_scores(hyps: Sequence[str], scenes: Sequence[Sequence[Mapping]], vocab: ObjectVocabulary) -> dict[str, float]:
    """Hallucination, counting, attribute and relation scores of captions against the
    objects their inputs hold.

    scenes: per caption, its objects: ``{key: word, ..., "box": [x0, y0, x1, y1]}`` with the
    keys of ``vocab.words``. Each caption's mentions (:func:`parse_objects`) are matched one
    to one with the objects (most agreeing words; see ``_assign``). In percent:

    - ``chair_i``: mentions that name no object of the scene (unmatched, or matched to an
      object of another ``head`` word) among all mentions; ``chair_s``: captions with at
      least one such mention (CHAIR, Rohrbach et al. 2018, at instance and sentence level);
    - ``count_accuracy``: captions naming as many objects as the scene holds;
    - ``object_recall``: objects of the scenes named with their head word;
    - ``attribute_accuracy``: the words of matched mentions (head included) that are right,
      and ``{key}_accuracy`` per key;
    - ``relation_accuracy``: stated relations between two matched mentions that hold for
      their objects (``vocab.relations``).

    Counts ``mentions_n`` and ``relations_n`` come with them; a score with nothing to count is 0.
    """
    if len(hyps) != len(scenes):
        raise ValueError(f"{len(hyps)} hypotheses but {len(scenes)} scenes")
    keys = list(vocab.words)
    mentioned = wrong = bad_captions = counted = objects_n = recalled = 0
    named, right = Counter(), Counter()
    rel_n = rel_ok = 0
    for hyp, objects in zip(hyps, scenes):
        mentions, relations = parse_objects(hyp, vocab)
        picks = _assign(mentions, objects, vocab.head, keys)
        invented = [j is None or objects[j].get(vocab.head) != m[vocab.head] for m, j in zip(mentions, picks)]
        mentioned += len(mentions)
        wrong += sum(invented)
        bad_captions += any(invented)
        counted += len(mentions) == len(objects)
        objects_n += len(objects)
        recalled += sum(not bad for bad in invented)
        for m, j in zip(mentions, picks):
            if j is not None:
                for key, word in m.items():
                    named[key] += 1
                    right[key] += word == objects[j].get(key)
        boxes = [o["box"] for o in objects]
        for a, phrase, b in relations:
            ja, jb = picks[a], picks[b]
            if ja is not None and jb is not None and ja != jb:
                rel_n += 1
                rel_ok += bool(vocab.relations[phrase](objects[ja]["box"], objects[jb]["box"], boxes))

    def pct(x: float, n: float) -> float:
        return 100.0 * x / n if n else 0.0

    out = {"chair_i": pct(wrong, mentioned), "chair_s": pct(bad_captions, len(hyps)),
           "count_accuracy": pct(counted, len(hyps)), "object_recall": pct(recalled, objects_n),
           "attribute_accuracy": pct(sum(right.values()), sum(named.values()))}
    out.update({f"{key}_accuracy": pct(right[key], named[key]) for key in keys})
    out.update({"relation_accuracy": pct(rel_ok, rel_n), "mentions_n": mentioned, "relations_n": rel_n})
    return out
