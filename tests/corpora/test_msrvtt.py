"""MSR-VTT JSON and MSVD CSV / description files: hand-written samples of each layout."""
from __future__ import annotations

import json

import pytest

from mmdesc.corpora.msrvtt import read_msrvtt, read_video_captions
from mmdesc.errors import DataError


def msrvtt_doc() -> dict:
    return {
        "info": {"year": 2016},
        "videos": [
            {"category": 9, "url": "https://example.org/a", "video_id": "video0", "start time": 137.72,
             "end time": 149.44, "split": "train", "id": 0},
            {"category": 16, "url": "https://example.org/b", "video_id": "video1", "start time": 184.33,
             "end time": 206.89, "split": "validate", "id": 1},
            {"category": 9, "url": "https://example.org/c", "video_id": "video2", "start time": 31.17,
             "end time": 41.24, "split": "train", "id": 2},
        ],
        "sentences": [
            {"caption": "a car is shown", "video_id": "video0", "sen_id": 3},
            {"caption": "a man talks about a car", "video_id": "video0", "sen_id": 1},
            {"caption": "people are dancing", "video_id": "video1", "sen_id": 2},
            {"caption": " a woman sings  ", "video_id": "video2", "sen_id": 4},
        ],
    }


def test_msrvtt_json_keeps_the_asked_splits_in_file_order(tmp_path):
    (tmp_path / "train_val_videodatainfo.json").write_text(json.dumps(msrvtt_doc()))
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "video2.webm").write_bytes(b"x")  # another container is found by its name
    train = read_video_captions(tmp_path / "train_val_videodatainfo.json", tmp_path / "clips", split=("train",))
    assert [ex.id for ex in train] == ["video0", "video2"]
    assert train[0].references == ["a man talks about a car", "a car is shown"]  # sen_id order
    assert train[0].source == str(tmp_path / "clips" / "video0.mp4")
    assert train[1].source == str(tmp_path / "clips" / "video2.webm") and train[1].references == ["a woman sings"]
    assert train[0].meta == {}
    every = read_msrvtt(tmp_path / "train_val_videodatainfo.json", tmp_path / "clips")
    assert [ex.id for ex in every] == ["video0", "video1", "video2"]


def test_msrvtt_regions_become_ground_truth(tmp_path):
    doc = msrvtt_doc()
    doc["videos"][0]["regions"] = {"car": [[0.5, 1.5]]}
    (tmp_path / "v.json").write_text(json.dumps(doc))
    first = read_msrvtt(tmp_path / "v.json", tmp_path)[0]
    assert first.meta == {"regions": {"car": [[0.5, 1.5]]}}


@pytest.mark.parametrize("change,problem", [
    (lambda d: d.pop("sentences"), "the top level has no key 'sentences'"),
    (lambda d: d["videos"][1].pop("video_id"), "videos[1] has no key 'video_id'"),
    (lambda d: d["sentences"].pop(2), "video 'video1' has no captions"),
    (lambda d: [v.update(split="test") for v in d["videos"]], "no videos in split ['train'] (splits here: test)"),
])
def test_malformed_msrvtt_names_the_file_and_the_problem(tmp_path, change, problem):
    doc = msrvtt_doc()
    change(doc)
    (tmp_path / "v.json").write_text(json.dumps(doc))
    with pytest.raises(DataError) as e:
        read_video_captions(tmp_path / "v.json", tmp_path, split=("train",) if "splits here" in problem else ())
    assert str(e.value) == f"{tmp_path / 'v.json'}: {problem}"


def test_broken_json_is_a_data_error(tmp_path):
    (tmp_path / "v.json").write_text('{"videos": [}')
    with pytest.raises(DataError, match=r"v\.json: malformed JSON at line 1"):
        read_msrvtt(tmp_path / "v.json", tmp_path)


MSVD_CSV = """VideoID,Start,End,WorkerID,Source,AnnotationTime,Language,Description
mv89psg6zh4,33,46,1,clean,19,English,"A bird is bathing in a sink, happily."
mv89psg6zh4,33,46,2,unverified,21,German,Ein Vogel badet.
mv89psg6zh4,33,46,3,clean,17,English,A parakeet washes itself.
60x_yxy7Sfw,1,8,4,clean,30,English,A man is lifting a truck.
60x_yxy7Sfw,1,8,5,clean,30,English,
ZbzDGXEwtGc,6,15,6,clean,25,Spanish,Un hombre corre.
"""


def test_msvd_csv_keeps_english_descriptions_per_clip(tmp_path):
    (tmp_path / "MSR Video Description Corpus.csv").write_text(MSVD_CSV)
    examples = read_video_captions(tmp_path / "MSR Video Description Corpus.csv", tmp_path / "YouTubeClips")
    assert [ex.id for ex in examples] == ["mv89psg6zh4_33_46", "60x_yxy7Sfw_1_8"]
    assert examples[0].references == ["A bird is bathing in a sink, happily.", "A parakeet washes itself."]
    assert examples[0].source == str(tmp_path / "YouTubeClips" / "mv89psg6zh4_33_46.avi")
    assert examples[1].references == ["A man is lifting a truck."]


def test_msvd_descriptions_file_and_an_ids_list(tmp_path):
    (tmp_path / "AllVideoDescriptions.txt").write_text(
        "# Microsoft Research Video Description Corpus\n"
        "# one description per line\n"
        "mv89psg6zh4_33_46 a bird bathes in a sink\n"
        "60x_yxy7Sfw_1_8 a man lifts a truck\n"
        "mv89psg6zh4_33_46 a small bird is washing\n\n")
    (tmp_path / "test_ids.txt").write_text("60x_yxy7Sfw_1_8 vid1301\nmv89psg6zh4_33_46 vid1302\n")
    examples = read_video_captions(tmp_path / "AllVideoDescriptions.txt", tmp_path, ids=tmp_path / "test_ids.txt")
    assert [ex.id for ex in examples] == ["60x_yxy7Sfw_1_8", "mv89psg6zh4_33_46"]
    assert examples[1].references == ["a bird bathes in a sink", "a small bird is washing"]
    (tmp_path / "bad_ids.txt").write_text("nope_1_2\n")
    with pytest.raises(DataError, match=r"bad_ids\.txt: 1 ids have no captions .* \(first: 'nope_1_2'\)"):
        read_video_captions(tmp_path / "AllVideoDescriptions.txt", tmp_path, ids=tmp_path / "bad_ids.txt")


def test_msvd_files_fail_cleanly(tmp_path):
    (tmp_path / "not.csv").write_text("id,text\n1,hello\n")
    with pytest.raises(DataError, match=r"not\.csv: not an MSVD CSV: no column VideoID, Start, End"):
        read_video_captions(tmp_path / "not.csv", tmp_path)
    (tmp_path / "one.txt").write_text("lonely_id\n")
    with pytest.raises(DataError, match=r"one\.txt line 1: expected 'clip_id description'"):
        read_video_captions(tmp_path / "one.txt", tmp_path)
    with pytest.raises(DataError, match="only MSR-VTT JSON has splits"):
        read_video_captions(tmp_path / "one.txt", tmp_path, split=("train",))
