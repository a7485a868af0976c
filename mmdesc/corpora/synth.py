"""The synthetic multimodal corpus: scenes of coloured shapes, their captions, and more.

A scene holds 1-3 non-overlapping objects (shape, colour, size, position). From it come
English captions (a small grammar, 3-5 references, the first one canonical), an image
rendered with Pillow (ground truth: each object's pixel box), and French translations
by a grammar with reordering and agreement (ground truth: word alignment).

Scenes are drawn from ``random.Random(f"{seed}:{split}")`` by both writers, so with the
same seed ``images/test_000004.png`` and line 5 of ``test.en`` show the same scene.
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
SPLITS = ("train", "valid", "test")

# Far apart in hue and brightness, so a small CNN separates them through noise.
COLOUR_RGB = {
    "red": (215, 30, 35), "green": (35, 165, 50), "blue": (35, 70, 225),
    "yellow": (240, 220, 35), "purple": (135, 40, 175), "orange": (250, 135, 20),
}
ACROSS = {"small": (9.0, 12.0), "large": (20.0, 26.0)}  # pixels across on a 64 px canvas
SUPERSAMPLE = 4


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    cx: float  # centre, pixels
    cy: float
    across: float  # extent before rotation, pixels
    angle: float  # rotation, degrees
    box: tuple[int, int, int, int]  # [x0, y0, x1, y1] pixels, inside the canvas

    def phrase(self, with_size: bool = True) -> str:
        return f"a {self.size} {self.colour} {self.shape}" if with_size else f"a {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Objects in canonical caption order: left to right, or upper first for a vertical pair."""

    width: int
    height: int
    objects: tuple[SceneObject, ...]
    variant: int  # seeds the choice of the non-canonical references


# ---------------------------------------------------------------- scenes

def _ring(n: int, radii: tuple[float, ...], dy: float = 0.0) -> tuple[tuple[float, float], ...]:
    """n points around the origin from the top, cycling through ``radii``."""
    angles = [math.radians(-90 + 360 * k / n) for k in range(n)]
    return tuple((radii[k % len(radii)] * math.cos(a), radii[k % len(radii)] * math.sin(a) + dy)
                 for k, a in enumerate(angles))


_T = 0.3  # half the thickness of a cross's arm
_UNIT_OUTLINE = {  # polygons of "across" 2 (before rotation), centred on the origin
    "circle": _ring(40, (1.0,)),
    "square": ((-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)),
    "triangle": _ring(3, (1.1,), dy=0.15),
    "star": _ring(10, (1.1, 0.45), dy=0.1),
    "cross": ((-_T, -1), (_T, -1), (_T, -_T), (1, -_T), (1, _T), (_T, _T),
              (_T, 1), (-_T, 1), (-_T, _T), (-1, _T), (-1, -_T), (-_T, -_T)),
}


def _outline(shape: str, cx: float, cy: float, across: float, angle: float) -> list[tuple[float, float]]:
    """Polygon of one object in pixel coordinates."""
    if shape not in _UNIT_OUTLINE:
        raise ValueError(f"shape {shape!r} is not one of {{{', '.join(SHAPES)}}}")
    r, c, s = across / 2, math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in _UNIT_OUTLINE[shape]]


def _box(pts: list[tuple[float, float]]) -> tuple[int, int, int, int]:
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return math.floor(min(xs)), math.floor(min(ys)), math.ceil(max(xs)), math.ceil(max(ys))


