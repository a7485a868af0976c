"""Checkpoints: round trip, atomic replacement, and refusal of anything that could run code."""
import os
import pickle
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
