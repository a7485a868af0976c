"""mmdesc train RECIPE [KEY=VALUE ...]"""
from __future__ import annotations

import click


@click.command("train", context_settings={"ignore_unknown_options": False})
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--fresh", is_flag=True, help="Start over even if the run folder has checkpoints.")
@click.option("--skip-bad", is_flag=True, help="Train on the readable inputs when some cannot be read "
              "(same as train.skip_bad=true); otherwise training does not start.")
@click.option("--nproc", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Processes on this machine, each training on its share of every batch "
                   "(torchrun --standalone --nproc_per_node=N). For several machines, run torchrun yourself.")
def command(recipe: str, overrides: tuple[str, ...], fresh: bool, skip_bad: bool, nproc: int) -> None:
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

    \b
    Several processes (CPU: gloo; CUDA: NCCL, one GPU each), same run folder, same result
    as one process with the same train.batch_size:
      mmdesc train recipes/image.yaml --nproc 2
      torchrun --nproc_per_node=2 -m mmdesc train recipes/image.yaml
    """
    import os

    from mmdesc.config import load_recipe

    r = load_recipe(recipe, overrides + (("train.skip_bad=true",) if skip_bad else ()), training=True)
    say = lambda m: click.echo(m, err=True)  # noqa: E731
    if nproc > 1:
        _launch(r, nproc, ["train", recipe, *overrides, *(["--fresh"] if fresh else []),
                           *(["--skip-bad"] if skip_bad else [])], say)
        return
    if os.environ.get("WORLD_SIZE") and int(os.environ["WORLD_SIZE"]) > 1:
        _train_as_one_of_many(r, fresh, say)
        return
    from mmdesc.runfolder import RunFolder  # torch: only once the recipe is known to be good
    from mmdesc.train import Trainer

    with RunFolder(r.out, say=say) as folder:  # one trainer per run folder, from here to the end
        if fresh:
            folder.clear()
        result = Trainer(r, say=say, resume=not fresh).run()
    click.echo(f"best {r.train.metric}: {result['best']:.2f} (step {result['best_step']}); model in {r.out}")


def _launch(r, nproc: int, argv: list[str], say) -> None:
    """``--nproc N``: N processes of this same command through torchrun's launcher; each prints
    its own errors, so this one only passes on the exit code of the first that failed."""
    import os

    from mmdesc.errors import MmdescError
    from mmdesc.runfolder import RunFolder

    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise MmdescError("--nproc: this process was itself started by torchrun; leave --nproc out")
    RunFolder(r.out, say=say).check_free()  # busy: one line and exit code 75 now, not from every process
    from mmdesc.distributed import launch

    code = launch(nproc, argv)
    if code:
        raise SystemExit(code)


def _train_as_one_of_many(r, fresh: bool, say) -> None:
    """One process of a run torchrun started: rank 0 holds the run folder (and alone clears it
    with --fresh) while the others wait for it in the first set-up step."""
    from mmdesc import build, distributed
    from mmdesc.errors import MmdescError
    from mmdesc.runfolder import RunFolder
    from mmdesc.train import Trainer

    processes = build.start_processes(r)
    folder, failed = RunFolder(r.out, say=say), True
    try:
        def hold() -> None:
            folder.acquire()
            if fresh:
                folder.clear()

        processes.main_only(hold)
        result = Trainer(build.setup_training(r, say, resume=not fresh, processes=processes), say=say).run()
        failed = False
    except distributed.OnEveryRank as e:  # rank 0 says it
        raise SystemExit(e.exit_code) from None
    except MmdescError as e:
        if not processes.main and not isinstance(e, distributed.PeerLost):
            e.args = (f"process {processes.rank} of {processes.world}: {e}",)
        raise
    finally:
        if processes.main:
            folder.release(remove_if_unused=failed)
        distributed.stop(processes)
    if processes.main:
        click.echo(f"best {r.train.metric}: {result['best']:.2f} (step {result['best_step']}); model in {r.out}")
