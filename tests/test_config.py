"""Recipes: YAML + overrides -> typed frozen dataclasses, every problem reported at once."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from mmdesc.config import (DecoderConfig, Recipe, SynthConfig, load_recipe, parse_dataclass,
                           recipe_from_dict, recipe_to_dict)
from mmdesc.errors import ConfigError
from mmdesc.modalities import MODALITIES


# Tiny stand-ins for modality modules: the registry is injected, so these tests do not
# depend on mmdesc/modalities/image.py or text.py.
@dataclass(frozen=True)
class FakeImageReader:
    size: tuple[int, int] = (5, 7)
    mean: tuple[float, ...] = (0.5, 0.25, 0.125)


@dataclass(frozen=True)
class FakeImageEncoder:
    backbone: str = "simple"
    weights: str | None = None
    channels: list[int] = field(default_factory=lambda: [3, 11])


@dataclass(frozen=True)
class FakeImageSplit:
    captions: str
    images: str = "images"


@dataclass(frozen=True)
class FakeTextReader:
    lowercase: bool = False


@dataclass(frozen=True)
class FakeTextEncoder:
    layers: int = 1

    def problems(self) -> list[str]:
        return [] if self.layers >= 1 else [f"layers: must be > 0, got {self.layers}"]


@dataclass(frozen=True)
class FakeTextSplit:
    src: str
    tgt: str


FAKES = {
    "image": SimpleNamespace(ReaderConfig=FakeImageReader, EncoderConfig=FakeImageEncoder,
                             SplitConfig=FakeImageSplit),
    "text": SimpleNamespace(ReaderConfig=FakeTextReader, EncoderConfig=FakeTextEncoder,
                            SplitConfig=FakeTextSplit),
}

GOOD = """\
modality: image
name: tiny
data:
  root: data/tiny
  synth: {train: 20, valid: 5}
  train: {captions: train.json}
  valid: {captions: valid.json, images: val_images}
input:
  size: [9, 13]
decoder:
  hidden: 7
  emb: 5
  out: 5
  tied: true
train:
  lr: 1e-3          # PyYAML reads this as a string; it must still be a number
  max_steps: 20
