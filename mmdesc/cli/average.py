"""mmdesc average RUN --last N | mmdesc average CKPT CKPT ..."""
from __future__ import annotations

import click


@click.command("average")
@click.argument("sources", nargs=-1, required=True, metavar="RUN | CKPT...")
@click.option("--last", type=click.IntRange(min=2), default=None, metavar="N",
              help="Average the last N checkpoints (ckpt-*) of the run folder RUN.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="The checkpoint folder to write. [RUN/avg-lastN, or avg-N-to-LAST beside the last checkpoint]")
def command(sources, last, out) -> None:
    """Write a checkpoint whose weights are the mean of several checkpoints' weights: the last
    N of a run (``--last N``), or the checkpoint folders given. They must be of one model
    (same tensor shapes) and share the tokenizer; integer buffers come from the last one.

    \b
      mmdesc average runs/image --last 5
      mmdesc evaluate --checkpoint runs/image/avg-last5
    """
    from pathlib import Path

    from mmdesc.average import average, default_out, last_checkpoints

    if last is not None:
        if len(sources) != 1:
            raise click.UsageError("--last N takes one run folder")
        paths = last_checkpoints(sources[0], last)
    elif len(sources) < 2:
        raise click.UsageError("give a run folder with --last N, or two or more checkpoint folders")
    else:
        paths = [Path(s) for s in sources]
    written = average(paths, Path(out) if out else default_out(paths, last), say=lambda m: click.echo(m, err=True))
    click.echo(written)
