"""Scoring a trained model on a split: text metrics and, where ground truth exists, attention."""
from __future__ import annotations

from typing import Callable

from mmdesc import metrics
from mmdesc.alignment import corpus_statistics
from mmdesc.data import Loaded
from mmdesc.predict import describe, force_attention, in_words


def score(trained, loaded: Loaded, *, batch_size: int = 64, alignment: bool = True,
          progress: Callable[[int], None] | None = None, described: list | None = None,
          **search) -> tuple[dict, list[str]]:
    """Corpus scores of the best hypothesis per input, and those hypotheses.

    With ``alignment``, adds the attention statistics of :mod:`mmdesc.alignment` (entropy,
    peak, coverage, ...), ``grounding`` (share of words naming a region whose most attended
    position lies in it) when examples carry ``regions``, ``aer`` (alignment error rate
    of the attention while reading the reference) when they carry ``alignment``, and the
    object scores (CHAIR, count, attribute and relation accuracy; ``metrics.object_scores``)
    when they carry ``objects``, and ``time_alignment``/``backward_steps`` (where in time, and how
    monotonically, the attention reading the reference moves) when they carry ``spans``.
    ``described``: the inputs' descriptions when the caller already has them (not decoded again)."""
    if described is None:
        described = describe(trained, loaded.items, batch_size=batch_size, progress=progress, **search)
    hyps = [d[0].text for d in described]
    refs = [ex.references for ex in loaded.examples]
    result = metrics.corpus_scores(hyps, refs) if any(refs) else {}
    if not alignment:
        return result, hyps
    result.update(corpus_statistics((d[0].alpha, d[0].layout) for d in described))
    if any("regions" in ex.meta for ex in loaded.examples):
        result.update(_grounding(trained, loaded, described))
    if any("objects" in ex.meta for ex in loaded.examples):
        result.update(_objects(loaded, hyps))
    aligned = [i for i, ex in enumerate(loaded.examples) if "alignment" in ex.meta]
    if aligned:
        result.update(_aer(trained, loaded, aligned, batch_size))
    timed = [i for i, ex in enumerate(loaded.examples) if "spans" in ex.meta]
    if timed:
        result.update(_time_alignment(trained, loaded, timed, batch_size))
    return result, hyps


def _grounding(trained, loaded: Loaded, described) -> dict:
    items = [(d[0].words, d[0].alpha.numpy(), d[0].layout, ex.meta["regions"])
             for d, ex in zip(described, loaded.examples) if "regions" in ex.meta]
    return metrics.grounding(items)


def _objects(loaded: Loaded, hyps: list[str]) -> dict:
    """Object scores of the inputs whose objects are known, in the synthetic grammar's words."""
    from mmdesc.corpora.synth import VOCABULARY

    pairs = [(h, ex.meta["objects"]) for h, ex in zip(hyps, loaded.examples) if "objects" in ex.meta]
    return metrics.object_scores([h for h, _ in pairs], [o for _, o in pairs], VOCABULARY)


def _aer(trained, loaded: Loaded, idx: list[int], batch_size: int) -> dict:
    tok = trained.tokenizer
    exs = [loaded.examples[i] for i in idx]
    forced = force_attention(trained, [loaded.items[i] for i in idx], [ex.references[0] for ex in exs], batch_size)
    items = []
    for ex, (alpha, lay) in zip(exs, forced):
        ids = tok.encode(ex.references[0])
        _, words_alpha = in_words(tok, ids, alpha)  # (W_tgt, N)
        src_words = list(lay.words)
        a = metrics.word_attention(words_alpha.numpy(), list(range(words_alpha.shape[0])), src_words)
        n_src = len(ex.source.split())
        pred = {(i, j) for (i, j) in metrics.argmax_alignment(a) if i < n_src}  # links to </s> are no links
        sure = {tuple(p) for p in ex.meta["alignment"]["sure"]}
        possible = {tuple(p) for p in ex.meta["alignment"].get("possible", [])} | sure
        items.append((pred, sure, possible))
    return metrics.alignment_error_rate(items)


def _time_alignment(trained, loaded: Loaded, idx: list[int], batch_size: int) -> dict:
    tok = trained.tokenizer
    exs = [loaded.examples[i] for i in idx]
    forced = force_attention(trained, [loaded.items[i] for i in idx], [ex.references[0] for ex in exs], batch_size)
    items = [(alpha, tok.word_index(tok.encode(ex.references[0])), lay, ex.meta["spans"])
             for ex, (alpha, lay) in zip(exs, forced)]
    return metrics.time_alignment(items)
