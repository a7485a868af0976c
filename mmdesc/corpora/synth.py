"""The synthetic multimodal corpus: scenes of coloured shapes, their captions, and more.

A scene holds 1-3 non-overlapping objects (shape, colour, size, position). From it come
English captions (a small grammar, 3-5 references, the first one canonical), an image
rendered with Pillow (ground truth: each object's pixel box), and French translations
by a grammar with reordering and agreement (ground truth: word alignment).

A :class:`RenderStyle` gives the ranges of the geometry and the looks (rotations, fills,
shading and shadows, colour shades, backgrounds, blur, noise, JPEG, placement, sizes):
``RenderStyle.train()`` for the corpus itself, ``RenderStyle.shifted()`` for a test split
drawn outside every training range (split SHIFT_SPLIT, see ``split_style``), still
described in the same words. ``VOCABULARY`` tells ``metrics.object_scores`` the grammar's
words and relations.

Scenes are drawn from ``random.Random(f"{seed}:{split}")`` by both writers, so with the
same seed ``images/test_000004.png`` and line 5 of ``test.en`` show the same scene.
"""
from __future__ import annotations

import functools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from mmdesc.files import write_text_atomic
from mmdesc.metrics import ObjectVocabulary

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
SPLITS = ("train", "valid", "test")

# Far apart in hue and brightness, so a small CNN separates them through noise.
COLOUR_RGB = {
    "red": (215, 30, 35), "green": (35, 165, 50), "blue": (35, 70, 225),
    "yellow": (240, 220, 35), "purple": (135, 40, 175), "orange": (250, 135, 20),
}
ACROSS = {"small": (8.5, 12.5), "large": (19.0, 26.5)}  # pixels across on a 64 px canvas, training range
SUPERSAMPLE = 4
FILLS = ("solid", "outlined", "shaded", "hollow", "hatched")
THIN_FILLS_FROM = 12.0  # objects narrower than this (64 px canvas) are never hollow or hatched
BACKGROUNDS = ("gradient", "stripes", "texture", "checks")


@dataclass(frozen=True)
class RenderStyle:
    """The ranges a picture of a scene is drawn from: its geometry (``sample_scene``) and
    its looks (``render``).

    Lengths are pixels on a 64 px canvas and scale with the canvas; choices are
    ``((name, weight), ...)``; ``(lo, hi)`` pairs are uniform ranges. Every setting keeps
    what a person would say about the picture: a rotated or hollow square is still a
    square, a darker red still red, a small object still clearly smaller than a large one.
    ``train()`` gives the training ranges, ``shifted()`` settings outside all of them.
    """

    # geometry
    across: tuple[tuple[str, tuple[float, float]], ...] = tuple(ACROSS.items())  # per size word
    rotation: tuple[float, float] = (0.0, 25.0)  # |angle| in degrees; circles never turn
    margin: float = 1.0  # least distance of a box from the border
    gap: float = 2.0  # least distance between two boxes
    touch: float = 0.0  # chance an object goes right beside one already placed (boxes ~gap apart)
    border: float = 0.1  # chance an object is pushed up to the border
    # objects
    fills: tuple[tuple[str, float], ...] = (("solid", 0.55), ("outlined", 0.2), ("shaded", 0.15), ("hollow", 0.1))
    stroke: tuple[float, float] = (2.5, 3.5)  # width of a hollow object's rim
    shading: tuple[float, float] = (0.15, 0.35)  # shaded: brightness change from one side to the other
    shadow: float = 0.2  # chance an object casts a soft shadow
    shadow_offset: tuple[float, float] = (1.0, 2.0)
    hue: float = 0.012  # largest hue shift, as a fraction of the colour circle (0.012 = 4 degrees)
    saturation: tuple[float, float] = (0.85, 1.05)  # factors on the colour's saturation and value
    value: tuple[float, float] = (0.85, 1.08)
    # background
    backgrounds: tuple[tuple[str, float], ...] = (("gradient", 0.6), ("stripes", 0.25), ("texture", 0.15))
    tint: float = 18.0  # largest offset of a background channel from grey
    contrast: tuple[float, float] = (4.0, 12.0)  # amplitude of stripes, checks and texture
    # camera
    blur: float = 0.25  # chance of a Gaussian blur
    blur_radius: tuple[float, float] = (0.3, 0.7)
    noise: tuple[float, float] = (1.5, 6.0)  # sigma of the pixel noise
    jpeg: float = 0.25  # chance of JPEG compression
    jpeg_quality: tuple[int, int] = (45, 90)
    jpeg_subsampling: int = 2  # Pillow's: 2 = 4:2:0 (colour at half resolution), 0 = 4:4:4

    def __post_init__(self) -> None:
        for field, names in (("fills", FILLS), ("backgrounds", BACKGROUNDS), ("across", SIZES)):
            bad = [k for k, _ in getattr(self, field) if k not in names]
            if bad:
                raise ValueError(f"{field}: {', '.join(bad)} not among {{{', '.join(names)}}}")
        if {k for k, _ in self.across} != set(SIZES):
            raise ValueError(f"across: needs a range for each of {{{', '.join(SIZES)}}}")

    @classmethod
    def train(cls) -> RenderStyle:
        return cls()

    @classmethod
    def shifted(cls) -> RenderStyle:
        """Outside the training ranges throughout: smaller small and larger large objects,
        wider rotations, nearly touching objects and objects at the border, thin hollow and
        hatched shapes, strong shading and shadows, other shades, checked and high-contrast
        striped backgrounds, stronger blur, noise and JPEG compression."""
        return cls(across=(("small", (7.0, 8.5)), ("large", (26.5, 28.0))), rotation=(25.0, 45.0),
                   margin=0.0, gap=0.5, touch=0.6, border=0.4,
                   fills=(("hollow", 0.35), ("hatched", 0.3), ("shaded", 0.35)), stroke=(1.4, 2.0),
                   shading=(0.45, 0.6), shadow=0.7, shadow_offset=(2.0, 3.5),
                   hue=0.022, saturation=(0.8, 0.92), value=(0.75, 0.85),
                   backgrounds=(("checks", 0.5), ("stripes", 0.5)), tint=20.0, contrast=(10.0, 16.0),
                   blur=0.5, blur_radius=(0.6, 0.9), noise=(6.0, 9.0), jpeg=0.7, jpeg_quality=(25, 40),
                   jpeg_subsampling=0)  # at 4:2:0 these qualities leave small objects grey


