"""mmdesc translate --checkpoint DIR [TEXT ...]"""
from __future__ import annotations

import json
import select
import sys
import warnings
from pathlib import Path
from typing import Iterator

import click

from mmdesc.cli.common import (draw, ensemble_options, hypotheses_json, join_ensembles, require_task, resolve_search,
                               search_options, writable_dir)


def stdin_batches(stream, size: int) -> Iterator[list[str | bytes]]:
    """Lines of the binary ``stream`` in groups of at most ``size``: a group ends early when
    no more input is waiting, so output follows input line by line in a pipe or a terminal.
    A line that is not UTF-8 stays ``bytes`` (reported, never a crash)."""
    batch: list[str | bytes] = []
    for raw in iter(stream.readline, b""):
        raw = raw.rstrip(b"\r\n")
        try:
            batch.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            batch.append(raw)
        if len(batch) >= size or not _waiting(stream):
            yield batch
            batch = []
    if batch:
        yield batch


def _waiting(stream) -> bool:
    try:
        return bool(select.select([stream], [], [], 0)[0])
    except (ValueError, OSError, TypeError):  # not a real file (tests, Windows): read on
        return True


@click.command("translate")
@click.argument("texts", nargs=-1)
@click.option("--checkpoint", "-c", required=True, help="Checkpoint or run folder of a text model.")
@search_options
@ensemble_options
@click.option("--attention", "attention_dir", type=click.Path(file_okay=False), default=None,
              help="Write one alignment matrix PNG per sentence.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: hypotheses, scores, attention.")
def command(texts, checkpoint, search, device, ensemble, attention_dir, as_json) -> None:
    """Translate TEXTS, or standard input line by line when none are given.

    One output line per input line, in order; an empty line gives an empty line. Input
    is translated in batches as it arrives. Sentences longer than the model's limit are
    truncated with a warning on stderr. A line that cannot be read (not UTF-8, control
    characters) gets an empty output line and one error line on stderr; every other line
    is still translated, and the exit code is 2.
    """
    from mmdesc.build import load_trained, use_search
    from mmdesc.errors import MediaError
    from mmdesc.predict import describe

    writable_dir(attention_dir, "--attention")
    model, = join_ensembles([load_trained(checkpoint, device)], ensemble, device)
    require_task(model, reads_files=False)
    s = resolve_search(model.recipe.search, search)
    kwargs = use_search(model, s)
    batches = [list(texts)] if texts else stdin_batches(sys.stdin.buffer, s.batch_size)
    n, failed = 0, 0
    for batch in batches:
        for i, t in enumerate(batch):
            if isinstance(t, bytes):
                click.echo(f"error: line {n + i + 1}: not valid UTF-8 text", err=True)
                batch[i] = ""
                failed += 1
        live = [i for i, t in enumerate(batch) if t.strip()]
        items = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in list(live):
                try:
                    items.append(model.reader.load(batch[i]))
                except MediaError as e:
                    click.echo(f"error: line {n + i + 1}: {e.reason}", err=True)
                    live.remove(i)
                    failed += 1
        for w in caught:
            click.echo(f"warning: {w.message}", err=True)
        out = dict(zip(live, describe(model, items, batch_size=s.batch_size, **kwargs)))
        for i, line in enumerate(batch):
            d = out.get(i, [])
            if as_json:
                tokens = list(d[0].layout.tokens) if d else []
                click.echo(json.dumps({"source": line, "source_tokens": tokens, "hypotheses": hypotheses_json(d)},
                                      ensure_ascii=False))
            elif s.n_best > 1:
                click.echo("\n".join(f"{n + i + 1}\t{h.score:.3f}\t{h.text}" for h in d) or f"{n + i + 1}\t\t")
            else:
                click.echo(d[0].text if d else "")
            if attention_dir and d:
                draw(Path(attention_dir), f"{n + i + 1:05d}", d, line, model.modality)
        sys.stdout.flush()
        n += len(batch)
    if failed:
        click.echo(f"{failed} of {n} lines failed", err=True)
        raise SystemExit(2)
