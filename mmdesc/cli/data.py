"""mmdesc data synth OUT; mmdesc data cache RECIPE"""
from __future__ import annotations

from pathlib import Path

import click

from mmdesc.config import MAX_SCENES, MAX_SEED


@click.group("data")
def command() -> None:
    """Corpus tools."""


@command.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--train", type=click.IntRange(1, MAX_SCENES), default=6000, show_default=True, help="Training scenes.")
@click.option("--valid", type=click.IntRange(1, MAX_SCENES), default=300, show_default=True, help="Validation scenes.")
@click.option("--test", type=click.IntRange(0, MAX_SCENES), default=500, show_default=True, help="Test scenes.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=1, show_default=True)
@click.option("--modalities", default="", help="Comma-separated parts to write. [every registered modality]")
@click.option("--shift", default=0, show_default=True, type=click.IntRange(min=0),
              help="Also write a test split (test_shift) of this many scenes drawn outside the training "
                   "ranges (wider rotations, other styles and backgrounds), for the parts that have one.")
def synth(out: str, train: int, valid: int, test: int, seed: int, modalities: str, shift: int) -> None:
    """Write the synthetic multimodal corpus to OUT.

    Scenes of 1-3 coloured shapes with several English captions each, written in the form
    of every modality (each modality's module writes its own part in a standard format,
    with ground truth for its attention), and one scene manifest per split
    (scenes_SPLIT.jsonl) that joins the forms of each scene.
    """
    import inspect

    from mmdesc.errors import ConfigError
    from mmdesc.modalities import MODALITIES

    parts = [m.strip() for m in modalities.split(",") if m.strip()] or list(MODALITIES)
    bad = [m for m in parts if m not in MODALITIES]
    if bad:
        raise ConfigError(f"--modalities: {', '.join(bad)} not among {{{', '.join(MODALITIES)}}}")
    from mmdesc.build import write_part

    shifted = []
    for m in parts:
        click.echo(f"writing the {m} part to {out} ...", err=True)
        if write_part(MODALITIES[m], Path(out), train, valid, test, seed, shift):
            shifted.append(m)
    if shift and not shifted:
        raise ConfigError(f"--shift: none of {', '.join(parts)} writes a shifted test split")
    more = f", {shift} shifted test scenes ({', '.join(shifted)})" if shifted else ""
    click.echo(f"wrote {train}/{valid}/{test} scenes ({', '.join(parts)}){more} to {out}")


@command.command("cache")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "valid", "test"]),
              help="The split whose inputs are encoded.")
def cache(recipe: str, overrides: tuple[str, ...], split: str) -> None:
    """Compute and store the features of a frozen encoder for a whole split.

    \b
    The encoder is the one `mmdesc train RECIPE` starts with (encoder.finetune=none: its
    backbone frozen; no input augmentation). The features go into train.feature_cache
    (default OUT/features), keyed by each input's content and by the encoder's weights and
    settings, so a changed file or encoder never reads a stale entry. A training with
    train.cache_features=true then reads them instead of decoding and encoding the media:
      mmdesc data cache recipes/image-pretrained.yaml
      mmdesc train recipes/image-pretrained.yaml train.cache_features=true
    """
    from mmdesc.config import load_recipe

    r = load_recipe(recipe, overrides)
    from mmdesc.build import cache_split, feature_folder

    done, bad = cache_split(r, split, say=lambda m: click.echo(m, err=True))
    skipped = f" ({bad} unreadable, skipped)" if bad else ""
    click.echo(f"cached the features of {done} {split} inputs in {feature_folder(r)}{skipped}")
