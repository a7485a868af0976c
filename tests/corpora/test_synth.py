"""Properties of the synthetic corpus: determinism, grammar coverage, ground truth."""
from __future__ import annotations

import colorsys
import dataclasses
import itertools
import json
import random

import numpy as np
import pytest

from conftest import RECIPES, mmdesc
from mmdesc.corpora import synth
from mmdesc.corpora.coco import read_coco
from mmdesc.corpora.parallel import read_parallel
from mmdesc.modalities.image import synthesize as write_image_corpus
from mmdesc.modalities.text import synthesize as write_text_corpus


def scenes(n: int, seed: int = 5, size: int | tuple[int, int] = 64) -> list[synth.Scene]:
    rng = random.Random(seed)
    return [synth.sample_scene(rng, size) for _ in range(n)]


def test_same_seed_same_scenes_and_captions():
    a, b = scenes(40), scenes(40)
    assert a == b
    assert [synth.captions(s) for s in a] == [synth.captions(s) for s in b]
    assert scenes(40, seed=6) != a


def test_scene_objects_lie_inside_the_canvas_and_apart():
    for size in (64, 47, (96, 40)):
        for s in scenes(150, size=size):
            assert 1 <= len(s.objects) <= 3
            assert len({(o.shape, o.colour) for o in s.objects}) == len(s.objects)
            for o in s.objects:
                x0, y0, x1, y1 = o.box
                assert 0 <= x0 < x1 <= s.width and 0 <= y0 < y1 <= s.height
            for i, a in enumerate(s.objects):
                for b in s.objects[i + 1:]:
                    x_overlap = a.box[0] < b.box[2] and b.box[0] < a.box[2]
                    assert not (x_overlap and a.box[1] < b.box[3] and b.box[1] < a.box[3])


def test_object_sizes_scale_with_the_canvas():
    for size, scale in ((64, 1.0), (128, 2.0)):
        for s in scenes(60, size=size):
            for o in s.objects:
                lo, hi = synth.ACROSS[o.size]
                assert lo * scale <= o.across <= hi * scale


def test_captions_are_plain_and_the_first_follows_the_scene():
    for s in scenes(200):
        caps = synth.captions(s)
        assert 3 <= len(caps) <= 5 and len(set(caps)) == len(caps)
        for c in caps:
            assert c == c.lower() and c == " ".join(c.split()) and c.replace(" ", "").isalpha()
        objs, first = s.objects, caps[0]
        assert first.startswith(objs[0].phrase())
        centres = [synth.centre(o.box) for o in objs]
        if len(objs) == 2:
            (ax, ay), (bx, by) = centres
            a, b = objs
            if abs(ax - bx) >= abs(ay - by):
                assert ax < bx and first == f"{a.phrase()} to the left of {b.phrase()}"
            else:
                assert ay < by and first == f"{a.phrase()} above {b.phrase()}"
        if len(objs) == 3:
            assert [x for x, _ in centres] == sorted(x for x, _ in centres)
            assert first == f"{objs[0].phrase()} to the left of {objs[1].phrase()} and {objs[2].phrase()}"


def test_every_caption_translates_with_a_consistent_alignment():
    for s in scenes(250, seed=11):
        for c in synth.captions(s):
            fr, al = synth.translate_fr(c)
            n_en, n_fr = len(c.split()), len(fr.split())
            sure, possible = {tuple(p) for p in al["sure"]}, {tuple(p) for p in al["possible"]}
            assert sure <= possible
            assert all(0 <= i < n_en and 0 <= j < n_fr for i, j in possible)
            assert {j for _, j in possible} == set(range(n_fr))
            assert {i for i, _ in possible} == set(range(n_en))
            unsure_en = {w for k, w in enumerate(c.split()) if k not in {i for i, _ in sure}}
            unsure_fr = {w for k, w in enumerate(fr.split()) if k not in {j for _, j in sure}}
            assert unsure_en <= {"the"} and unsure_fr <= {"il"}


def _article_is_right(words: list[str]) -> bool:
    return all(w == ("an" if nxt[0] in "aeiou" else "a") for w, nxt in zip(words, words[1:]) if w in ("a", "an"))


def test_every_noun_phrase_has_the_right_article():
    for shape, colour, size in itertools.product(synth.SHAPES, synth.COLOURS, synth.SIZES):
        o = synth.SceneObject(shape, colour, size, 5.0, 5.0, 4.0, 0.0, (3, 3, 7, 7))
        for phrase in (o.phrase(), o.phrase(with_size=False)):
            assert _article_is_right(phrase.split()), phrase
    assert synth.SceneObject("circle", "orange", "small", 5, 5, 4, 0, (3, 3, 7, 7)).phrase(False) == "an orange circle"