"""


def write(tmp_path, text: str, name: str = "recipe.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path, text: str = GOOD, overrides=()) -> Recipe:
    return load_recipe(write(tmp_path, text), overrides, modalities=FAKES)


def problems(tmp_path, text: str = GOOD, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, overrides)
    return info.value.problems


def test_good_recipe_loads_with_modality_types_and_defaults(tmp_path):
    r = load(tmp_path)
    assert r.modality == "image" and r.name == "tiny"
    assert r.data.train == FakeImageSplit(captions="train.json")
    assert r.data.valid.images == "val_images"
    assert r.data.test is None
    assert r.data.synth == SynthConfig(train=20, valid=5)
    assert r.input == FakeImageReader(size=(9, 13))
    assert r.encoder == FakeImageEncoder()  # absent section: the modality's defaults
    assert r.decoder == DecoderConfig(hidden=7, emb=5, out=5, tied=True)
    assert r.train.lr == 1e-3 and isinstance(r.train.lr, float)
    assert r.search.beam == 5 and r.out == "runs/default"
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.decoder.hidden = 3


def test_overrides_change_values_and_types(tmp_path):
    r = load(tmp_path, overrides=["decoder.hidden=11", "train.lr=3e-4", "train.skip_bad=true",
                                  "data.test={captions: test.json}", "data.synth=null",
                                  "search.max_len_a=1", "input.mean=[1, 2]", "name=123abc",
                                  "encoder.weights=/tmp/w.safetensors", "seed=7"])
    assert r.decoder.hidden == 11
    assert r.train.lr == 3e-4 and r.train.skip_bad is True
    assert r.data.test == FakeImageSplit(captions="test.json")
    assert r.data.synth is None
    assert r.search.max_len_a == 1.0 and isinstance(r.search.max_len_a, float)
    assert r.input.mean == (1.0, 2.0)
    assert r.name == "123abc" and r.encoder.weights == "/tmp/w.safetensors" and r.seed == 7


def test_override_can_open_a_section_the_file_leaves_out(tmp_path):
    r = load(tmp_path, overrides=["search.beam=3", "search.n_best=3", "tokenizer.kind=word"])
    assert (r.search.beam, r.search.n_best, r.tokenizer.kind) == (3, 3, "word")


@pytest.mark.parametrize("override, expected", [
    ("decoder.hiden=5", "decoder.hiden: unknown key — did you mean 'hidden'?"),
    ("data.synth.trian=5", "data.synth.trian: unknown key — did you mean 'train'?"),
    ("data.train.captoins=x", "data.train.captoins: unknown key — did you mean 'captions'?"),
    ("input.szie=[1, 2]", "input.szie: unknown key — did you mean 'size'?"),
    ("decodr.hidden=5", "decodr: unknown key — did you mean 'decoder'?"),
])
def test_misspelled_key_at_any_depth(tmp_path, override, expected):
    assert problems(tmp_path, overrides=[override]) == [expected]


def test_misspelled_key_in_yaml_matches_override_message(tmp_path):
    text = GOOD.replace("  hidden: 7", "  hiden: 7")
    assert problems(tmp_path, text) == ["decoder.hiden: unknown key — did you mean 'hidden'?"]


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path):
    [msg] = problems(tmp_path, overrides=["tokenizer.zzz=1"])
    assert msg == "tokenizer.zzz: unknown key — valid keys: kind, model_type, vocab_size"


def test_all_errors_reported_together(tmp_path):
    found = problems(tmp_path, overrides=["decoder.hiden=5", "decoder.attention=luong2",
                                          "train.lr=fast", "search.beam=2.5", "train.skip_bad=1",
                                          "data.valid.captions=null"])
    assert found == [
        "data.valid.captions: expected a string, got null",
        "decoder.hiden: unknown key — did you mean 'hidden'?",
        "decoder.attention: 'luong2' is not one of {mlp, dot, location, coverage}",
        "search.beam: expected an integer, got 2.5",
        "train.lr: expected a number, got 'fast'",
        "train.skip_bad: expected true or false, got 1",
    ]


def test_unknown_modality_still_checks_the_shared_sections(tmp_path):
    found = problems(tmp_path, GOOD.replace("modality: image", "modality: imgae"),
                     overrides=["decoder.cell=rnn"])
    assert found == ["modality: 'imgae' is not one of {image, text} — did you mean 'image'?",
                     "decoder.cell: 'rnn' is not one of {gru, lstm}"]


def test_unknown_modality_against_the_real_registry():
    with pytest.raises(ConfigError) as info:
        recipe_from_dict({"modality": "imgae", "data": {}})  # lists keys, imports no module
    names = ", ".join(MODALITIES)  # every registered modality, in registry order
    assert info.value.problems == [f"modality: 'imgae' is not one of {{{names}}} — did you mean 'image'?"]


def test_missing_required_keys(tmp_path):
    found = problems(tmp_path, "modality: text\ndata:\n  train: {src: a.txt}\n")
    assert found == ["data.train: missing required key 'tgt'", "data: missing required key 'valid'"]
    assert problems(tmp_path, "name: x\n") == ["recipe: missing required key 'modality'",
                                              "recipe: missing required key 'data'"]


@pytest.mark.parametrize("override, expected", [
    ("decoder.dropout=1.0", "decoder.dropout: must be in [0, 1), got 1.0"),
    ("decoder.emb=6", "decoder.tied: needs out == emb, got out=5, emb=6"),
    ("search.n_best=6", "search.n_best: must be <= beam (5), got 6"),
    ("search.beam=0", "search.beam: must be > 0, got 0"),
    ("train.max_steps=-1", "train.max_steps: must be > 0, got -1"),
    ("data.synth.train=0", "data.synth.train: must be > 0, got 0"),
])
def test_sanity_checks(tmp_path, override, expected):
    assert expected in problems(tmp_path, overrides=[override])


def test_modality_sections_run_their_own_checks(tmp_path):
    text = "modality: text\ndata: {train: {src: a, tgt: b}, valid: {src: c, tgt: d}}\n"
    assert load(tmp_path, text).encoder == FakeTextEncoder()
    assert problems(tmp_path, text, ["encoder.layers=0"]) == ["encoder.layers: must be > 0, got 0"]


def test_wrong_shapes(tmp_path):
    found = problems(tmp_path, overrides=["decoder=5", "input.size=[1, 2, 3]", "input.mean=[0.5, x]",
                                          "encoder.channels=3"])
    assert found == ["input.size: expected 2 items, got 3", "input.mean[1]: expected a number, got 'x'",
                     "encoder.channels: expected a list, got 3", "decoder: expected a mapping, got 5"]


def test_int_accepts_whole_floats_but_not_bools(tmp_path):
    assert load(tmp_path, overrides=["train.max_steps=1e4"]).train.max_steps == 10000
    assert problems(tmp_path, overrides=["train.max_steps=true"]) == [
        "train.max_steps: expected an integer, got true"]


def test_bad_override_syntax(tmp_path):
    assert problems(tmp_path, overrides=["decoder.hidden"]) == [
        "override 'decoder.hidden': expected key.path=value"]
    assert problems(tmp_path, overrides=["name.x=1"]) == [
        "name: is 'tiny', not a section (override 'name.x=1')"]


def test_round_trip_through_plain_data(tmp_path):
    r = load(tmp_path, overrides=["data.test={captions: t.json}", "encoder.weights=w"])
    d = recipe_to_dict(r)
    assert json.loads(json.dumps(d)) == d
    assert d["input"]["size"] == [9, 13]
    assert recipe_from_dict(json.loads(json.dumps(d)), modalities=FAKES) == r


def test_file_problems_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml", modalities=FAKES)
    with pytest.raises(ConfigError, match="line 3"):
        load(tmp_path, "modality: image\nname: x\n  indented: wrong\n")
    with pytest.raises(ConfigError, match="top level"):
        load(tmp_path, "- a list\n- not a mapping\n")


def test_python_tags_are_rejected(tmp_path):
    text = "modality: image\nname: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(ConfigError, match="line 2.*python/object"):
        load(tmp_path, text)


def test_parse_dataclass_collects_into_caller_list():
    errors: list[str] = []
    assert parse_dataclass(DecoderConfig, {"cell": "lstm", "emb": "x"}, "dec", errors) is None
    assert errors == ["dec.emb: expected an integer, got 'x'"]


def test_config_does_not_import_torch():
    code = "import sys, mmdesc.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_metric_must_be_a_known_score_and_moved_keys_name_their_new_place(tmp_path):
    found = problems(tmp_path, overrides=["train.metric=blue", "decoder.ds_penalty=1.0"])
    assert "decoder.ds_penalty: moved to loss.ds_penalty" in found
    bad = [p for p in found if p.startswith("train.metric")]
    assert bad and "'blue' is not one of" in bad[0] and "wer" in bad[0] and "did you mean 'bleu'" in bad[0]


def test_checkpoint_recipes_from_before_the_loss_section_still_load(tmp_path):
    from mmdesc.config import load_recipe, recipe_from_dict, recipe_to_dict

    from conftest import RECIPES

    r = load_recipe(RECIPES / "tiny" / "image.yaml")
    old = recipe_to_dict(r)
    old["decoder"]["ds_penalty"] = old.pop("loss")["ds_penalty"]
    assert recipe_from_dict(old).loss.ds_penalty == r.loss.ds_penalty == 0.1
# --- hostile recipes, through `mmdesc train`: each refused fast, in bounded memory, one line per problem

def alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\nmodality: image\n"  # 9^10 values once expanded


HOSTILE_RECIPES = {  # kind -> (recipe text, words the one error line must hold)
    "alias bomb (billion laughs)": (alias_bomb(), "aliases expanded"),
    "deeply nested flow sequence": ("a: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested more than 32"),
    "deeply nested block mappings": ("".join("  " * i + f"k{i}:\n" for i in range(100)), "nested more than 32"),
    "self-referencing alias": ("a: &a [*a]\n", "refers to the node that contains it"),
    "50,000-key mapping": ("".join(f"k{i}: {i}\n" for i in range(50_000)), "values (aliases expanded)"),
    "integer of 5000 digits": ("seed: " + "9" * 5000 + "\n", "thousands of digits"),
    "recipe over 1 MB": ("name: '" + "x" * (1 << 20) + "'\n", "more than 1,048,576"),
    "not UTF-8": ("name: \xff\n", "not UTF-8"),
}


@pytest.mark.parametrize("kind", HOSTILE_RECIPES)
def test_hostile_yaml_is_refused_fast_in_bounded_memory(kind, tmp_path):
    import time
    import tracemalloc

    from conftest import mmdesc

    text, expected = HOSTILE_RECIPES[kind]
    path = tmp_path / "hostile.yaml"
    path.write_bytes(text.encode("latin-1") if kind == "not UTF-8" else text.encode())
    tracemalloc.start()
    start = time.monotonic()
    r = mmdesc("train", path, f"out={tmp_path / 'run'}")
    seconds, peak = time.monotonic() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert r.code == 2 and "Traceback" not in r.err, r.err
    problems = [l for l in r.err.splitlines() if l.startswith("  - ")]
    assert len(problems) == 1 and expected in problems[0] and len(problems[0]) < 200, r.err
    assert seconds < 10 and peak < 64 << 20, (seconds, peak)  # an expanded bomb would take hours and GBs
    assert not (tmp_path / "run").exists()


def test_every_bad_number_and_machine_problem_is_one_line_all_at_once(tmp_path):
    from conftest import RECIPES, mmdesc

    (tmp_path / "a-file").write_text("not a folder")
    huge = "9" * 30
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tmp_path / 'nowhere'}",
               "decoder.hidden=100000000", "decoder.emb=0", "train.lr=.nan", "train.lr=-1", "search.beam=1e400",
               "tokenizer.vocab_size=3", f"train.batch_size={huge}", "seed=-1", "encoder.grid=1000",
               "input.size=100000", "input.std=[0.2, 0, 0.2]", "train.device=cuda:99", "train.threads=100000",
               f"out={tmp_path / 'a-file'}")
    assert r.code == 2 and "Traceback" not in r.err
    problems = [l[4:] for l in r.err.splitlines() if l.startswith("  - ")]
    expected = ["decoder.hidden: must be in [1, 16384]", "decoder.emb: must be > 0", "train.lr: must be > 0",
                "search.beam: expected a finite number", "tokenizer.vocab_size: must be in [5, 1000000]",
                "train.batch_size: expected a finite number of magnitude at most 2^53", "seed: must be in [0, 4294967295]",
                "encoder.grid: must be in [1, 64]", "input.size: must be in [1, 4096]", "input.std: must be > 0",
                "train.device: cuda:99: this machine has", "train.threads: must be in [0, 1024]",
                "is a file, not a run folder"]
    for e in expected:
        assert sum(e in p for p in problems) == 1, f"{e!r} not once in {problems}"
    assert all(len(p) < 160 for p in problems) and huge not in r.err  # values shortened, never whole
    assert not (tmp_path / "nowhere").exists()  # refused before any data was generated


def test_out_empty_or_unwritable_is_refused_before_work(tmp_path):
    from conftest import RECIPES, mmdesc

    for out, expected in (("", "out: is empty"), ("/proc/mmdesc-run/x", "out: cannot write in '/proc'")):
        r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tmp_path / 'nowhere'}", f"out={out}")
        assert r.code == 2 and expected in r.err and "Traceback" not in r.err, r.err
        assert not (tmp_path / "nowhere").exists()


def test_a_fifo_named_as_the_recipe_is_refused_not_waited_on(tmp_path):
    import os

    from conftest import mmdesc

    os.mkfifo(tmp_path / "recipe.yaml")
    r = mmdesc("train", tmp_path / "recipe.yaml")
    assert r.code == 2 and "not a regular file" in r.err