def _apart(a: tuple, b: tuple, gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _clear_layout(objs: list[SceneObject], scale: float) -> bool:
    """Relations must be unambiguous: a clearly dominant axis for pairs, distinct x for triples."""
    if len(objs) == 2:
        dx, dy = abs(objs[0].cx - objs[1].cx), abs(objs[0].cy - objs[1].cy)
        return max(dx, dy) >= 1.3 * min(dx, dy)
    if len(objs) == 3:
        xs = sorted(o.cx for o in objs)
        return xs[1] - xs[0] >= 3 * scale and xs[2] - xs[1] >= 3 * scale
    return True


def _canonical_order(objs: list[SceneObject]) -> tuple[SceneObject, ...]:
    if len(objs) == 2:
        a, b = objs
        if abs(a.cx - b.cx) >= abs(a.cy - b.cy):
            return tuple(sorted(objs, key=lambda o: o.cx))
        return tuple(sorted(objs, key=lambda o: o.cy))
    return tuple(sorted(objs, key=lambda o: o.cx))


def sample_scene(rng: random.Random, size: int | tuple[int, int] = 64) -> Scene:
    """A random scene on a ``size`` (square, or ``(width, height)``) canvas."""
    w, h = (size, size) if isinstance(size, int) else size
    scale = min(w, h) / 64
    n = rng.randint(1, 3)
    kinds = rng.sample([(s, c) for s in SHAPES for c in COLOURS], n)  # no two alike
    sizes = [rng.choice(SIZES) for _ in range(n)]
    for _ in range(1000):
        objs: list[SceneObject] = []
        for (shape, colour), sz in zip(kinds, sizes):
            obj = _place(rng, shape, colour, sz, w, h, scale, objs)
            if obj is None:
                break
            objs.append(obj)
        if len(objs) == n and _clear_layout(objs, scale):
            return Scene(w, h, _canonical_order(objs), rng.getrandbits(32))
    raise RuntimeError(f"cannot place {n} objects on a {w}x{h} canvas")


def _place(rng: random.Random, shape: str, colour: str, size: str, w: int, h: int, scale: float,
           others: list[SceneObject], tries: int = 30) -> SceneObject | None:
    """One object inside the canvas and clear of ``others``, or None."""
    for _ in range(tries):
        across = rng.uniform(*ACROSS[size]) * scale
        angle = rng.uniform(-12, 12) if shape != "circle" else 0.0
        m = 0.62 * across + 1
        if 2 * m >= min(w, h):
            continue
        cx, cy = rng.uniform(m, w - m), rng.uniform(m, h - m)
        box = _box(_outline(shape, cx, cy, across, angle))
        inside = box[0] >= 1 and box[1] >= 1 and box[2] <= w - 1 and box[3] <= h - 1
        if inside and all(_apart(box, o.box, 2 * scale) for o in others):
            return SceneObject(shape, colour, size, cx, cy, across, angle, box)
    return None


# ---------------------------------------------------------------- captions

def _relation(a: SceneObject, b: SceneObject) -> tuple[str, str]:
    """(relation of a to b, its reverse) for the canonical pair order."""
    if abs(a.cx - b.cx) >= abs(a.cy - b.cy):
        return "to the left of", "to the right of"
    return "above", "below"


def captions(scene: Scene) -> list[str]:
    """3-5 distinct English references; the first is canonical (a function of the scene only)."""
    objs = scene.objects
    np_, short = [o.phrase() for o in objs], [o.phrase(False) for o in objs]
    if len(objs) == 1:
        (a,), (sa,) = np_, short
        canon, extra = a, [f"there is {a}", sa, f"there is {sa}"]
    elif len(objs) == 2:
        (a, b), (sa, sb) = np_, short
        rel, rev = _relation(*objs)
        canon = f"{a} {rel} {b}"
        extra = [f"{b} {rev} {a}", f"{a} and {b}", f"{b} and {a}", f"there is {a} {rel} {b}",
                 f"{sa} {rel} {sb}", f"there is {a} and {b}"]
    else:
        (a, b, c), (sa, sb, sc) = np_, short
        canon = f"{a} to the left of {b} and {c}"
        extra = [f"{c} to the right of {b} and {a}", f"{a} and {b} and {c}",
                 f"there is {a} to the left of {b} and {c}", f"{sa} to the left of {sb} and {sc}",
                 f"there is {a} and {b} and {c}"]
    rng = random.Random(scene.variant)
    k = min(rng.randint(3, 5), 1 + len(extra))
    return [canon] + rng.sample(extra, k - 1)


# ---------------------------------------------------------------- French

_NOUN_FR = {"circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"),
            "star": ("étoile", "f"), "cross": ("croix", "f")}
_COLOUR_FR = {"red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
              "yellow": ("jaune", "jaune"), "purple": ("violet", "violette"), "orange": ("orange", "orange")}
_SIZE_FR = {"small": ("petit", "petite"), "large": ("grand", "grande")}
# English words -> (French words before the merged "de + article", links (i, j, sure));
# j == len(french words) is the merged article ("d'un"/"d'une").
_SIDE_LINKS = ((0, 0, True), (1, 0, False), (2, 1, True), (3, 2, True))  # to-à, the?à, side, of-d'un
_RELATION_FR = {
    ("to", "the", "left", "of"): (("à", "gauche"), _SIDE_LINKS),
    ("to", "the", "right", "of"): (("à", "droite"), _SIDE_LINKS),
    ("above",): (("au-dessus",), ((0, 0, True), (0, 1, False))),
    ("below",): (("en", "dessous"), ((0, 0, True), (0, 1, True), (0, 2, False))),
}


