"""mmdesc describe FILE... --checkpoint DIR"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path, PurePath

import click

from mmdesc.cli.common import (draw, ensemble_options, hypotheses_json, join_ensembles, require_task, resolve_search,
                               search_options, writable_dir)


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


def picture_names(paths: list[Path]) -> dict[Path, PurePath]:
    """Where each input's picture goes under --attention: its path relative to the deepest
    folder that holds all the inputs, so ``a/x.png`` and ``b/x.png`` get a picture each, and
    ``x.png`` beside ``x.jpg`` keeps its suffix in the name."""
    if not paths:
        return {}
    resolved = [p.resolve() for p in paths]
    base = Path(os.path.commonpath([r.parent for r in resolved]))
    names, taken = {}, set()
    for p, r in zip(paths, resolved):
        rel = PurePath(r.relative_to(base))
        name = rel.with_name(f"{rel.stem}.png")
        if name in taken:
            name = rel.with_name(f"{rel.name}.png")
        taken.add(name)
        names[p] = name
    return names


def router(models: list, modalities) -> "callable":
    """path -> the model that describes it: by suffix, and where several models claim the
    suffix (an .mp4 may hold video or only sound), by asking each modality whether the file's
    streams are its kind (``claims``). One model takes every file (a wrong suffix still gets a try)."""
    by_suffix: dict[str, list] = {}
    for m in models:
        for s in modalities[m.modality].SUFFIXES:
            by_suffix.setdefault(s, []).append(m)

    def route(path: Path):
        if len(models) == 1:
            return models[0]
        claimants = by_suffix.get(path.suffix.lower(), [])
        if len(claimants) <= 1:
            return claimants[0] if claimants else None
        for m in claimants:
            claims = getattr(modalities[m.modality], "claims", None)
            if claims is not None and claims(str(path)):
                return m
        return None

    return route, set(by_suffix)


@click.command("describe")
@click.argument("files", nargs=-1, required=True)
@click.option("--checkpoint", "-c", "checkpoints", multiple=True, required=True,
              help="Checkpoint or run folder; repeat it to describe several modalities at once "
                   "(each file goes to the model of its kind: by suffix, then by its streams).")
@search_options
@ensemble_options
@click.option("--attention", "attention_dir", type=click.Path(file_okay=False), default=None,
              help="Write one PNG per input under this folder, named by the input's path: the input "
                   "and where the model looked for each word.")
@click.option("--json", "as_json", is_flag=True, help="Print hypotheses, scores and attention as JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Write one self-contained HTML page (no network needed): each input's sentence, where "
                   "the model looked for each word (hover, click, play), the n-best list and statistics.")
def command(files, checkpoints, search, device, ensemble, attention_dir, as_json, html_path) -> None:
    """Describe FILES (images, videos, sound...; folders are searched for the kinds the
    checkpoints read) in natural language.

    Prints one line per file: the file, a tab, the description (a file name with a tab,
    a newline or a backslash in it is printed with them escaped as \\t, \\n, \\\\). A
    file that cannot be read gets one line on stderr naming the problem; the others are
    still described, the failures are listed at the end, and the exit code is 2. An
    attention picture never replaces an existing file: NAME-1.png is written instead.
    """
    from rich.progress import Progress

    from mmdesc.build import load_trained, use_search
    from mmdesc.data import stream_sources
    from mmdesc.errors import MediaError, MmdescError
    from mmdesc.modalities import MODALITIES
    from mmdesc.predict import describe

    writable_dir(attention_dir, "--attention")
    models = join_ensembles([load_trained(c, device) for c in checkpoints], ensemble, device)
    for m in models:
        require_task(m, reads_files=True)
    route_one, suffixes = router(models, MODALITIES)
    paths, failures = expand(files, suffixes)
    routes = {}

    def route(p: Path):
        if p not in routes:
            routes[p] = route_one(p)
        return routes[p]

    n_folders = len(failures)  # empty folders count as inputs that failed
    for e in failures:
        click.echo(f"error: {e}", err=True)
    if not paths and not failures:
        raise MmdescError("no input files found")
    settings = {}
    for m in models:
        s = resolve_search(m.recipe.search, search)
        settings[id(m)] = (s, use_search(m, s))
    chunk = max(s.batch_size for s, _ in settings.values())
    records, groups, names = [], [], picture_names(paths)
    with Progress(transient=True, disable=not sys.stderr.isatty() or len(paths) < 2 * chunk) as bar:
        task = bar.add_task("describe", total=len(paths))
        for start in range(0, len(paths), chunk):
            part = paths[start:start + chunk]
            results: dict[int, list] = {}
            for m in models:
                mine = [i for i, p in enumerate(part) if route(p) is m]
                s, kwargs = settings[id(m)]
                for idx, got in stream_sources(m.reader, [str(part[i]) for i in mine], chunk=len(mine) or 1):
                    ok = [(mine[i], g) for i, g in zip(idx, got) if not isinstance(g, MediaError)]
                    for g in got:
                        if isinstance(g, MediaError):
                            failures.append(g)
                            click.echo(f"error: {g}", err=True)
                    described = describe(m, [g for _, g in ok], batch_size=s.batch_size, **kwargs)
                    results.update((i, d) for (i, _), d in zip(ok, described))
            for i, p in enumerate(part):
                if route(p) is None:
                    failures.append(MediaError(p, f"no model for '{p.suffix}' files among the checkpoints given"))
                    click.echo(f"error: {failures[-1]}", err=True)
                elif i in results:
                    picture = attention_dir and Path(attention_dir) / names[p]
                    _emit(p, route(p), i + start, results[i], picture, html_path, groups, as_json, records, failures)
            bar.advance(task, len(part))
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


def _emit(p: Path, model, index: int, d: list, picture: Path | None, html_path, groups: list, as_json: bool,
          records: list, failures: list) -> None:
    """Print (or keep, for --json) one file's descriptions, draw its picture, add its HTML view."""
    from mmdesc.errors import MediaError, one_line

    if picture:
        try:
            draw(picture.parent, picture.stem, d, str(p), model.modality)
        except (OSError, ValueError) as e:
            failures.append(MediaError(p, f"cannot draw attention ({e})"))
    if html_path:
        from mmdesc.viz import html

        try:
            groups.append(html.group(str(index), p.name, [html.model_view(model, str(p), d)]))
        except (OSError, ValueError, MediaError) as e:
            failures.append(MediaError(p, f"cannot show attention ({e})"))
    if as_json:
        records.append({"file": str(p), "hypotheses": hypotheses_json(d)})
    else:
        for h in d:
            click.echo(f"{one_line(p)}\t{h.text}" if len(d) == 1 else f"{one_line(p)}\t{h.score:.3f}\t{h.text}")
    sys.stdout.flush()
