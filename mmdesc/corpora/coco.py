"""Image-caption corpora: COCO captions JSON, Karpathy split JSON, Flickr token files.

Readers give one :class:`Example` per image and never check that image files exist.
Malformed files raise :class:`DataError` naming the file and the problem.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmdesc.corpora import Example, json_key as _field, load_json as _load_json
from mmdesc.corpora.parallel import read_lines
from mmdesc.errors import DataError


def write_coco(path: Path, images: list[dict], annotations: list[dict], objects: list[dict]) -> None:
    """Write COCO captions JSON, plus a non-standard top-level ``objects`` list.

    images: ``{"id", "file_name", "width", "height"}``; annotations: ``{"id", "image_id",
    "caption"}``; objects: ``{"image_id", "category", "colour", "size", "bbox": [x, y, w, h]}``.
    Written to a temporary name first, so a reader never sees half a file.
    """
    path = Path(path)
    doc = {"info": {"description": "mmdesc synthetic corpus"}, "images": images,
           "annotations": annotations, "objects": objects}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
    os.replace(tmp, path)


def _list(path: Path, doc: Any, key: str) -> list:
    value = _field(path, doc, key, "the top level")
    if not isinstance(value, list):
        raise DataError(f"{path}: {key!r} is not a list")
    return value


def read_coco(captions_json: Path, images_dir: Path) -> list[Example]:
    """One Example per image of a COCO captions file, in the file's image order.

    When the file has the synthetic corpus's ``objects`` list, ``meta["regions"]`` maps each
    object's category word to its boxes ``[x0, y0, x1, y1]`` and ``meta["objects"]`` lists
    the image's objects as ``{"shape": category, "colour", "size", ..., "box": [x0, y0, x1, y1]}``
    (every other field of the object kept); ``meta`` is ``{}`` otherwise.
    """
    path = Path(captions_json)
    doc = _load_json(path)
    images = _list(path, doc, "images")
    caps: dict[Any, list[str]] = {}
    for n, im in enumerate(images):
        caps[_field(path, im, "id", f"images[{n}]")] = []
        _field(path, im, "file_name", f"images[{n}]")
    for n, ann in enumerate(_list(path, doc, "annotations")):
        image_id = _field(path, ann, "image_id", f"annotations[{n}]")
        if image_id not in caps:
            raise DataError(f"{path}: annotations[{n}] refers to unknown image id {image_id!r}")
        caps[image_id].append(str(_field(path, ann, "caption", f"annotations[{n}]")).strip())
    regions: dict[Any, dict[str, list]] = {}
    objects: dict[Any, list[dict]] = {}
    for n, obj in enumerate(doc.get("objects") or []):
        image_id = _field(path, obj, "image_id", f"objects[{n}]")
        bbox = _field(path, obj, "bbox", f"objects[{n}]")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise DataError(f"{path}: objects[{n}].bbox is not [x, y, w, h]: {bbox!r}")
        x, y, w, h = bbox
        word = _field(path, obj, "category", f"objects[{n}]")
        regions.setdefault(image_id, {}).setdefault(word, []).append([x, y, x + w, y + h])
        rest = {k: v for k, v in obj.items() if k not in ("image_id", "category", "bbox")}
        objects.setdefault(image_id, []).append({"shape": word, **rest, "box": [x, y, x + w, y + h]})
    out = []
    for im in images:
        if not caps[im["id"]]:
            raise DataError(f"{path}: image {im['id']!r} ({im['file_name']}) has no captions")
        meta = {}
        if "objects" in doc:
            meta = {"regions": regions.get(im["id"], {}), "objects": objects.get(im["id"], [])}
        out.append(Example(str(im["id"]), str(Path(images_dir) / im["file_name"]), caps[im["id"]], meta))
    return out


def read_karpathy(path: Path, images_dir: Path, split: str) -> list[Example]:
    """One Example per image of ``split`` in a Karpathy split file (``dataset_coco.json`` etc.).

    The source is ``images_dir / filepath / filename`` (``filepath`` when present, as in
    COCO's ``val2014``). ``split="train"`` includes Karpathy's ``restval`` images, as is usual.
    The id is ``cocoid``, else ``imgid``, else the file name.
    """
    path = Path(path)
    doc = _load_json(path)
    wanted = {"train", "restval"} if split == "train" else {split}
    out, seen = [], set()
    for n, im in enumerate(_list(path, doc, "images")):
        name = _field(path, im, "filename", f"images[{n}]")
        seen.add(_field(path, im, "split", f"images[{n}]"))
        if im["split"] not in wanted:
            continue
        refs = [str(_field(path, s, "raw", f"images[{n}].sentences[{k}]")).strip()
                for k, s in enumerate(_field(path, im, "sentences", f"images[{n}]"))]
        if not refs:
            raise DataError(f"{path}: image {name} has no sentences")
        source = Path(images_dir) / im.get("filepath", "") / name
        image_id = im.get("cocoid", im.get("imgid", name))
        out.append(Example(str(image_id), str(source), refs))
    if not out:
        found = ", ".join(sorted(seen)) or "none"
        raise DataError(f"{path}: no images in split {split!r} (splits here: {found})")
    return out


def read_flickr_tokens(path: Path, images_dir: Path, image_list: Path | None = None) -> list[Example]:
    """One Example per image of a Flickr8k/30k token file (``img.jpg#0<TAB>caption``).

    With ``image_list`` (e.g. ``Flickr_8k.trainImages.txt``, one file name a line) only
    those images, in that order; otherwise every image, in order of first appearance.
    """
    path = Path(path)
    caps: dict[str, list[str]] = {}
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        name, hash_, _ = key.strip().rpartition("#")
        if not tab or not hash_ or not name:
            raise DataError(f"{path} line {n}: expected 'image.jpg#k<TAB>caption'")
        caps.setdefault(name, []).append(caption.strip())
    if image_list is None:
        names = list(caps)
    else:
        names = [s.strip() for s in read_lines(Path(image_list)) if s.strip()]
    out = []
    for name in names:
        refs = [c for c in caps.get(name, []) if c]
        if not refs:
            raise DataError(f"{path}: image {name} has no captions")
        out.append(Example(name, str(Path(images_dir) / name), refs))
    return out