class _Translation:
    """Recursive-descent parser of the caption grammar that emits French as it goes.

    sentence := ["there is"] item ("and" item)*;  item := np [relation np];
    np := "a" [size] [colour] shape
    """

    def __init__(self, english: str):
        self.text, self.words, self.i = english, english.split(), 0
        self.fr: list[str] = []
        self.sure: list[list[int]] = []
        self.possible: list[list[int]] = []

    def fail(self, expected: str) -> ValueError:
        got = repr(self.words[self.i]) if self.i < len(self.words) else "the end"
        return ValueError(f"cannot translate {self.text!r}: expected {expected} at word {self.i}, got {got}")

    def link(self, i: int, j: int, sure: bool = True) -> None:
        (self.sure if sure else self.possible).append([i, j])

    def peek(self, n: int = 1) -> tuple[str, ...]:
        return tuple(self.words[self.i:self.i + n])

    def sentence(self) -> None:
        if self.peek(2) == ("there", "is"):
            self.fr += ["il", "y", "a"]
            for i in (0, 1):
                for j in (0, 1, 2):
                    self.link(i, j, (i, j) in ((0, 1), (1, 2)))
            self.i = 2
        self.item()
        while self.peek() == ("and",):
            self.link(self.i, len(self.fr))
            self.fr.append("et")
            self.i += 1
            self.item()
        if self.i != len(self.words):
            raise self.fail("'and' or a relation")

    def item(self) -> None:
        self.noun_phrase()
        for eng, (fr, links) in _RELATION_FR.items():
            if self.peek(len(eng)) == eng:
                i0, j0 = self.i, len(self.fr)
                self.fr += fr
                self.i += len(eng)
                for i, j, sure in links:
                    self.link(i0 + i, j0 + j, sure)
                self.noun_phrase(after_de=True)
                return

    def take(self, vocab: dict | set) -> int | None:
        """Index of the current word and advance, if it is in ``vocab``; else None."""
        if self.i < len(self.words) and self.words[self.i] in vocab:
            self.i += 1
            return self.i - 1
        return None

    def noun_phrase(self, after_de: bool = False) -> None:
        if (det_i := self.take({"a"})) is None:
            raise self.fail("'a'")
        size, colour = self.take(_SIZE_FR), self.take(_COLOUR_FR)
        if (noun_i := self.take(_NOUN_FR)) is None:
            raise self.fail("a shape")
        noun, gender = _NOUN_FR[self.words[noun_i]]
        fem = gender == "f"
        det = ("d'une" if fem else "d'un") if after_de else ("une" if fem else "un")
        self.link(det_i, len(self.fr))  # after a relation, its "of" points here too
        self.fr.append(det)
        if size is not None:
            self.link(size, len(self.fr))
            self.fr.append(_SIZE_FR[self.words[size]][fem])
        self.link(noun_i, len(self.fr))
        self.fr.append(noun)
        if colour is not None:
            self.link(colour, len(self.fr))
            self.fr.append(_COLOUR_FR[self.words[colour]][fem])


def translate_fr(english: str) -> tuple[str, dict]:
    """French translation of a caption and its word alignment.

    Returns ``(french, {"sure": [[i, j], ...], "possible": [[i, j], ...]})`` between
    whitespace words (i English, j French, 0-based; possible ⊇ sure).
    Raises ValueError on English outside the caption grammar.
    """
    t = _Translation(english)
    t.sentence()
    sure = sorted(t.sure)
    return " ".join(t.fr), {"sure": sure, "possible": sorted(sure + t.possible)}


def pharaoh(alignment: dict) -> str:
    """Pharaoh line: sure links ``i-j``, possible-only links ``i?j``."""
    sure = {tuple(p) for p in alignment["sure"]}
    links = sorted(sure | {tuple(p) for p in alignment["possible"]})
    return " ".join(f"{i}-{j}" if (i, j) in sure else f"{i}?{j}" for i, j in links)


# ---------------------------------------------------------------- images

