"""mmdesc evaluate: the object scores, and no training-time augmentation in evaluation."""
from __future__ import annotations

import json

import pytest

from conftest import RECIPES, mmdesc
from mmdesc import metrics
from mmdesc.corpora import synth
from mmdesc.corpora.coco import read_coco
from mmdesc.modalities import image

OBJECT_KEYS = ("chair_i", "chair_s", "count_accuracy", "object_recall", "attribute_accuracy",
               "shape_accuracy", "colour_accuracy", "size_accuracy", "relation_accuracy")


def test_evaluate_reports_object_scores_of_its_hypotheses(tiny_image_run, tiny_data, tmp_path):
    hyps_file = tmp_path / "hyps.txt"
    r = mmdesc("evaluate", "-c", tiny_image_run, "--json", "--hypotheses", hyps_file)
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert all(0.0 <= result[k] <= 100.0 for k in OBJECT_KEYS)
    hyps = hyps_file.read_text().splitlines()
    truth = [e.meta["objects"] for e in read_coco(tiny_data / "captions_test.json", tiny_data / "images")]
    expected = metrics.object_scores(hyps, truth, synth.VOCABULARY)
    assert {k: result[k] for k in expected} == pytest.approx(expected)
    table = mmdesc("evaluate", "-c", tiny_image_run)
    assert table.code == 0 and "CHAIR-s" in table.out and "count accuracy" in table.out


AUGMENT = ("input.augment_degrees=10", "input.augment_jitter=0.2", "input.augment_blur=0.5", "input.augment_jpeg=0.5")


def _spy(monkeypatch, log, fail: bool):
    real = image.Reader.augment

    def augment(self, item, rng):
        with open(log, "a") as f:
            f.write("called\n")
        if fail:
            raise AssertionError("augment called outside training")
        return real(self, item, rng)

    monkeypatch.setattr(image.Reader, "augment", augment)


def test_evaluate_and_describe_never_augment(tiny_image_run, tiny_data, tmp_path, monkeypatch):
    log = tmp_path / "calls"
    _spy(monkeypatch, log, fail=True)  # any call at all, whatever the recipe's augmentation
    assert mmdesc("evaluate", "-c", tiny_image_run, "--json").code == 0
    r = mmdesc("describe", tiny_data / "images" / "test_000000.png", "-c", tiny_image_run)
    assert r.code == 0 and r.out.strip()
    assert not log.exists()


def test_training_augments(tiny_data, tmp_path, monkeypatch):
    log = tmp_path / "calls"
    _spy(monkeypatch, log, fail=False)
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={tmp_path / 'run'}",
               "train.max_steps=2", "train.valid_every=2", *AUGMENT)
    assert r.code == 0, r.err
    assert log.exists() and len(log.read_text().splitlines()) >= 2 * 16  # two batches of 16
