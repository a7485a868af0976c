"""mmdesc train RECIPE [KEY=VALUE ...]"""
from __future__ import annotations

import click


@click.command("train", context_settings={"ignore_unknown_options": False})
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--fresh", is_flag=True, help="Start over even if the run folder has checkpoints.")
@click.option("--skip-bad", is_flag=True, help="Train on the readable inputs when some cannot be read "
              "(same as train.skip_bad=true); otherwise training does not start.")
def command(recipe: str, overrides: tuple[str, ...], fresh: bool, skip_bad: bool) -> None:
    """Train the model a RECIPE describes.

    \b
    OVERRIDES change any recipe value with a dotted path, e.g.
      mmdesc train recipes/image.yaml train.max_steps=2000 decoder.hidden=512 out=runs/big
    Every unknown key or wrong type is reported at once, before anything heavy starts.

    The synthetic corpus is generated on first use when the recipe asks for it. If the
    run folder (recipe key `out`) holds checkpoints, training resumes from the last one
    exactly where it stopped (train.lr, train.max_steps and train.max_minutes may change;
    the model may not); a finished run is left as it is; --fresh starts over. Ctrl-C or
    SIGTERM writes a checkpoint and exits. One training at a time per run folder: a second
    one exits at once with code 75, naming the first one's PID.
    """
    from mmdesc.config import load_recipe

    r = load_recipe(recipe, overrides + (("train.skip_bad=true",) if skip_bad else ()), training=True)
    from mmdesc.runfolder import RunFolder  # torch: only once the recipe is known to be good
    from mmdesc.train import Trainer

    say = lambda m: click.echo(m, err=True)  # noqa: E731
    with RunFolder(r.out, say=say) as folder:  # one trainer per run folder, from here to the end
        if fresh:
            folder.clear()
        result = Trainer(r, say=say, resume=not fresh).run()
    click.echo(f"best {r.train.metric}: {result['best']:.2f} (step {result['best_step']}); model in {r.out}")
