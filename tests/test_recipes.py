"""Every recipe under recipes/ loads and validates; each has a tiny twin (trained by the CLI tests)."""
from pathlib import Path

import pytest

from conftest import RECIPES
from mmdesc.config import load_recipe
from mmdesc.modalities import MODALITIES

ALL = sorted(RECIPES.rglob("*.yaml"))


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(RECIPES)) for p in ALL])
def test_recipe_loads(path: Path):
    r = load_recipe(path)
    assert r.modality in MODALITIES
    assert r.data.train is not None and r.data.valid is not None


def test_every_recipe_has_a_tiny_twin():
    full = {p.name for p in RECIPES.glob("*.yaml")}
    tiny = {p.name for p in (RECIPES / "tiny").glob("*.yaml")}
    assert full and full <= tiny, f"recipes without a tiny twin: {sorted(full - tiny)}"


def test_every_modality_has_a_recipe():
    used = {load_recipe(p).modality for p in ALL}
    assert used == set(MODALITIES)
