"""mmdesc describe FILE... --checkpoint DIR"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mmdesc.cli.common import draw, hypotheses_json, resolve_search, search_options


def expand(paths: tuple[str, ...], suffixes: set[str]) -> tuple[list[Path], list]:
    """Files as given; folders become their files with a known suffix, sorted.
    Returns the files and a MediaError for every folder with none."""
    from mmdesc.errors import MediaError

    out, empty = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                empty.append(MediaError(p, f"a folder with no {'/'.join(sorted(suffixes))} files in it"))
            out += found
        else:
            out.append(p)
    return out, empty


@click.command("describe")
@click.argument("files", nargs=-1, required=True)
@click.option("--checkpoint", "-c", "checkpoints", multiple=True, required=True,
              help="Checkpoint or run folder; repeat it to describe several modalities at once "
                   "(each file goes to the model of its suffix).")
@search_options
@click.option("--attention", "attention_dir", type=click.Path(file_okay=False), default=None,
              help="Write one PNG per input: the input and where the model looked for each word.")
@click.option("--json", "as_json", is_flag=True, help="Print hypotheses, scores and attention as JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Write one self-contained HTML page (no network needed): each input's sentence, where "
                   "the model looked for each word (hover, click, play), the n-best list and statistics.")
def command(files, checkpoints, search, device, attention_dir, as_json, html_path) -> None:
    """Describe FILES (images; folders are searched for them) in natural language.

    Prints one line per file: the file, a tab, the description. A file that cannot be
    read gets one line on stderr naming the problem; the others are still described,
    the failures are listed at the end, and the exit code is 2.
    """
    from rich.progress import Progress

    from mmdesc.build import load_trained, use_search
    from mmdesc.data import read_sources
    from mmdesc.errors import MediaError, MmdescError
    from mmdesc.modalities import MODALITIES
    from mmdesc.predict import describe

    models = [load_trained(c, device) for c in checkpoints]
    by_suffix = {s: m for m in models for s in MODALITIES[m.modality].SUFFIXES}
    paths, failures = expand(files, set(by_suffix))
    n_folders = len(failures)  # empty folders count as inputs that failed
    for e in failures:
        click.echo(f"error: {e}", err=True)
    if not paths and not failures:
        raise MmdescError("no input files found")
    # one model: every file goes to it (a wrong suffix still gets a try); several: by suffix
    route = [models[0] if len(models) == 1 else by_suffix.get(p.suffix.lower()) for p in paths]
    results: dict[int, list] = {}
    for i, p in enumerate(paths):
        if route[i] is None:
            failures.append(MediaError(p, f"no model for '{p.suffix}' files among the checkpoints given"))
            click.echo(f"error: {failures[-1]}", err=True)
    for model in models:
        mine = [i for i, m in enumerate(route) if m is model]
        items, ok = [], []
        for i, item in zip(mine, read_sources(model.reader, [str(paths[i]) for i in mine])):
            if isinstance(item, MediaError):
                failures.append(item)
                click.echo(f"error: {item}", err=True)
            else:
                items.append(item)
                ok.append(i)
        s = resolve_search(model.recipe.search, search)
        kwargs = use_search(model, s)
        with Progress(transient=True, disable=not sys.stderr.isatty() or len(items) < 2 * s.batch_size) as bar:
            task = bar.add_task("describe", total=len(items))
            described = describe(model, items, batch_size=s.batch_size,
                                 progress=lambda n: bar.advance(task, n), **kwargs)
        results.update(zip(ok, described))
    records, groups = [], []
    for i in sorted(results):
        p, d = paths[i], results[i]
        if attention_dir:
            try:
                draw(Path(attention_dir), p.stem, d, str(p), route[i].modality)
            except (OSError, ValueError) as e:
                failures.append(MediaError(p, f"cannot draw attention ({e})"))
        if html_path:
            from mmdesc.viz import html

            try:
                groups.append(html.group(str(i), p.name, [html.model_view(route[i], str(p), d)]))
            except (OSError, ValueError, MediaError) as e:
                failures.append(MediaError(p, f"cannot show attention ({e})"))
        if as_json:
            records.append({"file": str(p), "hypotheses": hypotheses_json(d)})
        else:
            for h in d:
                click.echo(f"{p}\t{h.text}" if len(d) == 1 else f"{p}\t{h.score:.3f}\t{h.text}")
    if as_json:
        click.echo(json.dumps(records, indent=1))
    if html_path:
        from mmdesc.viz.html import write_report

        write_report(html_path, f"mmdesc describe: {len(groups)} inputs", groups)
        click.echo(f"wrote {html_path}", err=True)
    if failures:
        click.echo(f"{len(failures)} of {len(paths) + n_folders} files failed:", err=True)
        for e in failures:
            click.echo(f"  {e}", err=True)
        raise SystemExit(2)
