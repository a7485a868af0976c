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


def test_recipes_of_one_corpus_part_ask_for_the_same_part():
    """Two recipes that generate the same modality's part under one data.root must ask for
    the same seed and counts: otherwise each would write the part again for the other."""
    asked: dict[tuple[str, str], tuple[str, object]] = {}
    for path in ALL:
        r = load_recipe(path)
        if r.data.synth is None:
            continue
        key = (r.data.root, r.modality)
        first = asked.setdefault(key, (path.name, r.data.synth))
        assert first[1] == r.data.synth, f"{path.name} and {first[0]} ask {key} for different synthetic parts"
