"""COCO captions, Karpathy split and Flickr token readers on tiny files."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mmdesc.corpora import synth
from mmdesc.modalities.image import synthesize as write_image_corpus
from mmdesc.corpora.coco import read_coco, read_flickr_tokens, read_karpathy, write_coco
from mmdesc.errors import DataError


def test_round_trip(tmp_path):
    images = [{"id": 7, "file_name": "a.png", "width": 33, "height": 21},
              {"id": 3, "file_name": "b.png", "width": 33, "height": 21}]
    anns = [{"id": 0, "image_id": 3, "caption": " a red star "}, {"id": 1, "image_id": 7, "caption": "x y"},
            {"id": 2, "image_id": 3, "caption": "a star"}]
    objects = [{"image_id": 7, "category": "star", "colour": "red", "size": "small", "bbox": [1, 2, 5, 6]},
               {"image_id": 7, "category": "star", "colour": "blue", "size": "large", "bbox": [10, 2, 3, 4]},
               {"image_id": 3, "category": "cross", "colour": "red", "size": "small", "bbox": [0, 0, 9, 8]}]
    write_coco(tmp_path / "c.json", images, anns, objects)
    ex = read_coco(tmp_path / "c.json", tmp_path / "img")
    assert [e.id for e in ex] == ["7", "3"]
    assert ex[0].source == str(tmp_path / "img" / "a.png")
    assert ex[0].references == ["x y"] and ex[1].references == ["a red star", "a star"]
    assert ex[0].meta["regions"] == {"star": [[1, 2, 6, 8], [10, 2, 13, 6]]}
    assert ex[1].meta["regions"] == {"cross": [[0, 0, 9, 8]]}
    assert ex[0].meta["objects"] == [{"shape": "star", "colour": "red", "size": "small", "box": [1, 2, 6, 8]},
                                     {"shape": "star", "colour": "blue", "size": "large", "box": [10, 2, 13, 6]}]


def test_synthetic_corpus_reads_back(tmp_path):
    write_image_corpus(tmp_path, 4, 1, 1, seed=3, size=48)
    ex = read_coco(tmp_path / "captions_train.json", tmp_path / "images")
    rng = random.Random("3:train")
    for e, scene in zip(ex, [synth.sample_scene(rng, 48) for _ in range(4)], strict=True):
        assert e.references == synth.captions(scene)
        assert Path(e.source).is_file()
        boxes = {}
        for o in scene.objects:
            boxes.setdefault(o.shape, []).append(list(o.box))
        assert e.meta["regions"] == boxes
        assert e.meta["objects"] == synth.object_truth(scene)


def test_real_coco_without_objects_has_no_meta(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "COCO_val2014_1.jpg", "width": 640, "height": 480}],
           "annotations": [{"id": 5, "image_id": 1, "caption": "A dog.\n"}]}
    (tmp_path / "cap.json").write_text(json.dumps(doc))
    (e,) = read_coco(tmp_path / "cap.json", Path("/x"))
    assert e.references == ["A dog."] and e.meta == {} and e.source == "/x/COCO_val2014_1.jpg"


@pytest.mark.parametrize("text, problem", [
    ("{not json", "malformed JSON"),
    (json.dumps({"annotations": []}), "'images'"),
    (json.dumps({"images": [{"id": 1}], "annotations": []}), "'file_name'"),
    (json.dumps({"images": [{"id": 1, "file_name": "a"}], "annotations": []}), "no captions"),
    (json.dumps({"images": [{"id": 1, "file_name": "a"}], "annotations": [{"image_id": 2, "caption": "c"}]}),
     "unknown image id"),
    (json.dumps({"images": [{"id": 1, "file_name": "a"}], "annotations": [{"image_id": 1}]}), "'caption'"),
])
def test_bad_coco_files(tmp_path, text, problem):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(DataError, match=problem) as err:
        read_coco(path, tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def karpathy(tmp_path: Path) -> Path:
    doc = {"images": [
        {"filename": "a.jpg", "filepath": "val2014", "split": "test", "cocoid": 42,
         "sentences": [{"raw": "A cat. "}, {"raw": "a cat"}]},
        {"filename": "b.jpg", "split": "train", "imgid": 1, "sentences": [{"raw": "b"}]},
        {"filename": "c.jpg", "split": "restval", "sentences": [{"raw": "c"}]},
        {"filename": "d.jpg", "split": "val", "imgid": 3, "sentences": [{"raw": "d"}]},
    ]}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(doc))
    return path


def test_karpathy_splits(tmp_path):
    path = karpathy(tmp_path)
    (e,) = read_karpathy(path, Path("/imgs"), "test")
    assert (e.id, e.source, e.references) == ("42", "/imgs/val2014/a.jpg", ["A cat.", "a cat"])
    assert [(e.id, e.source) for e in read_karpathy(path, Path("/imgs"), "train")] == \
        [("1", "/imgs/b.jpg"), ("c.jpg", "/imgs/c.jpg")]
    with pytest.raises(DataError, match="restval, test, train, val"):
        read_karpathy(path, Path("/imgs"), "dev")


def test_karpathy_image_without_sentences(tmp_path):
    path = tmp_path / "dataset_flickr8k.json"
    path.write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "test", "sentences": []}]}))
    with pytest.raises(DataError, match="a.jpg has no sentences"):
        read_karpathy(path, tmp_path, "test")


def test_flickr_tokens(tmp_path):
    tokens = tmp_path / "Flickr8k.token.txt"
    tokens.write_text("b.jpg#0\tA dog runs .\na.jpg#0\tA cat .\nb.jpg#1\tA dog .\n\na.jpg#1\tcat\n")
    ex = read_flickr_tokens(tokens, Path("/f"))
    assert [(e.id, e.source, e.references) for e in ex] == [
        ("b.jpg", "/f/b.jpg", ["A dog runs .", "A dog ."]), ("a.jpg", "/f/a.jpg", ["A cat .", "cat"])]
    names = tmp_path / "Flickr_8k.testImages.txt"
    names.write_text("a.jpg\n")
    assert [e.id for e in read_flickr_tokens(tokens, Path("/f"), names)] == ["a.jpg"]
    names.write_text("a.jpg\nz.jpg\n")
    with pytest.raises(DataError, match="z.jpg has no captions"):
        read_flickr_tokens(tokens, Path("/f"), names)


def test_flickr_malformed_line(tmp_path):
    tokens = tmp_path / "Flickr8k.token.txt"
    tokens.write_text("a.jpg#0\tfine\na.jpg no tab here\n")
    with pytest.raises(DataError, match=r"Flickr8k.token.txt line 2"):
        read_flickr_tokens(tokens, tmp_path)
