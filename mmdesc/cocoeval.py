"""Caption scores as the COCO caption evaluation computes them, to set beside published ones.

    scores = coco_scores(hyps, refs)   # {"coco_bleu1".."coco_bleu4", "coco_meteor", "coco_rouge_l",
                                       #  "coco_cider_d": float or None, "coco_notes": {...}, "coco_tokenizer": str}

The COCO evaluation (Chen et al. 2015, the ``pycocoevalcap`` package) lowercases and
tokenizes every caption with Stanford CoreNLP's PTB tokenizer and drops punctuation tokens,
then scores BLEU-1..4 (its own BLEU: the closest reference length, tiny smoothing),
METEOR 1.5, ROUGE-L (beta 1.2) and CIDEr-D. Each part needs something that may be missing,
and then the part is reported as unavailable with the reason, never left out silently:

- ``pycocoevalcap`` (``pip install 'mmdesc[coco]'``): BLEU, and the jars of the tokenizer and
  METEOR. Without it ROUGE-L and CIDEr-D come from :mod:`mmdesc.metrics`, which computes
  both with the reference code's formulas (agreeing to rounding);
- a Java runtime (Debian: ``apt-get install default-jre-headless``): the PTB tokenizer and
  METEOR. Without it captions are tokenized by ``ptb_tokenize_python``, an approximation in
  Python of what the PTB tokenizer does to captions (lowercase, split off punctuation and
  clitics, drop the punctuation); ``coco_tokenizer`` says which tokenizer ran.

Scores are x100, as papers print them (CIDEr-D 113.5 for the reference code's 1.135).
"""
from __future__ import annotations

import contextlib
import io
import re
import shutil
from typing import Sequence

from mmdesc import metrics

# what the COCO evaluation drops after tokenizing (pycocoevalcap/tokenizer/ptbtokenizer.py)
PUNCTUATIONS = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                "...", ";"}
KEYS = ["coco_bleu1", "coco_bleu2", "coco_bleu3", "coco_bleu4", "coco_meteor", "coco_rouge_l", "coco_cider_d"]
INSTALL_PACKAGE = "pycocoevalcap is not installed (pip install 'mmdesc[coco]')"
INSTALL_JAVA = "needs a Java runtime (apt-get install default-jre-headless)"
PTB_JAVA = "the PTB tokenizer (Stanford CoreNLP, Java)"
PTB_PYTHON = "a Python approximation of the PTB tokenizer (mmdesc.cocoeval.ptb_tokenize_python)"

_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)(?=\s|$)")
_SPLIT = re.compile(r"([,;:?!]|\.\.\.|--)")
_QUOTES = re.compile(r"(?:(?<=\s)|^)'|'(?=\s|$)")  # a quote at a word's edge ("man's" keeps its own)
# brackets as the PTB tokenizer writes them; lowercased by its -lowerCase, so the COCO evaluation
# (which drops "-LRB-") keeps them: "-lrb-" is a word there, as it is here
_BRACKETS = {"(": " -lrb- ", ")": " -rrb- ", "[": " -lsb- ", "]": " -rsb- ", "{": " -lcb- ", "}": " -rcb- "}
_ABBREVIATION = re.compile(r"(?:[a-z]\.){2,}|(?:mr|mrs|ms|dr|st|jr|sr|vs|etc|inc|co|no|mt|ft)\.")


def ptb_tokenize_python(text: str) -> str:
    """A caption lowercased and tokenized roughly as the COCO evaluation's PTB tokenizer does,
    its punctuation tokens dropped: ``"A man's dog, running."`` -> ``"a man 's dog running"``.

    Splits off punctuation, the final period of a word (not that of "u.s." or "mr.", nor the
    one inside "3.5"), clitics ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m") and edge quotes;
    writes brackets as -lrb- ... (kept, as in the COCO evaluation); keeps hyphenated words
    whole. Rarer cases (other abbreviations, "&amp;" entities, URLs) may differ."""
    t = " ".join(text.lower().replace('"', " ").split())  # a double quote becomes `` or '': dropped
    for bracket, word in _BRACKETS.items():
        t = t.replace(bracket, word)
    t = _QUOTES.sub(" ' ", _SPLIT.sub(r" \1 ", t))
    words = []
    for w in t.split():
        if w.endswith(".") and w.strip(".") and not _ABBREVIATION.fullmatch(w):
            words += [w[:-1], "."]
        else:
            words.append(w)
    t = _CLITIC.sub(r" \1", " ".join(words))
    return " ".join(w for w in t.split() if w not in PUNCTUATIONS)


def _package() -> bool:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return False
    return True


def java() -> str | None:
    """The ``java`` command where one is installed."""
    return shutil.which("java")