TRAIN_STYLE = RenderStyle.train()


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
        words = f"{self.size} {self.colour} {self.shape}" if with_size else f"{self.colour} {self.shape}"
        return f"{article(words)} {words}"


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


def centre(box: Sequence[float]) -> tuple[float, float]:
    """The centre of a box ``[x0, y0, x1, y1]``: where the grammar takes an object to be."""
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _offset(a: SceneObject, b: SceneObject) -> tuple[float, float]:
    (ax, ay), (bx, by) = centre(a.box), centre(b.box)
    return bx - ax, by - ay


def _clear_layout(objs: list[SceneObject], scale: float) -> bool:
    """Relations must be unambiguous: a clearly dominant axis for pairs, distinct x for triples."""
    if len(objs) == 2:
        dx, dy = (abs(d) for d in _offset(*objs))
        return max(dx, dy) >= 1.3 * min(dx, dy)
    if len(objs) == 3:
        xs = sorted(centre(o.box)[0] for o in objs)
        return xs[1] - xs[0] >= 3 * scale and xs[2] - xs[1] >= 3 * scale
    return True


def _canonical_order(objs: list[SceneObject]) -> tuple[SceneObject, ...]:
    if len(objs) == 2:
        dx, dy = _offset(*objs)
        if abs(dx) < abs(dy):
            return tuple(sorted(objs, key=lambda o: centre(o.box)[1]))
    return tuple(sorted(objs, key=lambda o: centre(o.box)[0]))