def test_captions_use_the_right_article_and_verb():
    """Sampled captions of both styles: "a"/"an" fit the next word, and "there is"/"there are"
    agree with what follows (two or more things joined by "and" with no relation before it)."""
    seen = set()
    for s in scenes(1500, seed=12) + synth.split_scenes(12, synth.SHIFT_SPLIT, 300):
        for c in synth.captions(s):
            words = c.split()
            assert _article_is_right(words), c
            seen.update(w for w in words if w in ("a", "an", "is", "are"))
            if words[0] == "there":
                rest = " ".join(words[2:])
                joined = " and " in rest
                related = any(r in rest.split(" and ")[0] for r in synth.RELATIONS)
                assert words[1] == ("are" if joined and not related else "is"), c
    assert seen == {"a", "an", "is", "are"}


@pytest.mark.parametrize("en, fr", [
    ("a small red circle to the left of a large blue square",
     "un petit cercle rouge à gauche d'un grand carré bleu"),
    ("a small green star", "une petite étoile verte"),
    ("a large purple cross above a small blue circle",
     "une grande croix violette au-dessus d'un petit cercle bleu"),
    ("a small blue square to the right of a large yellow star",
     "un petit carré bleu à droite d'une grande étoile jaune"),
    ("a large orange triangle below a small purple cross",
     "un grand triangle orange en dessous d'une petite croix violette"),
    ("there are a blue star and a green cross", "il y a une étoile bleue et une croix verte"),
    ("an orange circle above a small orange star", "un cercle orange au-dessus d'une petite étoile orange"),
    ("a red star to the left of a purple square and a large green circle",
     "une étoile rouge à gauche d'un carré violet et un grand cercle vert"),
])
def test_french_reorders_and_agrees(en, fr):
    assert synth.translate_fr(en)[0] == fr


def test_relation_alignment():
    en = "a small red circle to the left of a large blue square".split()
    fr_text, al = synth.translate_fr(" ".join(en))
    fr = fr_text.split()
    sure = {(en[i], fr[j]) for i, j in al["sure"]}
    possible = {(en[i], fr[j]) for i, j in al["possible"]}
    assert {("to", "à"), ("left", "gauche"), ("of", "d'un"), ("a", "d'un"), ("red", "rouge")} <= sure
    assert ("the", "à") in possible - sure


@pytest.mark.parametrize("bad", ["", "a big red circle", "the red circle", "a red circle to the left",
                                 "there is", "a red circle and", "a red red circle", "a red circle a blue star",
                                 "a orange circle", "an red circle", "a small red star above a orange cross",
                                 "there is a red star and a blue circle", "there are a red star",
                                 "there are a red star to the left of a blue circle"])
def test_translate_rejects_what_it_cannot_parse(bad):
    with pytest.raises(ValueError):
        synth.translate_fr(bad)


def test_pharaoh_marks_possible_only_links():
    assert synth.pharaoh({"sure": [[1, 0]], "possible": [[0, 0], [1, 0]]}) == "0?0 1-0"


def _hue(rgb) -> float:
    return colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]


def _named(rgb) -> str:
    """The colour word whose hue lies nearest."""
    def dist(name):
        d = abs(_hue(rgb) - _hue(synth.COLOUR_RGB[name]))
        return min(d, 1 - d)
    return min(synth.COLOUR_RGB, key=dist)


def test_render_size_and_colour_at_the_centre():
    solid = dataclasses.replace(synth.RenderStyle.train(), fills=(("solid", 1.0),), shadow=0.0)
    rng = random.Random(2)
    for s in scenes(60, size=(72, 56)):
        img = synth.render(s, rng, solid)
        assert img.size == (72, 56) and img.mode == "RGB"
        for o in s.objects:
            if o.shape in ("circle", "square") and o.size == "large":
                px = img.getpixel((int(o.cx), int(o.cy)))
                assert max(abs(a - b) for a, b in zip(px, synth.COLOUR_RGB[o.colour])) < 70


@pytest.mark.parametrize("style", ["train", "shifted"])
@pytest.mark.parametrize("fill", synth.FILLS)
def test_every_fill_keeps_the_colour_name_inside_the_box(style, fill):
    base = getattr(synth.RenderStyle, style)()
    look = dataclasses.replace(base, fills=((fill, 1.0),))
    rng, paint = random.Random(f"{style}{fill}"), random.Random(1)
    for _ in range(25):
        s = synth.sample_scene(rng, 64, base)
        a = np.asarray(synth.render(s, paint, look), np.int32)
        for o in s.objects:
            x0, y0, x1, y1 = o.box
            px = a[y0:y1, x0:x1].reshape(-1, 3)  # (h, w, 3) -> (h*w, 3)
            chroma = px.max(1) - px.min(1)
            assert np.percentile(chroma, 90) >= 30, (o, fill)  # the object stands out in colour
            vivid = px[chroma >= np.percentile(chroma, 80)]
            assert _named(np.median(vivid, 0)) == o.colour, (o, fill, np.median(vivid, 0))