def ptb_tokenize_java(texts: Sequence[str], timeout: float = 600.0) -> list[str]:
    """Texts tokenized as the COCO evaluation does: Stanford CoreNLP's PTB tokenizer (the jar
    inside ``pycocoevalcap``) with ``-preserveLines -lowerCase``, punctuation tokens dropped.

    The same command as ``pycocoevalcap``'s ``PTBTokenizer``, fed through a pipe rather than a
    file written into the package's folder (which may be read-only), its log line kept off
    the terminal. Raises OSError where it cannot run or answers with the wrong number of lines."""
    import subprocess
    from pathlib import Path

    import pycocoevalcap.tokenizer as package

    jar = Path(package.__path__[0]) / "stanford-corenlp-3.4.1.jar"
    lines = "\n".join(" ".join(t.split()) for t in texts) + "\n"
    try:
        done = subprocess.run([java() or "java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
                               "-preserveLines", "-lowerCase"], input=lines.encode(), capture_output=True,
                              timeout=timeout, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise OSError(f"the PTB tokenizer failed: {e}") from None
    out = done.stdout.decode().split("\n")[: len(texts)]
    if len(out) != len(texts):
        raise OSError(f"the PTB tokenizer answered {len(out)} lines for {len(texts)}")
    return [" ".join(w for w in line.rstrip().split(" ") if w and w not in PUNCTUATIONS) for line in out]


def tokenize(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[dict, dict, str]:
    """The COCO evaluation's inputs: ``gts`` {i: [reference, ...]} and ``res`` {i: [hypothesis]},
    tokenized by the PTB tokenizer where it can run, else by ``ptb_tokenize_python``; and the
    name of the tokenizer that ran."""
    flat = [r for rs in refs for r in rs] + list(hyps)
    name = PTB_JAVA
    tokens = None
    if _package() and java():
        try:
            tokens = ptb_tokenize_java(flat)
        except OSError as e:
            name = f"{PTB_PYTHON} ({str(e)[:80]})"
    else:
        name = PTB_PYTHON + (f" (the PTB tokenizer {INSTALL_JAVA})" if _package() else
                             " (the PTB tokenizer comes with pycocoevalcap: pip install 'mmdesc[coco]')")
    if tokens is None:
        tokens = [ptb_tokenize_python(t) for t in flat]
    gts, k = {}, 0
    for i, rs in enumerate(refs):
        gts[i], k = tokens[k:k + len(rs)], k + len(rs)
    res = {i: [t] for i, t in enumerate(tokens[k:])}
    return gts, res, name


def coco_scores(hyps: list[str], refs: list[list[str]], meteor: bool = True) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D x100 as the COCO caption evaluation computes them.

    Returns each of ``KEYS`` (a float, or None where that part cannot run here),
    ``coco_notes`` {key: what computed it, or why it is unavailable} and ``coco_tokenizer``.
    METEOR starts a Java VM with a 2 GB heap and loads its paraphrase table (seconds);
    ``meteor=False`` leaves it out (None, "not asked for")."""
    metrics._check_pairs(hyps, refs)
    gts, res, tokenizer = tokenize(hyps, refs)
    out: dict = {k: None for k in KEYS}
    notes: dict = {}
    have = _package()
    if not hyps:
        return {**out, "coco_notes": {k: "no captions" for k in KEYS}, "coco_tokenizer": tokenizer}
    if have:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length statistics
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        for n, value in enumerate(bleu, 1):
            out[f"coco_bleu{n}"], notes[f"coco_bleu{n}"] = 100.0 * value, "pycocoevalcap"
        out["coco_rouge_l"], notes["coco_rouge_l"] = 100.0 * Rouge().compute_score(gts, res)[0], "pycocoevalcap"
        out["coco_cider_d"], notes["coco_cider_d"] = 100.0 * Cider().compute_score(gts, res)[0], "pycocoevalcap"
    else:
        for n in range(1, 5):
            notes[f"coco_bleu{n}"] = f"unavailable: {INSTALL_PACKAGE}"
        h, r = [res[i][0] for i in range(len(hyps))], [gts[i] for i in range(len(hyps))]
        out["coco_rouge_l"] = metrics.rouge_l(h, r)
        out["coco_cider_d"] = 100.0 * metrics.cider_d(h, r)
        notes["coco_rouge_l"] = notes["coco_cider_d"] = "mmdesc (the reference code's formula)"
    out["coco_meteor"], notes["coco_meteor"] = _meteor(gts, res, have) if meteor else (None, "not asked for")
    return {**out, "coco_notes": notes, "coco_tokenizer": tokenizer}


def _meteor(gts: dict, res: dict, have: bool) -> tuple[float | None, str]:
    if not have:
        return None, f"unavailable: {INSTALL_PACKAGE}"
    if not java():
        return None, f"unavailable: {INSTALL_JAVA}"
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        scorer = Meteor()
        try:
            return 100.0 * scorer.compute_score(gts, res)[0], "pycocoevalcap (METEOR 1.5, Java)"
        finally:
            del scorer
    except (OSError, ValueError) as e:  # the runtime failed to start or answered nonsense
        return None, f"unavailable: METEOR did not run ({str(e).strip()[:80] or type(e).__name__})"
