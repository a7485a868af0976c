"""Comparing how models of different modalities attend: one table, figures, shared scenes.

Each trained model is scored on a split of its own corpus (:func:`mmdesc.evaluate.score`:
text scores, ground-truth scores, and the statistics of :mod:`mmdesc.alignment`), and read
word by word for the figures. The synthetic corpus's scene manifest
(``scenes_{split}.jsonl``, :func:`mmdesc.corpora.synth.read_manifest`) joins the forms of one
scene across modalities, so every model can also be run on the *same* scenes: their rows
then compare like for like, and the HTML report shows them side by side.

Nothing here names a modality: a model's form of a scene is ``forms[trained.modality]``.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmdesc import alignment
from mmdesc.corpora import Example
from mmdesc.files import write_text_atomic
from mmdesc.corpora.synth import WORD_CLASSES, read_manifest, word_class

# table columns: (key, label); what a model lacks is left empty
COLUMNS = (("n", "n"), ("bleu4", "BLEU-4"), ("chrf", "chrF"),
           ("entropy", "entropy"), ("peak", "peak"), ("coverage", "coverage"), ("ds_gap", "DS gap"),
           ("backward", "backward %"), ("jump", "jump"), ("grounding", "grounding %"), ("aer", "AER %"))


@dataclass
class Reading:
    """One model on one set of inputs: its scores and, per input, its n-best descriptions."""

    trained: object
    examples: list[Example]
    items: list
    described: list
    scores: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return getattr(self.trained.recipe, "name", "") or Path(self.trained.path).parent.name


def read(trained, examples: Sequence[Example], search: dict, batch_size: int,
         progress: Callable[[int], None] | None = None) -> tuple[Reading, list]:
    """Decode and score ``examples`` with ``trained``; returns the reading and the inputs that
    could not be read (MediaErrors)."""
    from mmdesc.data import load_all
    from mmdesc.evaluate import score
    from mmdesc.predict import describe

    loaded = load_all(trained.reader, list(examples))
    described = describe(trained, loaded.items, batch_size=batch_size, progress=progress, **search)
    best_only = {k: v for k, v in search.items() if k != "n_best"}
    scores, _ = score(trained, loaded, batch_size=batch_size, described=described, **best_only)
    scores["n"] = len(loaded.items)
    return Reading(trained, loaded.examples, loaded.items, described, scores), loaded.failures


# ----------------------------------------------------------------------------- shared scenes


def scene_examples(trained, split: str, examples: Sequence[Example]) -> dict[str, tuple[Example, dict]]:
    """``{scene id: (Example, scene)}`` for the scenes of ``split``'s manifest (under the model's
    data root) that have a form for the model's modality and are among ``examples``.

    A form names its input - a ``file`` relative to the root, or the ``source`` line - and the
    model's own split gives that input with its references and ground truth; the Example
    returned carries the scene's id.
    """
    root = Path(trained.recipe.data.root)
    by_file = {str(Path(ex.source).resolve()): ex for ex in reversed(examples)}
    by_line = {ex.source.strip(): ex for ex in reversed(examples)}
    out = {}
    for scene in read_manifest(root, split):
        form = scene.get("forms", {}).get(trained.modality)
        if not isinstance(form, dict):
            continue
        if isinstance(form.get("file"), str):
            ex = by_file.get(str((root / form["file"]).resolve()))
        else:
            line = next((form[k] for k in ("source", "line") if isinstance(form.get(k), str)), None)
            ex = by_line.get(line.strip()) if line is not None else None
        if ex is not None:
            out[scene["id"]] = (Example(scene["id"], ex.source, ex.references, ex.meta), scene)
    return out


def shared_scenes(per_model: Sequence[dict[str, tuple[Example, dict]]], limit: int) -> list[str]:
    """The first ``limit`` scene ids (in id order) that every model has, with one caption."""
    if not per_model:
        return []
    common = set(per_model[0]).intersection(*per_model[1:])
    same = [sid for sid in sorted(common)
            if len({m[sid][1].get("caption") for m in per_model}) == 1]  # same scene, not just same id
    return same[:limit]


# ----------------------------------------------------------------------------- table


def row(reading: Reading) -> dict:
    """The table row of a reading: modality, model, checkpoint and every column it has."""
    out = {"modality": reading.trained.modality, "model": reading.name,
           "checkpoint": str(reading.trained.path)}
    out.update({k: reading.scores[k] for k, _ in COLUMNS if k in reading.scores})
    return out


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    keys = ["scope", "modality", "model", "checkpoint"] + [k for k, _ in COLUMNS]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    _write(path, buf.getvalue())


def _write(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def write_json(path: Path, doc: dict) -> None:
    _write(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- figures


def word_table(reading: Reading) -> dict[str, np.ndarray]:
    """Every output word of the best hypotheses: ``position`` (0-based), ``entropy``, ``peak``,
    ``cls`` (its word class)."""
    pairs = [(d[0].alpha, d[0].layout) for d in reading.described]
    if not pairs:
        empty = np.zeros(0)
        return {"position": empty.astype(int), "entropy": empty, "peak": empty, "cls": empty.astype(object)}
    batch = alignment.pad(pairs)
    stats = alignment.word_statistics(batch)
    mask = batch.word_mask  # (S, W)
    position = np.broadcast_to(np.arange(mask.shape[1])[None, :], mask.shape)  # (S, W)
    words = [w for d in reading.described for w in d[0].words]  # row-major, as mask selects
    return {"position": position[mask], "entropy": stats["entropy"][mask], "peak": stats["peak"][mask],
            "cls": np.array([word_class(w) for w in words], dtype=object)}


def grounding_by_class(reading: Reading) -> dict[str, float]:
    """Grounding (%) per word class of the grounded words, where the inputs carry ``regions``."""
    items = [(d[0].words, d[0].alpha.numpy(), d[0].layout, ex.meta["regions"])
             for d, ex in zip(reading.described, reading.examples) if "regions" in ex.meta]
    return {c: v["grounding"] for c, v in alignment.grounding_by(items, word_class).items()}


def _mean(values: np.ndarray, where: np.ndarray) -> float | None:
    return float(values[where].mean()) if where.any() else None


def figures(readings: Sequence[Reading], labels: Sequence[str], outdir: Path,
            max_positions: int = 20) -> list[tuple[Path, str]]:
    """Write the comparison figures (PNG) into ``outdir``; returns ``(path, caption)`` of each:
    entropy per output position, the distribution of entropy, peak mass per word class and,
    where inputs carry regions, grounding per word class. One series per reading."""
    from mmdesc.viz.charts import bar_chart, line_chart

    tables = [word_table(r) for r in readings]
    out = []

    longest = max([int(t["position"].max()) + 1 for t in tables if len(t["position"])] + [1])
    ks = range(min(max_positions, longest))
    series = {lab: [_mean(t["entropy"], t["position"] == k) for k in ks] for lab, t in zip(labels, tables)}
    path = line_chart(outdir / "entropy_by_position.png", "Attention entropy per output position", series,
                      [str(k + 1) for k in ks], "output word", "entropy", y_max=1.0)
    out.append((path, "mean attention entropy (0 = one position, 1 = even) of the k-th output word"))

    bins = np.linspace(0.0, 1.0, 11)
    series = {lab: (np.histogram(t["entropy"], bins=bins)[0] / max(len(t["entropy"]), 1)).tolist()
              for lab, t in zip(labels, tables)}
    centres = [f"{b:.2f}" for b in (bins[:-1] + bins[1:]) / 2]
    path = line_chart(outdir / "entropy_distribution.png", "Distribution of attention entropy", series,
                      centres, "entropy", "share of words", y_max=1.0)
    out.append((path, "share of output words per attention entropy bin"))

    classes = [c for c in WORD_CLASSES if any((t["cls"] == c).any() for t in tables)]
    series = {lab: [_mean(t["peak"], t["cls"] == c) for c in classes] for lab, t in zip(labels, tables)}
    path = bar_chart(outdir / "peak_by_word_class.png", "Peak attention per word class", series, classes,
                     "word class", "peak mass", y_max=1.0)
    out.append((path, "mean peak mass (largest attention weight) per class of output word"))

    grounded = [grounding_by_class(r) for r in readings]
    classes = [c for c in WORD_CLASSES if any(c in g for g in grounded)]
    if classes:
        series = {lab: [g.get(c) for c in classes] for lab, g in zip(labels, grounded)}
        path = bar_chart(outdir / "grounding_by_word_class.png", "Grounding per word class", series, classes,
                         "word class", "grounding %", y_max=100.0)
        out.append((path, "share (%) of grounded words whose most attended position lies in their referent"))
    return out


# ----------------------------------------------------------------------------- report


def scene_groups(ids: Sequence[str], per_model: Sequence[dict], shared: Sequence[Reading]) -> list[dict]:
    """The report's groups: one per shared scene, every model's view of it side by side.

    per_model: each model's :func:`scene_examples`; shared: each model's reading of the scenes."""
    from mmdesc.viz import html

    groups = []
    for sid in ids:
        views = []
        for forms, reading in zip(per_model, shared):
            ex, scene = forms[sid]
            at = next((j for j, e in enumerate(reading.examples) if e.id == sid), None)
            if at is None:  # its input could not be read
                continue
            in_file = "file" in scene["forms"][reading.trained.modality]
            views.append(html.model_view(reading.trained, ex.source, reading.described[at],
                                         label=Path(ex.source).name if in_file else "",
                                         reference=ex.references[0] if ex.references else None))
        groups.append(html.group(sid, sid, views, per_model[0][sid][1].get("caption")))
    return groups


def input_groups(readings: Sequence[Reading], n: int) -> list[dict]:
    """Without shared scenes: the first inputs of each model's split, one group each."""
    from mmdesc.viz import html

    groups = []
    for reading in readings:
        for ex, d in list(zip(reading.examples, reading.described))[:n]:
            ref = ex.references[0] if ex.references else None
            groups.append(html.group(f"{reading.trained.modality}-{ex.id}", ex.id,
                                     [html.model_view(reading.trained, ex.source, d, reference=ref)]))
    return groups