def test_shifted_style_lies_outside_the_training_ranges():
    train, shift = synth.RenderStyle.train(), synth.RenderStyle.shifted()
    assert shift.rotation[0] >= train.rotation[1]
    for size in synth.SIZES:
        (lo, hi), (slo, shi) = dict(train.across)[size], dict(shift.across)[size]
        assert shi <= lo or slo >= hi
    assert not {k for k, _ in shift.backgrounds} <= {k for k, _ in train.backgrounds}
    assert not {k for k, _ in shift.fills} <= {k for k, _ in train.fills}
    assert shift.noise[0] >= train.noise[1] and shift.jpeg_quality[1] <= train.jpeg_quality[0]
    gaps, borders = [], 0
    for s in synth.split_scenes(4, synth.SHIFT_SPLIT, 150):
        boxes = [o.box for o in s.objects]
        borders += any(b[0] <= 2 or b[1] <= 2 or b[2] >= 62 or b[3] >= 62 for b in boxes)
        gaps += [max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3]) for i, a in enumerate(boxes) for b in boxes[i + 1:]]
        for o in s.objects:
            if o.shape != "circle":
                assert 25 <= abs(o.angle) <= 45
    assert sum(g <= 2 for g in gaps) >= len(gaps) // 4 and borders >= 50  # nearly touching, at the border
    with pytest.raises(ValueError, match="fills: plaid"):
        synth.RenderStyle(fills=(("plaid", 1.0),))


def test_shift_split_through_the_cli(tmp_path):
    r = mmdesc("data", "synth", tmp_path, "--train", 3, "--valid", 2, "--test", 2, "--shift", 4,
               "--modalities", "image")
    assert r.code == 0, r.err
    assert "4 shifted test scenes" in r.out
    (ex, *_), n = read_coco(tmp_path / "captions_test_shift.json", tmp_path / "images"), 4
    assert len(list((tmp_path / "images").glob("test_shift_*.png"))) == n
    assert ex.references == synth.captions(synth.split_scenes(1, synth.SHIFT_SPLIT, 1)[0])
    assert ex.meta["objects"] == synth.object_truth(synth.split_scenes(1, synth.SHIFT_SPLIT, 1)[0])
    r = mmdesc("data", "synth", tmp_path / "t", "--train", 2, "--valid", 1, "--test", 1, "--shift", 4,
               "--modalities", "text")
    assert r.code != 0 and "--shift" in r.err and "Traceback" not in r.err


def test_image_corpus_is_deterministic_and_complete(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    seen = []
    write_image_corpus(a, 5, 3, 2, seed=9, size=40, progress=lambda d, t: seen.append((d, t)))
    write_image_corpus(b, 5, 3, 2, seed=9, size=40)
    write_image_corpus(c, 5, 3, 2, seed=10, size=40)
    assert seen[-1] == (10, 10)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 10 + 3 + 3 + 1  # images, captions, scene manifests, marker
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "images/train_000000.png").read_bytes() != (c / "images/train_000000.png").read_bytes()
    doc = json.loads((a / "captions_valid.json").read_text())
    assert [im["file_name"] for im in doc["images"]] == [f"valid_00000{k}.png" for k in range(3)]
    assert synth.is_complete(a, "image") and not synth.is_complete(a, "text")


