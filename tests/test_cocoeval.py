"""COCO caption scores: equal to pycocoevalcap run directly, and honest about missing parts."""
from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest

from conftest import mmdesc
from mmdesc import cocoeval
from mmdesc.cocoeval import KEYS, coco_scores, ptb_tokenize_python

try:
    import pycocoevalcap  # noqa: F401
    HAVE_PACKAGE = True
except ImportError:
    HAVE_PACKAGE = False
needs_package = pytest.mark.skipif(not HAVE_PACKAGE, reason="pycocoevalcap is not installed (pip install '.[coco]')")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime (apt-get install default-jre-headless)")

# what the PTB tokenizer of the COCO evaluation makes of them (checked against it below, where Java runs)
TRICKY = {
    "A man's dog, running.": "a man 's dog running",
    "Two dogs don't play in the U.S. park!": "two dogs do n't play in the u.s. park",
    'A black-and-white photo (old) of 3.5 cats; "nice"...': "a black-and-white photo -lrb- old -rrb- of 3.5 cats nice",
    "The kids' toys are on the table.": "the kids toys are on the table",
    "it's a cat -- really": "it 's a cat really",
    "I'm sure they'll go, we'd see.": "i 'm sure they 'll go we 'd see",
    "A 'quoted' word": "a quoted word",
    "Mr. Smith's car": "mr. smith 's car",
    "people at a bar/restaurant & a TV": "people at a bar/restaurant & a tv",
    "he said:hello": "he said hello",
    "A plane flying over a city - with clouds ": "a plane flying over a city with clouds",
    "": "",
}

HYPS = ["A small red circle to the left of a large blue square.", "a green star", "Two crosses, one yellow.",
        "a big purple triangle above a tiny circle", ""]
REFS = [["a small red circle left of a large blue square", "A red circle and a big blue square."],
        ["a green star", "A small green star in the middle."],
        ["two yellow crosses", "a yellow cross next to a red cross", "Crosses: two, yellow and red."],
        ["a large purple triangle above a small orange circle"],
        ["a white square"]]


def test_python_tokenizer_matches_the_cases_it_documents():
    for text, tokens in TRICKY.items():
        assert ptb_tokenize_python(text) == tokens, text


@needs_package
@needs_java
def test_python_tokenizer_agrees_with_the_ptb_tokenizer():
    assert cocoeval.ptb_tokenize_java(list(TRICKY)) == list(TRICKY.values())


def direct(hyps, refs, meteor: bool):
    """pycocoevalcap as its own COCOEvalCap runs it: PTBTokenizer, then each scorer; x100."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    out = {f"coco_bleu{n}": 100 * b for n, b in enumerate(bleu, 1)}
    out["coco_rouge_l"] = 100 * Rouge().compute_score(gts, res)[0]
    out["coco_cider_d"] = 100 * Cider().compute_score(gts, res)[0]
    if meteor:
        out["coco_meteor"] = 100 * Meteor().compute_score(gts, res)[0]
    return out


@needs_package
@needs_java
def test_coco_scores_agree_with_pycocoevalcap_run_directly():
    ours = coco_scores(HYPS, REFS, meteor=False)
    theirs = direct(HYPS, REFS, meteor=False)
    assert ours["coco_tokenizer"] == cocoeval.PTB_JAVA
    assert 10 < theirs["coco_bleu4"] < 90  # neither trivial nor perfect: a real comparison
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    assert ours["coco_meteor"] is None and ours["coco_notes"]["coco_meteor"] == "not asked for"


@needs_package
def test_without_the_package_rouge_and_cider_are_mmdesc_s_and_the_rest_says_why(monkeypatch):
    monkeypatch.setattr(cocoeval, "java", lambda: None)  # both runs tokenize alike: in Python
    with_package = coco_scores(HYPS, REFS)
    monkeypatch.setattr(cocoeval, "_package", lambda: False)
    without = coco_scores(HYPS, REFS)
    for key in ("coco_rouge_l", "coco_cider_d"):  # the reference code's formulas, written here
        assert without[key] == pytest.approx(with_package[key], abs=1e-9), key
        assert without["coco_notes"][key].startswith("mmdesc")
    for key in ("coco_bleu1", "coco_bleu4", "coco_meteor"):
        assert without[key] is None and "pip install 'mmdesc[coco]'" in without["coco_notes"][key]
    assert with_package["coco_meteor"] is None and "Java runtime" in with_package["coco_notes"]["coco_meteor"]
    assert "Python approximation" in without["coco_tokenizer"]


def test_evaluate_scorer_coco_says_what_it_could_not_compute(tiny_image_run, monkeypatch):
    monkeypatch.setattr(cocoeval, "java", lambda: None)  # a machine without Java
    r = mmdesc("evaluate", "--checkpoint", tiny_image_run, "--scorer", "coco")
    assert r.code == 0, r.err
    meteor = next(line for line in r.out.splitlines() if "METEOR (COCO)" in line)
    assert "n/a" in meteor and "Java" in meteor
    assert "BLEU-4 (COCO)" in r.out and "CIDEr-D (COCO)" in r.out and "ROUGE-L (COCO)" in r.out
    assert "Python approximation of the PTB tokenizer" in r.out
    assert "bleu:" not in r.out  # sacrebleu's BLEU and signature give way to the COCO ones
    plain = mmdesc("evaluate", "--checkpoint", tiny_image_run)
    assert "ROUGE-L" in plain.out and "BLEU-4 (COCO)" not in plain.out and "bleu: nrefs" in plain.out


@needs_package
@needs_java
def test_evaluate_scorer_coco_agrees_with_pycocoevalcap(tiny_image_run, tmp_path):
    hyps_file = tmp_path / "hyps.txt"
    r = mmdesc("evaluate", "--checkpoint", tiny_image_run, "--scorer", "coco", "--json", "--hypotheses", hyps_file)
    assert r.code == 0, r.err
    ours = json.loads(r.out)
    from mmdesc.build import load_trained, read_split

    hyps = hyps_file.read_text().splitlines()
    refs = [ex.references for ex in read_split(load_trained(tiny_image_run).recipe, "test")]
    assert len(refs) == len(hyps) == ours["n"]
    theirs = direct(hyps, refs, meteor=True)
    assert ours["coco_tokenizer"] == cocoeval.PTB_JAVA
    for key in KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