def sample_scene(rng: random.Random, size: int | tuple[int, int] = 64, style: RenderStyle | None = None) -> Scene:
    """A random scene on a ``size`` (square, or ``(width, height)``) canvas.

    ``style`` gives the ranges of object sizes, rotations and placement (the training
    ranges, ``RenderStyle.train()``, when None)."""
    style = style or TRAIN_STYLE
    w, h = (size, size) if isinstance(size, int) else size
    scale = min(w, h) / 64
    for _ in range(20):  # some draws cannot fit (three large crosses turned 45 degrees): draw again
        n = rng.randint(1, 3)
        kinds = rng.sample([(s, c) for s in SHAPES for c in COLOURS], n)  # no two alike
        sizes = [rng.choice(SIZES) for _ in range(n)]
        for _ in range(250):
            objs: list[SceneObject] = []
            for (shape, colour), sz in zip(kinds, sizes):
                obj = _place(rng, shape, colour, sz, w, h, scale, objs, style)
                if obj is None:
                    break
                objs.append(obj)
            if len(objs) == n and _clear_layout(objs, scale):
                return Scene(w, h, _canonical_order(objs), rng.getrandbits(32))
    raise RuntimeError(f"cannot place {n} objects on a {w}x{h} canvas")


def _place(rng: random.Random, shape: str, colour: str, size: str, w: int, h: int, scale: float,
           others: list[SceneObject], style: RenderStyle, tries: int = 30) -> SceneObject | None:
    """One object inside the canvas and clear of ``others``, or None.

    With chance ``style.touch`` it goes right beside an object already placed (boxes about
    ``style.gap`` apart); with chance ``style.border`` one side of its box is pushed up to the
    border (``style.margin`` plus up to 2 px)."""
    margin, gap = style.margin * scale, style.gap * scale
    for _ in range(tries):
        across = rng.uniform(*dict(style.across)[size]) * scale
        angle = rng.choice((-1, 1)) * rng.uniform(*style.rotation) if shape != "circle" else 0.0
        m = 0.62 * across + margin
        if 2 * m >= min(w, h):
            continue
        cx, cy = rng.uniform(m, w - m), rng.uniform(m, h - m)
        if others and rng.random() < style.touch:
            cx, cy = _beside(rng.choice(others), shape, across, angle, rng.uniform(0, 2 * math.pi), gap + 1)
        box = _box(_outline(shape, cx, cy, across, angle))
        if rng.random() < style.border:
            side, room = rng.randrange(4), margin + rng.uniform(0, 2) * scale
            cx += (room - box[0], 0, w - room - box[2], 0)[side]
            cy += (0, room - box[1], 0, h - room - box[3])[side]
            box = _box(_outline(shape, cx, cy, across, angle))
        inside = box[0] >= margin and box[1] >= margin and box[2] <= w - margin and box[3] <= h - margin
        if inside and all(_apart(box, o.box, gap) for o in others):
            return SceneObject(shape, colour, size, cx, cy, across, angle, box)
    return None


def _beside(anchor: SceneObject, shape: str, across: float, angle: float, direction: float,
            gap: float) -> tuple[float, float]:
    """The centre, along ``direction`` from ``anchor``'s, at which the new box is ``gap`` from its box."""
    x0, y0, x1, y1 = _box(_outline(shape, 0.0, 0.0, across, angle))  # the new box around its centre
    ax0, ay0, ax1, ay1 = anchor.box
    c, s = math.cos(direction), math.sin(direction)
    steps = []
    if abs(c) > 1e-6:
        steps.append(((ax1 + gap - x0 - anchor.cx) if c > 0 else (ax0 - gap - x1 - anchor.cx)) / c)
    if abs(s) > 1e-6:
        steps.append(((ay1 + gap - y0 - anchor.cy) if s > 0 else (ay0 - gap - y1 - anchor.cy)) / s)
    t = min(steps)  # clear on one axis is clear
    return anchor.cx + t * c, anchor.cy + t * s


# ---------------------------------------------------------------- captions

def article(words: str) -> str:
    """The indefinite article before ``words``: "an" before a vowel sound, else "a".

    Every word of the grammar is pronounced as spelt at its start ("an orange", "a large").
    """
    return "an" if words[:1] and words[0] in "aeiou" else "a"


def _relation(a: SceneObject, b: SceneObject) -> tuple[str, str]:
    """(relation of a to b, its reverse) for the canonical pair order."""
    dx, dy = _offset(a, b)
    if abs(dx) >= abs(dy):
        return "to the left of", "to the right of"
    return "above", "below"


RELATIONS = ("to the left of", "to the right of", "above", "below")