def test_interrupted_generation_is_not_complete(tmp_path):
    write_image_corpus(tmp_path, 2, 1, 1, seed=1)

    def stop(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_image_corpus(tmp_path, 4, 1, 1, seed=1, progress=stop)
    assert not synth.is_complete(tmp_path, "image")
    with pytest.raises(ValueError, match="letters, digits"):
        synth.is_complete(tmp_path, "../x")


def test_a_part_written_with_other_counts_is_written_again(tmp_path):
    """A recipe never trains on a corpus part of another size: ensure_data rewrites a part whose
    marker names other counts or another seed, and leaves a matching one alone."""
    from mmdesc import build
    from mmdesc.config import load_recipe

    root, said = tmp_path / "d", []

    def recipe(train: int, seed: int = 3):
        return load_recipe(RECIPES / "tiny" / "image.yaml", [f"data.root={root}", f"data.synth.train={train}",
                                                             f"data.synth.seed={seed}", "data.synth.shift=2"])

    def train_files() -> int:
        return len(json.loads((root / "captions_train.json").read_text())["images"])

    build.ensure_data(recipe(4), said.append)
    assert train_files() == 4 and len(said) == 1
    marker = root / ".complete-image"
    stamp = marker.stat().st_mtime_ns
    build.ensure_data(recipe(4), said.append)
    assert marker.stat().st_mtime_ns == stamp and len(said) == 1  # the same counts: nothing written
    build.ensure_data(recipe(6), said.append)
    assert train_files() == 6
    assert ("its image part was written with 4/6/6 scenes + 2 shifted (seed 3), "
            "the recipe asks 6/6/6 scenes + 2 shifted (seed 3): writing it again") in said[1]
    build.ensure_data(recipe(6, seed=4), said.append)
    assert "(seed 3), the recipe asks 6/6/6 scenes + 2 shifted (seed 4)" in said[3]
    assert synth.written_with(root, "image")["seed"] == 4


def test_training_over_a_smaller_part_writes_it_again_through_the_cli(tmp_path):
    root = tmp_path / "d"
    assert mmdesc("data", "synth", str(root), "--train", "10", "--valid", "6", "--test", "6", "--seed", "3",
                  "--modalities", "image").code == 0
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={root}", f"out={tmp_path / 'run'}",
               "train.max_steps=1", "train.valid_every=1", "train.valid_size=2")
    assert r.code == 0, r.err
    assert (f"{root}: its image part was written with 10/6/6 scenes (seed 3), the recipe asks "
            f"48/6/6 scenes (seed 3): writing it again") in r.err
    assert len(json.loads((root / "captions_train.json").read_text())["images"]) == 48
    (root / ".complete-image").write_text("not json")  # an unreadable marker: an incomplete part
    assert not synth.is_complete(root, "image")


def test_text_corpus_lines_and_scenes(tmp_path):
    write_text_corpus(tmp_path / "t", 6, 4, 3, seed=4, size=32)
    write_image_corpus(tmp_path / "i", 6, 4, 3, seed=4, size=32)
    assert synth.is_complete(tmp_path / "t", "text")
    train = read_parallel(tmp_path / "t/train.en", tmp_path / "t/train.fr", align=tmp_path / "t/train.align")
    train_scenes = [synth.sample_scene(r, 32) for r in [random.Random("4:train")] for _ in range(6)]
    assert [e.source for e in train] == [c for s in train_scenes for c in synth.captions(s)]
    assert all(synth.translate_fr(e.source)[0] == e.references[0] for e in train)
    assert all(e.meta["alignment"] == synth.translate_fr(e.source)[1] for e in train)
    test = read_parallel(tmp_path / "t/test.en", tmp_path / "t/test.fr")
    doc = json.loads((tmp_path / "i/captions_test.json").read_text())
    firsts = {}
    for ann in doc["annotations"]:
        firsts.setdefault(ann["image_id"], ann["caption"])
    assert [e.source for e in test] == [firsts[k] for k in range(3)]  # same seed, same scenes


def test_scene_manifest_joins_the_parts(tmp_path):
    write_image_corpus(tmp_path, 3, 2, 2, seed=4, size=32)
    write_text_corpus(tmp_path, 3, 2, 2, seed=4, size=32)
    rows = synth.read_manifest(tmp_path, "test")
    scenes = synth.split_scenes(4, "test", 2, 32)
    assert [r["id"] for r in rows] == ["test_000000", "test_000001"]
    for row, scene in zip(rows, scenes):
        assert row["caption"] == synth.captions(scene)[0]
        assert [o["shape"] for o in row["objects"]] == [o.shape for o in scene.objects]
        assert set(row["forms"]) == {"image", "text"}
        assert (tmp_path / row["forms"]["image"]["file"]).is_file()
        assert row["forms"]["image"]["boxes"] == [list(o.box) for o in scene.objects]
        assert row["forms"]["text"]["source"] == row["caption"]
        assert row["forms"]["text"]["caption"] == synth.translate_fr(row["caption"])[0]
    lines = (tmp_path / "test.en").read_text().splitlines()
    assert [lines[r["forms"]["text"]["line"]] for r in rows] == [r["caption"] for r in rows]


def test_a_malformed_manifest_line_is_one_clear_error(tmp_path):
    from mmdesc.errors import DataError

    (tmp_path / "scenes_test.jsonl").write_text('{"id": "test_000000", "forms": {}}\n{not json\n')
    with pytest.raises(DataError, match=r"scenes_test.jsonl: line 2 is not JSON"):
        synth.read_manifest(tmp_path, "test")
