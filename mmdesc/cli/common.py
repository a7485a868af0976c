"""What describe, translate and evaluate share: search options, JSON, attention pictures."""
from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import click


def _device(ctx, param, value: str) -> str:
    """--device: a device that exists here, checked before any model is loaded."""
    from mmdesc import devices

    if value not in ("cpu", "auto"):
        problem = devices.problem(value)
        if problem:
            raise click.BadParameter(problem)
    return value


def search_options(f):
    """--beam, --n-best, --max-len, --batch-size, --device: override the checkpoint's search settings."""
    from mmdesc.config import MAX_BATCH, MAX_BEAM, MAX_OUTPUT

    @click.option("--beam", type=click.IntRange(1, MAX_BEAM), default=None, help="Beam size (1 = greedy). [recipe's]")
    @click.option("--n-best", type=click.IntRange(1, MAX_BEAM), default=None, help="Hypotheses per input. [1]")
    @click.option("--max-len", type=click.IntRange(1, MAX_OUTPUT), default=None,
                  help="Longest output in tokens. [recipe's]")
    @click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=None,
                  help="Inputs decoded together. [recipe's]")
    @click.option("--device", default="cpu", show_default=True, callback=_device, help="cpu, cuda, cuda:1 ...")
    @click.option("--compile/--no-compile", "compile_", default=None,
                  help="Run additive attention's score as one loop compiled by torch.compile: up to "
                       "2x faster decoding of large batches over many positions (images); the first "
                       "batch waits ~10 s to compile. [recipe's]")
    @click.option("--attend", type=click.Choice(["expectation", "argmax"]), default=None,
                  help="The context each word reads: the attention's expectation (soft), or the vector "
                       "at its peak (hard attention's deterministic reading). [recipe's]")
    @functools.wraps(f)
    def wrapper(*args, beam, n_best, max_len, batch_size, device, compile_, attend, **kwargs):
        return f(*args, search=dict(beam=beam, n_best=n_best, max_len=max_len, batch_size=batch_size,
                                    compile=compile_, attend=attend), device=device, **kwargs)
    return wrapper


def resolve_search(recipe_search, options: dict):
    """The checkpoint's search section with the command line's values put over it."""
    changes = {k: v for k, v in options.items() if v is not None}
    s = replace(recipe_search, **changes)
    if changes.get("n_best") and s.beam < s.n_best:
        s = replace(s, beam=s.n_best)
    if "n_best" not in changes:
        s = replace(s, n_best=1)
    return s


def hypotheses_json(described) -> list[dict]:
    """n-best descriptions as JSON-able dicts (attention per output word over the input)."""
    return [{"text": d.text, "score": round(d.score, 4), "words": d.words,
             "attention": [[round(float(a), 4) for a in row] for row in d.alpha]} for d in described]


def draw(outdir: Path, name: str, described, source: str, modality: str | None = None) -> Path:
    """The attention picture of the best hypothesis (over the modality's backdrop when its
    module has one), OUTDIR/NAME.png, or NAME-1.png, NAME-2.png ... when that exists: a picture
    is never overwritten (a warning line names the one written). NAME may hold folders."""
    from mmdesc.errors import one_line
    from mmdesc.viz import backdrop_for, draw_attention

    target = claim(outdir / f"{name}.png")
    if target != outdir / f"{name}.png":
        click.echo(f"warning: {one_line(outdir / f'{name}.png')} exists; wrote {one_line(target.name)} beside it",
                   err=True)
    best = described[0]
    try:
        return draw_attention(best.layout, source, best.words, best.alpha.numpy(), target,
                              backdrop=backdrop_for(modality, source, best.layout))
    except BaseException:
        target.unlink(missing_ok=True)  # no empty picture left behind
        raise


def claim(path: Path) -> Path:
    """``path``, or ``STEM-N.SUFFIX`` with the first free N, created empty (O_EXCL, so two
    writers never get the same one) for the caller to write."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    for n in range(100_000):
        candidate = path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return candidate
        except FileExistsError:
            continue
    raise OSError(f"{path}: 100000 pictures of that name exist")


def writable_dir(path: str | None, option: str) -> None:
    """An output folder option: one that exists, or can be made, and can be written; checked
    before any model is loaded (raises click.BadParameter, one line)."""
    import os
    import tempfile

    if path is None:
        return
    p = Path(path)
    existing = next(q for q in (p, *p.parents) if q.exists() or q == Path(q.anchor or "."))
    if not existing.is_dir():
        raise click.BadParameter(f"{existing} is not a folder", param_hint=f"'{option}'")
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".mmdesc-write-test-").cleanup()
    except OSError as e:
        raise click.BadParameter(f"cannot write in {existing} ({e.strerror or e})", param_hint=f"'{option}'") from None


def writable_file(path: str | None, option: str) -> None:
    """An output file option: not a folder, in a folder that exists and can be written."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise click.BadParameter(f"{p} is a folder, not a file", param_hint=f"'{option}'")
    if not p.parent.is_dir():
        raise click.BadParameter(f"{p.parent} is not an existing folder", param_hint=f"'{option}'")
    writable_dir(str(p.parent), option)


def require_task(trained, reads_files: bool) -> None:
    """Refuse, in one line, a model of the wrong kind for the command: ``describe`` needs a model
    whose modality reads files (it has file suffixes), ``translate`` one that reads lines of text."""
    from mmdesc.errors import CheckpointError
    from mmdesc.modalities import MODALITIES

    if bool(MODALITIES[trained.modality].SUFFIXES) == reads_files:
        return
    if reads_files:
        raise CheckpointError(f"{trained.path}: this {trained.modality} model reads lines of text, not files; "
                              f"use `mmdesc translate`")
    raise CheckpointError(f"{trained.path}: this {trained.modality} model cannot translate text; "
                          f"use `mmdesc describe`")