def relation_holds(relation: str, a: Sequence[float], b: Sequence[float], boxes: Sequence[Sequence[float]]) -> bool:
    """Whether ``relation`` (one of RELATIONS) is true of the objects in boxes ``a`` and ``b``
    of a scene whose objects have ``boxes``, as the grammar uses it.

    Positions are box centres. "to the left of" / "to the right of" need the horizontal
    offset to be the larger one in a pair (a triple is described left to right, so there
    the order alone counts); "above" / "below" always need the vertical one to be larger.
    """
    (ax, ay), (bx, by) = centre(a), centre(b)
    dx, dy = bx - ax, by - ay
    across = abs(dx) >= abs(dy) or len(boxes) >= 3
    if relation == "to the left of":
        return across and dx > 0
    if relation == "to the right of":
        return across and dx < 0
    if relation == "above":
        return abs(dy) > abs(dx) and dy > 0
    if relation == "below":
        return abs(dy) > abs(dx) and dy < 0
    raise ValueError(f"relation {relation!r} is not one of {{{', '.join(RELATIONS)}}}")


VOCABULARY = ObjectVocabulary(words={"shape": SHAPES, "colour": COLOURS, "size": SIZES}, head="shape",
                              relations={r: functools.partial(relation_holds, r) for r in RELATIONS})


def object_truth(scene: Scene) -> list[dict]:
    """The scene's objects as ground truth for the object scores (``Example.meta["objects"]``)."""
    return [{"shape": o.shape, "colour": o.colour, "size": o.size, "box": list(o.box)} for o in scene.objects]


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
                 f"{sa} {rel} {sb}", f"there are {a} and {b}"]
    else:
        (a, b, c), (sa, sb, sc) = np_, short
        canon = f"{a} to the left of {b} and {c}"
        extra = [f"{c} to the right of {b} and {a}", f"{a} and {b} and {c}",
                 f"there is {a} to the left of {b} and {c}", f"{sa} to the left of {sb} and {sc}",
                 f"there are {a} and {b} and {c}"]
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

    sentence := ["there is" | "there are"] item ("and" item)*;  item := np [relation np];
    np := ("a" | "an") [size] [colour] shape
    The article must suit the next word ("an orange"), and "there are" goes with two or more
    items of which the first relates to nothing ("there are a red star and a blue circle").
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
        verb = self.peek(2)[1] if self.peek(2) in (("there", "is"), ("there", "are")) else ""
        if verb:
            self.fr += ["il", "y", "a"]
            for i in (0, 1):
                for j in (0, 1, 2):
                    self.link(i, j, (i, j) in ((0, 1), (1, 2)))
            self.i = 2
        related = self.item()
        items = 1
        while self.peek() == ("and",):
            self.link(self.i, len(self.fr))
            self.fr.append("et")
            self.i += 1
            self.item()
            items += 1
        if self.i != len(self.words):
            raise self.fail("'and' or a relation")
        if verb:  # "there are" for two or more things, "there is" for one (with what lies beside it)
            plural = items > 1 and not related
            if verb != ("are" if plural else "is"):
                self.i = 1
                raise self.fail(repr("are" if plural else "is"))

    def item(self) -> bool:
        """One noun phrase and, if a relation follows, the noun phrase it relates to; whether it had one."""
        self.noun_phrase()
        for eng, (fr, links) in _RELATION_FR.items():
            if self.peek(len(eng)) == eng:
                i0, j0 = self.i, len(self.fr)
                self.fr += fr
                self.i += len(eng)
                for i, j, sure in links:
                    self.link(i0 + i, j0 + j, sure)
                self.noun_phrase(after_de=True)
                return True
        return False

    def take(self, vocab: dict | set) -> int | None:
        """Index of the current word and advance, if it is in ``vocab``; else None."""
        if self.i < len(self.words) and self.words[self.i] in vocab:
            self.i += 1
            return self.i - 1
        return None

    def noun_phrase(self, after_de: bool = False) -> None:
        if (det_i := self.take({"a", "an"})) is None:
            raise self.fail("'a' or 'an'")
        following = self.words[self.i] if self.i < len(self.words) else ""
        if following and self.words[det_i] != article(following):
            self.i = det_i
            raise self.fail(repr(article(following)))
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


_FUNCTION_WORDS = {"a", "there", "is", "and", "un", "une", "d'un", "d'une", "il", "y", "et"}
_RELATION_WORDS = {"to", "the", "left", "right", "of", "above", "below",
                   "à", "gauche", "droite", "au-dessus", "en", "dessous"}
