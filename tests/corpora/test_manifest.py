"""The scene manifest joins a scene's forms across modalities; word classes of both languages."""
import json

import pytest

from conftest import mmdesc
from mmdesc.corpora import synth
from mmdesc.errors import DataError


def test_manifest_joins_each_scenes_forms(tmp_path):
    r = mmdesc("data", "synth", tmp_path, "--train", 3, "--valid", 1, "--test", 4, "--seed", 7)
    assert r.code == 0, r.err
    scenes = synth.read_manifest(tmp_path, "test")
    assert [s["id"] for s in scenes] == [f"test_{k:06d}" for k in range(4)]
    english = (tmp_path / "test.en").read_text().splitlines()
    french = (tmp_path / "test.fr").read_text().splitlines()
    for k, s in enumerate(scenes):
        assert set(s["forms"]) == {"image", "text"}
        image, text = s["forms"]["image"], s["forms"]["text"]
        assert (tmp_path / image["file"]).exists() and image["caption"] == s["caption"]
        assert text["line"] == english[k] == s["caption"] and text["caption"] == french[k]
        assert set(image["regions"]) == {o["shape"] for o in s["objects"]}
        assert text["alignment"]["sure"]
    assert synth.read_manifest(tmp_path, "nonexistent") == []


def test_a_broken_manifest_line_names_file_and_line(tmp_path):
    path = synth.manifest_path(tmp_path, "test")
    path.write_text(json.dumps({"id": "a", "forms": {}}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"scenes_test.jsonl:2: not JSON"):
        synth.read_manifest(tmp_path, "test")
    path.write_text(json.dumps({"id": "a"}) + "\n")
    with pytest.raises(DataError, match="forms"):
        synth.read_manifest(tmp_path, "test")


def test_adding_a_part_keeps_the_others(tmp_path):
    synth.add_to_manifest(tmp_path, "valid", "one", {"valid_000001": {"line": "b"}, "valid_000000": {"line": "a"}})
    synth.add_to_manifest(tmp_path, "valid", "two", {"valid_000000": {"file": "x.wav"}},
                          scenes={"valid_000000": {"caption": "a"}})
    scenes = synth.read_manifest(tmp_path, "valid")
    assert [s["id"] for s in scenes] == ["valid_000000", "valid_000001"]
    assert scenes[0]["forms"] == {"one": {"line": "a"}, "two": {"file": "x.wav"}} and scenes[0]["caption"] == "a"


@pytest.mark.parametrize("word, cls", [("circle", "shape"), ("étoile", "shape"), ("violette", "colour"),
                                       ("grande", "size"), ("left", "relation"), ("au-dessus", "relation"),
                                       ("d'une", "function"), ("a", "function"), ("zebra", "other")])
def test_word_classes(word, cls):
    assert synth.word_class(word) == cls
