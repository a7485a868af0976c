"""mmdesc average: the mean of a run's checkpoints, refusing checkpoints of other models."""
import json

import torch
from safetensors.torch import load_file

from checkpoints import variant
from conftest import mmdesc


def weights(ckpt):
    return load_file(str(ckpt / "model.safetensors"))


def test_average_of_the_last_checkpoints(tiny_image_run, tiny_data, copy_run):
    run = copy_run(tiny_image_run)
    ckpts = sorted(run.glob("ckpt-*"))[-2:]
    r = mmdesc("average", run, "--last", 2)
    assert r.code == 0, r.err
    out = run / "avg-last2"
    assert r.out.strip() == str(out) and "mean of 2 checkpoints" in r.err
    a, b, avg = weights(ckpts[0]), weights(ckpts[1]), weights(out)
    assert avg.keys() == b.keys()
    assert any(t.is_floating_point() and not torch.equal(a[n], b[n]) for n, t in b.items())
    for name, t in b.items():
        if t.is_floating_point():
            torch.testing.assert_close(avg[name], ((a[name].double() + t.double()) / 2).to(t.dtype))
        else:  # integer buffers (batch-norm step counters) come from the last checkpoint
            assert torch.equal(avg[name], t)
    assert not (out / "train_state.safetensors").exists()
    step = [json.loads((c / "meta.json").read_text())["step"] for c in (out, ckpts[1])]
    assert step[0] == step[1]
    img = sorted((tiny_data / "images").glob("test_*.png"))[0]
    d = mmdesc("describe", img, "-c", out)
    assert d.code == 0 and d.out.startswith(str(img)), d.err
    assert sorted(p.name for p in run.glob("ckpt-*")) == [p.name for p in ckpts]  # a training's own folders untouched


def test_average_of_two_identical_checkpoints_is_that_checkpoint(tiny_image_run, tiny_data, tmp_path, copy_run):
    best = tiny_image_run / "best"
    twin = copy_run(best)
    r = mmdesc("average", best, twin, "--out", tmp_path / "avg")
    assert r.code == 0, r.err
    same, avg = weights(best), weights(tmp_path / "avg")
    assert same.keys() == avg.keys() and all(torch.equal(same[n], avg[n]) for n in same)
    imgs = sorted((tiny_data / "images").glob("test_*.png"))[:3]
    assert mmdesc("describe", *imgs, "-c", tmp_path / "avg").out == mmdesc("describe", *imgs, "-c", best).out


def test_average_refuses_other_models_in_one_line(tiny_image_run, tmp_path):
    best = tiny_image_run / "best"
    for changes, why in (({"decoder": {"hidden": 10}}, "differ in shape"),
                         ({"tokenizer": {"vocab_size": 30}}, "tokenizer differs")):
        other = variant(tiny_image_run, tmp_path / "other", changes)
        r = mmdesc("average", best, other, "--out", tmp_path / "avg")
        assert r.code == 2 and r.out == "", r.err
        assert r.err.strip().count("\n") == 0 and why in r.err and str(other) in r.err
        assert not (tmp_path / "avg").exists()


def test_average_asks_for_checkpoints_the_run_kept(tiny_image_run):
    r = mmdesc("average", tiny_image_run, "--last", 50)
    assert r.code == 2 and r.err.strip().count("\n") == 0 and "train.keep_last=50" in r.err
    r = mmdesc("average", tiny_image_run / "best")
    assert r.code == 2 and "two or more" in r.err