WORD_CLASSES = ("shape", "colour", "size", "relation", "function", "other")


def word_class(word: str) -> str:
    """The class of a caption word, English or French: shape, colour, size, relation,
    function, or other (a word outside the caption grammar)."""
    w = word.lower()
    if w in SHAPES or any(w == fr for fr, _ in _NOUN_FR.values()):
        return "shape"
    if w in COLOURS or any(w in forms for forms in _COLOUR_FR.values()):
        return "colour"
    if w in SIZES or any(w in forms for forms in _SIZE_FR.values()):
        return "size"
    if w in _RELATION_WORDS:
        return "relation"
    if w in _FUNCTION_WORDS:
        return "function"
    return "other"


def pharaoh(alignment: dict) -> str:
    """Pharaoh line: sure links ``i-j``, possible-only links ``i?j``."""
    sure = {tuple(p) for p in alignment["sure"]}
    links = sorted(sure | {tuple(p) for p in alignment["possible"]})
    return " ".join(f"{i}-{j}" if (i, j) in sure else f"{i}?{j}" for i, j in links)


# ---------------------------------------------------------------- images

def _choose(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([k for k, _ in weighted], weights=[p for _, p in weighted])[0]


def _wave(u: np.ndarray) -> np.ndarray:
    """A square wave of period 1 with soft edges, in [-1, 1]."""
    return np.tanh(3.0 * np.sin(2 * math.pi * u))


def _background(w: int, h: int, rng: random.Random, nrng: np.random.Generator,
                style: RenderStyle = TRAIN_STYLE) -> np.ndarray:
    """Low-saturation gradient, blotchy, with the stripes, checks or fine texture the style
    draws; float (h, w, 3)."""
    scale = min(w, h) / 64
    base = [rng.uniform(70, 185) for _ in range(2)]
    c0 = np.array([base[0] + rng.uniform(-style.tint, style.tint) for _ in range(3)], np.float32)
    c1 = np.array([base[1] + rng.uniform(-style.tint, style.tint) for _ in range(3)], np.float32)
    a = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = ((xx / w - 0.5) * math.cos(a) + (yy / h - 0.5) * math.sin(a) + 0.5).clip(0, 1)[..., None]  # (h, w, 1)
    img = c0 * (1 - t) + c1 * t
    kind = _choose(rng, style.backgrounds)
    fine = kind == "texture"
    cells = rng.randint(12, 20) if fine else rng.randint(3, 8)
    sigma = rng.uniform(*style.contrast) if fine else rng.uniform(4, 14)
    blotch = nrng.normal(0, sigma, (cells, cells)).astype(np.float32)
    img = img + np.asarray(Image.fromarray(blotch, mode="F").resize((w, h), Image.BILINEAR))[..., None]
    if kind in ("stripes", "checks"):
        period, turn, amp = rng.uniform(5, 14) * scale, rng.uniform(0, math.pi), rng.uniform(*style.contrast)
        u = (xx * math.cos(turn) + yy * math.sin(turn)) / period
        pattern = _wave(u)
        if kind == "checks":
            pattern = pattern * _wave((yy * math.cos(turn) - xx * math.sin(turn)) / period)
        img = img + amp * pattern[..., None]  # (h, w) -> (h, w, 1)
    return img


def _shade(colour: str, rng: random.Random, style: RenderStyle) -> np.ndarray:
    """One shade of a named colour: hue, saturation and value moved within the style's ranges."""
    import colorsys

    hue, sat, val = colorsys.rgb_to_hsv(*(c / 255 for c in COLOUR_RGB[colour]))
    hue = (hue + rng.uniform(-style.hue, style.hue)) % 1.0
    sat = min(1.0, sat * rng.uniform(*style.saturation))
    val = min(1.0, val * rng.uniform(*style.value))
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), np.float32) * 255