def _background(w: int, h: int, rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    """Low-saturation gradient with blotchy texture; float (h, w, 3)."""
    base = [rng.uniform(70, 185) for _ in range(2)]
    c0 = np.array([base[0] + rng.uniform(-18, 18) for _ in range(3)], np.float32)
    c1 = np.array([base[1] + rng.uniform(-18, 18) for _ in range(3)], np.float32)
    a = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = ((xx / w - 0.5) * math.cos(a) + (yy / h - 0.5) * math.sin(a) + 0.5).clip(0, 1)[..., None]  # (h, w, 1)
    img = c0 * (1 - t) + c1 * t
    cells = rng.randint(3, 8)
    blotch = nrng.normal(0, rng.uniform(4, 14), (cells, cells)).astype(np.float32)
    blotch = np.asarray(Image.fromarray(blotch, mode="F").resize((w, h), Image.BILINEAR))
    return img + blotch[..., None]


def render(scene: Scene, rng: random.Random) -> Image.Image:
    """The scene as an RGB image: background, antialiased objects, pixel noise."""
    w, h, ss = scene.width, scene.height, SUPERSAMPLE
    nrng = np.random.default_rng(rng.getrandbits(64))
    bg = _background(w, h, rng, nrng)
    layer, mask = Image.new("RGB", (w * ss, h * ss)), Image.new("L", (w * ss, h * ss))
    draw_layer, draw_mask = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    for o in scene.objects:
        gain = rng.uniform(0.85, 1.08)
        rgb = tuple(int(min(255, max(0, v * gain + rng.uniform(-12, 12)))) for v in COLOUR_RGB[o.colour])
        pts = [(x * ss, y * ss) for x, y in _outline(o.shape, o.cx, o.cy, o.across, o.angle)]
        draw_layer.polygon(pts, fill=rgb)
        draw_mask.polygon(pts, fill=255)
    # BOX downsampling over a black layer gives colour premultiplied by coverage.
    fg = np.asarray(layer.resize((w, h), Image.BOX), np.float32)
    alpha = np.asarray(mask.resize((w, h), Image.BOX), np.float32)[..., None] / 255  # (h, w, 1)
    img = bg * (1 - alpha) + fg + nrng.normal(0, rng.uniform(1.5, 4.5), (h, w, 3))
    return Image.fromarray(img.round().clip(0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------- the corpus on disk
#
# Every modality module writes its own part (its ``synthesize``) from the same scenes:
# ``split_scenes(seed, split, n)`` gives scene k of a split the id ``f"{split}_{k:06d}"`` in every
# part, a part marks itself complete (``mark_complete``), and adds one entry per scene to the
# split's scene manifest ``scenes_{split}.jsonl`` (``add_to_manifest``), which joins the forms of
# a scene: each line is ``{"id", "caption", "objects", "forms": {part: {...}}}``.


def scene_id(split: str, k: int) -> str:
    return f"{split}_{k:06d}"


def split_scenes(seed: int, split: str, n: int, size: int = 64) -> list[Scene]:
    """The scenes of one split: the same for every part written with the same seed and size."""
    rng = random.Random(f"{seed}:{split}")
    return [sample_scene(rng, size) for _ in range(n)]


def _marker(root: Path, name: str) -> Path:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"part name {name!r} must be letters, digits, '_' or '-'")
    return Path(root) / f".complete-{name}"


def is_complete(root: Path, name: str) -> bool:
    """Whether part ``name`` of the corpus finished writing under ``root``."""
    return _marker(root, name).exists()


def start_part(root: Path, name: str) -> None:
    """Forget that part ``name`` was complete (it is being rewritten)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    _marker(root, name).unlink(missing_ok=True)


def mark_complete(root: Path, name: str, info: dict) -> None:
    """Record that part ``name`` is written (``info``: its seed and counts, JSON-able)."""
    write_text_atomic(_marker(root, name), json.dumps(info) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def scene_record(scene: Scene) -> dict:
    """What every form of a scene shares: its canonical caption and its objects."""
    return {"caption": captions(scene)[0],
            "objects": [{"shape": o.shape, "colour": o.colour, "size": o.size, "box": list(o.box)}
                        for o in scene.objects]}


def manifest_path(root: Path, split: str) -> Path:
    return Path(root) / f"scenes_{split}.jsonl"


def read_manifest(root: Path, split: str) -> list[dict]:
    """The scene manifest of ``split`` (empty when no part wrote one), in scene order."""
    path = manifest_path(root, split)
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def add_to_manifest(root: Path, split: str, name: str, entries: dict[str, dict],
                    scenes: list[Scene] | None = None) -> None:
    """Set ``forms[name]`` of the scenes in ``entries`` (scene id -> JSON-able entry: the part's
    file or line, its caption, its ground truth); ``scenes`` (the split's, in order) fills in
    the shared caption and objects. Other parts' entries are kept."""
    records = {r["id"]: r for r in read_manifest(root, split)}
    for k, scene in enumerate(scenes or ()):
        records.setdefault(scene_id(split, k), {"id": scene_id(split, k), "forms": {}}).update(scene_record(scene))
    for sid, entry in entries.items():
        records.setdefault(sid, {"id": sid, "forms": {}})["forms"][name] = entry
    lines = (json.dumps(records[sid]) + "\n" for sid in sorted(records))
    write_text_atomic(manifest_path(root, split), "".join(lines))
