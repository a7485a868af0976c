"""mmdesc compare --checkpoint A --checkpoint B ... [--split test] [--out DIR] [--html FILE]"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from mmdesc.cli.common import resolve_search, search_options


@click.command("compare")
@click.option("--checkpoint", "-c", "checkpoints", multiple=True, required=True,
              help="Checkpoint or run folder; repeat it, one per model to compare.")
@click.option("--split", type=click.Choice(["test", "valid", "train"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Score only the first N inputs of the split.")
@click.option("--scenes", type=click.IntRange(min=0), default=12, show_default=True,
              help="Shared scenes (the same scene in every model's modality) to read and show side by side.")
@search_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="compare", show_default=True,
              help="Folder for compare.csv, compare.json and the figures (PNG).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Also write one self-contained HTML page: the tables, the figures, and the shared "
                   "scenes side by side (click a word to see it in every modality).")
def command(checkpoints, split, limit, scenes, search, device, out_dir, html_path) -> None:
    """Compare how models of different modalities attend.

    Each model is scored on SPLIT of its corpus - BLEU-4, chrF, and its attention: entropy
    (0 = one position, 1 = spread evenly), peak mass, coverage (share of the input ever
    attended), the doubly-stochastic gap, over sequences the share of backward steps and the
    mean jump, and against ground truth the grounding (box or time-span hits) or the
    alignment error rate. Then every model reads the same scenes of the synthetic corpus,
    joined through its scene manifest (scenes_SPLIT.jsonl). Prints one row per model and
    writes the rows as CSV and JSON, with figures comparing the distributions.
    """
    from rich.progress import Progress

    from mmdesc import compare as cmp
    from mmdesc.build import load_trained, read_split, use_search

    out = Path(out_dir)
    models = [load_trained(c, device) for c in checkpoints]
    labels = _labels(models)
    settings = []
    for m in models:
        s = resolve_search(m.recipe.search, search)
        settings.append((s, use_search(m, s)))

    readings, splits = [], [read_split(m.recipe, split) for m in models]
    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        for m, label, (s, kwargs), every in zip(models, labels, settings, splits):
            examples = every[:limit]
            task = bar.add_task(f"{label} on {split}", total=len(examples))
            reading, failed = cmp.read(m, examples, kwargs, s.batch_size,
                                       progress=lambda n, t=task: bar.advance(t, n))
            _warn(failed)
            readings.append(reading)

    # the same scenes, every model reading them in its own modality (3-best for the report)
    per_model = [cmp.scene_examples(m, split, every) for m, every in zip(models, splits)]
    ids = cmp.shared_scenes(per_model, scenes)
    if scenes and not ids:
        click.echo(f"warning: no scene of {split} is in every model's scene manifest "
                   f"(scenes_{split}.jsonl); shared scenes skipped", err=True)
    shared = []
    for m, forms, (s, kwargs) in zip(models, per_model, settings) if ids else ():
        n_best = kwargs["n_best"] if search.get("n_best") else min(3, s.beam)
        reading, failed = cmp.read(m, [forms[i][0] for i in ids], {**kwargs, "n_best": n_best}, s.batch_size)
        _warn(failed)
        shared.append(reading)

    tables = [(f"attention on {split}", [{"scope": split, "label": lab, **cmp.row(r)}
                                         for lab, r in zip(labels, readings)])]
    if shared:
        tables.append((f"on {len(ids)} shared scenes", [{"scope": "shared", "label": lab, **cmp.row(r)}
                                                         for lab, r in zip(labels, shared)]))
    figures = cmp.figures(readings, labels, out)
    cmp.write_csv(out / "compare.csv", [r for _, rows in tables for r in rows])
    cmp.write_json(out / "compare.json", {"split": split, "rows": tables[0][1],
                                          "shared": {"scenes": ids, "rows": tables[1][1] if shared else []},
                                          "figures": [p.name for p, _ in figures]})
    _print(tables)
    if html_path:
        _report(html_path, labels, tables, figures, ids, per_model, shared, readings, scenes)
    click.echo(f"wrote {out / 'compare.csv'}, {out / 'compare.json'} and {len(figures)} figures"
               + (f"; the report to {html_path}" if html_path else ""))


def _labels(models) -> list[str]:
    """A row's name: the modality, with the model's name where two models share a modality,
    and a number where even that is the same (figures key their series by it)."""
    def label(m) -> str:
        if sum(x.modality == m.modality for x in models) == 1:
            return m.modality
        return f"{m.modality} ({m.recipe.name or m.path.parent.name})"
    names = [label(m) for m in models]
    return [f"{n} #{names[:k].count(n) + 1}" if names.count(n) > 1 else n for k, n in enumerate(names)]


def _warn(failed) -> None:
    for e in failed:
        click.echo(f"warning: skipped {e}", err=True)


def _cell(v) -> str:
    if v is None:
        return "\u2014"
    return str(v) if isinstance(v, int) else f"{v:.2f}"


def _print(tables) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from mmdesc.compare import COLUMNS

    console = Console(width=None if sys.stdout.isatty() else 200)  # a pipe or a file gets whole rows
    for title, rows in tables:
        table = Table(title=title, box=box.SIMPLE_HEAD)
        table.add_column("modality")
        table.add_column("model")
        for _, label in COLUMNS:
            table.add_column(label, justify="right")
        for r in rows:
            table.add_row(r["label"], r["model"], *[_cell(r.get(k)) for k, _ in COLUMNS])
        console.print(table)


def _report(path, labels, tables, figures, ids, per_model, shared, readings, n) -> None:
    from mmdesc import compare as cmp
    from mmdesc.compare import COLUMNS
    from mmdesc.viz import html

    groups = cmp.scene_groups(ids, per_model, shared) if shared else cmp.input_groups(readings, n)
    head = ["modality", "model"] + [label for _, label in COLUMNS]
    sections = [html.table_html(head, [[r["label"], r["model"]] + [r.get(k) for k, _ in COLUMNS]
                                       for r in rows], caption=title)
                for title, rows in tables]
    sections.append("".join(html.figure_html(p, caption) for p, caption in figures))
    html.write_report(path, f"mmdesc compare: {', '.join(labels)}", groups, sections)