def _coverage(mask: np.ndarray, ss: int) -> np.ndarray:
    """Supersampled boolean mask (h*ss, w*ss) -> coverage in [0, 1], float (h, w)."""
    hs, ws = mask.shape
    return mask.reshape(hs // ss, ss, ws // ss, ss).mean(axis=(1, 3), dtype=np.float32)  # (h, ss, w, ss) -> (h, w)


def _polygon_mask(pts: list[tuple[float, float]], size: tuple[int, int], rim: float = 0.0) -> np.ndarray:
    """Boolean (H, W) mask of a polygon, or only of its inner rim ``rim`` pixels wide."""
    img = Image.new("L", size)
    ImageDraw.Draw(img).polygon(pts, fill=255)
    inside = np.asarray(img) > 127
    if rim <= 0:
        return inside
    edge = Image.new("L", size)
    ImageDraw.Draw(edge).line(pts + pts[:2], fill=255, width=max(1, round(2 * rim)), joint="curve")
    return inside & (np.asarray(edge) > 127)  # the half of the line inside the polygon


def _draw_object(img: np.ndarray, o: SceneObject, rng: random.Random, style: RenderStyle,
                 scale: float) -> np.ndarray:
    """Paint one object over ``img`` (float (h, w, 3)), in one of the style's fills."""
    h, w, _ = img.shape
    ss = SUPERSAMPLE
    pts = [(x * ss, y * ss) for x, y in _outline(o.shape, o.cx, o.cy, o.across, o.angle)]
    fill = _choose(rng, style.fills)
    if fill in ("hollow", "hatched") and o.across < THIN_FILLS_FROM * scale:
        fill = "shaded"  # a rim or hatching on a tiny object would leave no shape to name
    rgb = _shade(o.colour, rng, style)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    colour = np.broadcast_to(rgb, (h, w, 3))
    if fill == "shaded":  # lit from one side
        a, k = rng.uniform(0, 2 * math.pi), rng.uniform(*style.shading)
        t = (((xx - o.cx) * math.cos(a) + (yy - o.cy) * math.sin(a)) / (o.across / 2)).clip(-1, 1)
        colour = rgb * (1 + k / 2 * t)[..., None]  # (h, w) -> (h, w, 1)
    if fill == "hollow":
        mask = _polygon_mask(pts, (w * ss, h * ss), rng.uniform(*style.stroke) * scale * ss)
    elif fill == "hatched":  # stripes of the colour inside a thin rim
        period, turn = rng.uniform(2.6, 3.6) * scale * ss, rng.uniform(0, math.pi)
        ys, xs = np.mgrid[0:h * ss, 0:w * ss].astype(np.float32)
        stripes = np.sin(2 * math.pi * (xs * math.cos(turn) + ys * math.sin(turn)) / period) > -0.1
        mask = _polygon_mask(pts, (w * ss, h * ss)) & stripes
        mask |= _polygon_mask(pts, (w * ss, h * ss), 0.9 * scale * ss)
    else:
        mask = _polygon_mask(pts, (w * ss, h * ss))
    alpha = _coverage(mask, ss)[..., None]  # (h, w) -> (h, w, 1)
    img = img * (1 - alpha) + colour * alpha
    if fill == "outlined":  # a darker edge, inside the shape
        edge = _coverage(_polygon_mask(pts, (w * ss, h * ss), rng.uniform(0.8, 1.3) * scale * ss), ss)[..., None]
        img = img * (1 - edge) + (rgb * rng.uniform(0.35, 0.6)) * edge
    return img


def _shadow(img: np.ndarray, o: SceneObject, rng: random.Random, style: RenderStyle, scale: float) -> np.ndarray:
    """Darken ``img`` under a soft copy of the object moved down and to one side."""
    from PIL import ImageFilter

    h, w, _ = img.shape
    ss, d = SUPERSAMPLE, rng.uniform(*style.shadow_offset) * scale
    dx, dy = rng.choice((-1, 1)) * d * rng.uniform(0.5, 1.0), d
    pts = [((x + dx) * ss, (y + dy) * ss) for x, y in _outline(o.shape, o.cx, o.cy, o.across, o.angle)]
    cover = Image.fromarray((_coverage(_polygon_mask(pts, (w * ss, h * ss)), ss) * 255).astype(np.uint8), "L")
    soft = np.asarray(cover.filter(ImageFilter.GaussianBlur(0.8 * scale)), np.float32) / 255
    return img * (1 - rng.uniform(0.3, 0.55) * soft)[..., None]  # (h, w) -> (h, w, 1)


def render(scene: Scene, rng: random.Random, style: RenderStyle | None = None) -> Image.Image:
    """The scene as an RGB image: background, shadows, antialiased objects, then the camera's
    blur, pixel noise and JPEG compression, each drawn from ``style`` (the training ranges,
    ``RenderStyle.train()``, when None). Every object lies inside its box."""
    import io

    from PIL import ImageFilter

    style = style or TRAIN_STYLE
    w, h = scene.width, scene.height
    scale = min(w, h) / 64
    nrng = np.random.default_rng(rng.getrandbits(64))
    img = _background(w, h, rng, nrng, style)
    for o in scene.objects:
        if rng.random() < style.shadow:
            img = _shadow(img, o, rng, style, scale)
    for o in scene.objects:
        img = _draw_object(img, o, rng, style, scale)
    out = Image.fromarray(img.round().clip(0, 255).astype(np.uint8), "RGB")
    if rng.random() < style.blur:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(*style.blur_radius) * scale))
        img = np.asarray(out, np.float32)
    img = img + nrng.normal(0, rng.uniform(*style.noise), (h, w, 3))
    out = Image.fromarray(img.round().clip(0, 255).astype(np.uint8), "RGB")
    if rng.random() < style.jpeg:
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=rng.randint(*style.jpeg_quality), subsampling=style.jpeg_subsampling)
        out = Image.open(buf).convert("RGB")
    return out


