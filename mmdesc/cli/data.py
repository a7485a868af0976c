"""mmdesc data synth OUT"""
from __future__ import annotations

from pathlib import Path

import click


@click.group("data")
def command() -> None:
    """Corpus tools."""


@command.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--train", default=6000, show_default=True, help="Training scenes.")
@click.option("--valid", default=300, show_default=True, help="Validation scenes.")
@click.option("--test", default=500, show_default=True, help="Test scenes.")
@click.option("--seed", default=1, show_default=True)
@click.option("--modalities", default="", help="Comma-separated parts to write. [every registered modality]")
def synth(out: str, train: int, valid: int, test: int, seed: int, modalities: str) -> None:
    """Write the synthetic multimodal corpus to OUT.

    Scenes of 1-3 coloured shapes with several English captions each, written in the form
    of every modality (each modality's module writes its own part in a standard format,
    with ground truth for its attention), and one scene manifest per split
    (scenes_SPLIT.jsonl) that joins the forms of each scene.
    """
    from mmdesc.errors import ConfigError
    from mmdesc.modalities import MODALITIES

    parts = [m.strip() for m in modalities.split(",") if m.strip()] or list(MODALITIES)
    bad = [m for m in parts if m not in MODALITIES]
    if bad:
        raise ConfigError(f"--modalities: {', '.join(bad)} not among {{{', '.join(MODALITIES)}}}")
    for m in parts:
        click.echo(f"writing the {m} part to {out} ...", err=True)
        MODALITIES[m].synthesize(Path(out), train, valid, test, seed)
    click.echo(f"wrote {train}/{valid}/{test} scenes ({', '.join(parts)}) to {out}")
