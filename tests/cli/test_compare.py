"""mmdesc compare (and evaluate's attention statistics) through the CLI, on the tiny runs."""
import csv
import json

from PIL import Image

from conftest import mmdesc
from mmdesc.compare import shared_scenes
from mmdesc.corpora import Example


def test_compare_prints_a_row_per_modality_and_writes_csv_json_figures(tiny_image_run, tiny_text_run,
                                                                        tmp_path):
    out = tmp_path / "cmp"
    r = mmdesc("compare", "-c", tiny_image_run, "-c", tiny_text_run, "--scenes", 3, "--out", out, "--beam", 2)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert any("attention on test" in line for line in lines)
    assert any("on 3 shared scenes" in line for line in lines)
    header = next(line for line in lines if "entropy" in line)
    for label in ("BLEU-4", "coverage", "backward %", "grounding %", "AER %"):
        assert label in header
    image_rows = [line.split() for line in lines if line.strip().startswith("image ")]
    text_rows = [line.split() for line in lines if line.strip().startswith("text ")]
    assert len(image_rows) == len(text_rows) == 2  # the split, then the shared scenes

    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [(row["scope"], row["modality"]) for row in rows] == [("test", "image"), ("test", "text"),
                                                                  ("shared", "image"), ("shared", "text")]
    image, text = rows[0], rows[1]
    assert int(image["n"]) == int(text["n"]) == 6
    assert 0.0 <= float(image["entropy"]) <= 1.0 and 0.0 < float(image["peak"]) <= 1.0
    assert image["backward"] == "" and image["grounding"] != "" and image["aer"] == ""  # a grid has no order
    assert text["backward"] != "" and text["jump"] != "" and text["aer"] != "" and text["grounding"] == ""
    doc = json.loads((out / "compare.json").read_text())
    assert doc["shared"]["scenes"] == ["test_000000", "test_000001", "test_000002"]
    assert [row["modality"] for row in doc["rows"]] == ["image", "text"]
    for name in doc["figures"]:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 500 and im.height > 200
    assert {"entropy_by_position.png", "peak_by_word_class.png"} <= set(doc["figures"])
    grounded = any((row.get("grounding_n") or 0) > 0 for row in doc["rows"])
    assert ("grounding_by_word_class.png" in doc["figures"]) == grounded  # drawn when some word was grounded


def test_compare_with_a_missing_checkpoint_is_one_line(tmp_path):
    r = mmdesc("compare", "-c", tmp_path / "nope", "--out", tmp_path / "o")
    assert r.code != 0 and "Traceback" not in r.err
    assert str(tmp_path / "nope") in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_evaluate_reports_attention_statistics(tiny_text_run):
    r = mmdesc("evaluate", "-c", tiny_text_run, "--json", "--limit", 3)
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert 0.0 <= result["entropy"] <= 1.0 and 0.0 <= result["coverage"] <= 1.0
    assert 0.0 <= result["backward"] <= 100.0 and "aer" in result
    table = mmdesc("evaluate", "-c", tiny_text_run, "--limit", 3)
    assert "attention entropy" in table.out and "attention backward (%)" in table.out


def test_shared_scenes_are_those_every_model_has_with_one_caption():
    def forms(ids, caption=lambda i: f"scene {i}"):
        return {i: (Example(i, "src", []), {"caption": caption(i)}) for i in ids}

    a = forms(["s2", "s0", "s1", "s3"])
    b = forms(["s1", "s3", "s0"], caption=lambda i: "another scene" if i == "s3" else f"scene {i}")
    assert shared_scenes([a, b], limit=5) == ["s0", "s1"]  # s2: only in a; s3: not the same scene
    assert shared_scenes([a, b], limit=1) == ["s0"]
    assert shared_scenes([], limit=3) == []
