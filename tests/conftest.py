"""Shared fixtures: run the real CLI in-process, and tiny trained models (trained once per session)."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"

# torch.compile on CPU writes C++: where no compiler exists, mmdesc falls back to eager code
# (tests/cli/test_cli.py checks that); the tests of the compiled path itself need one.
needs_cxx = pytest.mark.skipif(not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")),
                               reason="torch.compile on CPU needs a C++ compiler")


@dataclass
class Run:
    code: int
    out: str
    err: str


def mmdesc(*args: str, input: str | None = None) -> Run:
    """Run ``mmdesc ARGS`` through its real entry point (errors -> exit codes), capturing output."""
    from mmdesc.cli import main

    with CliRunner().isolation(input=input) as (out, err, _):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return Run(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The tiny synthetic corpus (image + text parts), written once."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    r = mmdesc("data", "synth", root, "--train", 48, "--valid", 6, "--test", 6, "--seed", 3)
    assert r.code == 0, r.err
    return root


def _train(tmp_path_factory, data: Path, recipe: str) -> Path:
    out = tmp_path_factory.mktemp("runs") / recipe
    r = mmdesc("train", RECIPES / "tiny" / f"{recipe}.yaml", f"data.root={data}", f"out={out}")
    assert r.code == 0, r.err
    return out


@pytest.fixture(scope="session")
def tiny_image_run(tmp_path_factory, tiny_data) -> Path:
    return _train(tmp_path_factory, tiny_data, "image")


@pytest.fixture(scope="session")
def tiny_text_run(tmp_path_factory, tiny_data) -> Path:
    return _train(tmp_path_factory, tiny_data, "translate")


@pytest.fixture
def copy_run(tmp_path):
    def copy(run: Path) -> Path:
        dst = tmp_path / run.name
        shutil.copytree(run, dst)
        return dst
    return copy
