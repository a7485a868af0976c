"""Command line: ``mmdesc COMMAND``.

Sub-commands live one per module and are imported only when run, so ``mmdesc --help``
does not import torch. Library errors (``MmdescError``) become one line on stderr and a
non-zero exit code, never a traceback; so do wrong command-line options.

Exit codes: 0 success; 1 a failure of mmdesc itself (e.g. training diverged); 2 bad input
(a recipe, an option, a checkpoint, a file or a line that failed: the others are still
done, the exit code says that not all were); 75 the run folder is busy with another
training; 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM); 141 the reader of standard
output went away (``mmdesc describe ... | head -1``): mmdesc stops quietly with the code a
program killed by SIGPIPE has, as ``cat`` and ``grep`` do, so ``set -o pipefail`` sees it.
"""
from __future__ import annotations

import importlib
import sys
import warnings

import click

# name -> (module, one-line help shown by `mmdesc --help` without importing the module)
COMMANDS = {
    "train": ("mmdesc.cli.train", "Train a model from a recipe (resumes a stopped run)."),
    "describe": ("mmdesc.cli.describe", "Describe images (and other media) with a trained model."),
    "translate": ("mmdesc.cli.translate", "Translate sentences (arguments or standard input)."),
    "evaluate": ("mmdesc.cli.evaluate", "Score a trained model on a split: BLEU, chrF, CIDEr-D, attention."),
    "average": ("mmdesc.cli.average", "Average the weights of a run's last checkpoints into one checkpoint."),
    "compare": ("mmdesc.cli.compare", "Compare how models of different modalities attend: table, figures, report."),
    "data": ("mmdesc.cli.data", "Corpus tools: generate the synthetic corpus; cache a frozen encoder's features."),
}


class ClosedPipe(Exception):
    """Standard output's reader went away (``| head -1``)."""


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(COMMANDS[name][0]).command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # past click, which would exit 1 on it, to main's handler
            raise ClosedPipe() from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mmdesc")
def cli() -> None:
    """Describe multimedia content in natural language with attention-based
    encoder-decoder networks: caption images, translate text, and see where the
    model looked for every word.

    \b
    Typical session:
      mmdesc train recipes/image.yaml
      mmdesc describe photo.png --checkpoint runs/image --attention out/
      mmdesc evaluate --checkpoint runs/image
    """


def one_line_warnings() -> None:
    """Show mmdesc's own warnings as ``warning: ...`` on stderr, without file and line."""
    from mmdesc.errors import MmdescWarning

    default = warnings.showwarning
    if getattr(default, "one_line", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, MmdescWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            default(message, category, filename, lineno, file, line)
    show.one_line = True
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> None:
    from mmdesc.errors import MmdescError

    one_line_warnings()
    try:
        cli.main(args=argv, prog_name="mmdesc", standalone_mode=False)
    except MmdescError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # one line, as every other error: what is wrong, and where to look
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        click.echo(f"error: {e.format_message()}{where}", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except (ClosedPipe, BrokenPipeError):
        _silence_stdout()
        sys.exit(141)


def _silence_stdout() -> None:
    """After a closed pipe: point standard output at /dev/null, so that flushing it at exit
    does not raise again ("Exception ignored ... BrokenPipeError")."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. captured in tests)
        pass