# ---------------------------------------------------------------- the corpus on disk
#
# Every modality module writes its own part (its ``synthesize``) from the same scenes:
# ``split_scenes(seed, split, n)`` gives scene k of a split the id ``f"{split}_{k:06d}"`` in every
# part, a part marks itself complete (``mark_complete``), and adds one entry per scene to the
# split's scene manifest ``scenes_{split}.jsonl`` (``add_to_manifest``), which joins the forms of
# a scene: each line is ``{"id", "caption", "objects", "forms": {part: {...}}}``.


def scene_id(split: str, k: int) -> str:
    return f"{split}_{k:06d}"


SHIFT_SPLIT = "test_shift"  # a test split drawn outside the training ranges


def split_style(split: str) -> RenderStyle:
    """The ranges a split is drawn from: ``RenderStyle.shifted()`` for SHIFT_SPLIT, else the training ones."""
    return RenderStyle.shifted() if split == SHIFT_SPLIT else TRAIN_STYLE


def split_scenes(seed: int, split: str, n: int, size: int = 64) -> list[Scene]:
    """The scenes of one split: the same for every part written with the same seed and size.

    Their geometry follows ``split_style(split)``; a part draws them with the same style."""
    rng = random.Random(f"{seed}:{split}")
    return [sample_scene(rng, size, split_style(split)) for _ in range(n)]


def _marker(root: Path, name: str) -> Path:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"part name {name!r} must be letters, digits, '_' or '-'")
    return Path(root) / f".complete-{name}"


def is_complete(root: Path, name: str) -> bool:
    """Whether part ``name`` of the corpus finished writing under ``root``."""
    return written_with(root, name) is not None


def written_with(root: Path, name: str) -> dict | None:
    """What part ``name`` under ``root`` was written with (its marker's seed and counts), or
    None when it is not complete or its marker cannot be read."""
    marker = _marker(root, name)  # a bad part name is a ValueError, not an incomplete part
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def start_part(root: Path, name: str) -> None:
    """Forget that part ``name`` was complete (it is being rewritten)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    _marker(root, name).unlink(missing_ok=True)


def mark_complete(root: Path, name: str, info: dict) -> None:
    """Record that part ``name`` is written (``info``: its seed and counts, JSON-able)."""
    write_text_atomic(_marker(root, name), json.dumps(info) + "\n")


def scene_record(scene: Scene) -> dict:
    """What every form of a scene shares: its canonical caption and its objects."""
    return {"caption": captions(scene)[0], "objects": object_truth(scene)}


def manifest_path(root: Path, split: str) -> Path:
    return Path(root) / f"scenes_{split}.jsonl"


def read_manifest(root: Path, split: str) -> list[dict]:
    """The scene manifest of ``split`` (empty when no part wrote one), in scene order."""
    path = manifest_path(root, split)
    if not path.exists():
        return []
    from mmdesc.errors import DataError

    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n} is not JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise DataError(f"{path}: line {n} is not a scene (an object with an 'id')")
            rows.append(row)
    return rows


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
