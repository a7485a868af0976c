"""Command line: ``mmdesc COMMAND``.

Sub-commands live one per module and are imported only when run, so ``mmdesc --help``
does not import torch. Library errors (``MmdescError``) become one line on stderr and a
non-zero exit code, never a traceback.
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
    "compare": ("mmdesc.cli.compare", "Compare how models of different modalities attend: table, figures, report."),
    "data": ("mmdesc.cli.data", "Corpus tools: generate the synthetic multimodal corpus."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(COMMANDS[name][0]).command

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
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
