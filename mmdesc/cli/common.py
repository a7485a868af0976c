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
    """--beam, --n-best, --max-len, --batch-size, --device, --compile, --precision, and the options
    against repetition and for sampling: override the checkpoint's search settings."""
    from mmdesc.config import MAX_BATCH, MAX_BEAM, MAX_OUTPUT, MAX_SEED, MAX_VOCAB
    from mmdesc.precision import HELP as PRECISION_HELP, PRECISIONS

    @click.option("--beam", type=click.IntRange(1, MAX_BEAM), default=None, help="Beam size (1 = greedy). [recipe's]")
    @click.option("--n-best", type=click.IntRange(1, MAX_BEAM), default=None,
                  help="Hypotheses per input (samples, with --sample). [1]")
    @click.option("--max-len", type=click.IntRange(1, MAX_OUTPUT), default=None,
                  help="Longest output in tokens. [recipe's]")
    @click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=None,
                  help="Inputs decoded together. [recipe's]")
    @click.option("--device", default="cpu", show_default=True, callback=_device, help="cpu, cuda, cuda:1 ...")
    @click.option("--compile/--no-compile", "compile_", default=None,
                  help="Run additive attention's score as one loop compiled by torch.compile; the first "
                       "batch waits ~10 s to compile. On CUDA also replay the decode step as CUDA graphs "
                       "(one input at a time is then not bound by kernel launches). [recipe's]")
    @click.option("--precision", type=click.Choice(PRECISIONS), default=None, help=PRECISION_HELP)
    @click.option("--attend", type=click.Choice(["expectation", "argmax"]), default=None,
                  help="The context each word reads: the attention's expectation (soft), or the vector "
                       "at its peak (hard attention's deterministic reading). [recipe's]")
    @click.option("--no-repeat-ngram", type=click.IntRange(0, MAX_OUTPUT), default=None, metavar="N",
                  help="Never repeat an n-gram of N tokens within an output (0 = allowed). [recipe's]")
    @click.option("--repetition-penalty", type=click.FloatRange(0, 100, min_open=True), default=None,
                  help="> 1: a token already in the output has its log-probability multiplied by this. [recipe's]")
    @click.option("--sample/--no-sample", default=None,
                  help="Draw --n-best samples per input from the model instead of searching. [recipe's]")
    @click.option("--temperature", type=click.FloatRange(0, 100, min_open=True), default=None,
                  help="With --sample: < 1 sharper, > 1 more varied. [recipe's]")
    @click.option("--top-k", type=click.IntRange(0, MAX_VOCAB), default=None,
                  help="With --sample: draw among the K most likely tokens (0 = all). [recipe's]")
    @click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
                  help="With --sample: draw within the smallest set of tokens whose probability reaches P. [recipe's]")
    @click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None,
                  help="With --sample: the same seed, inputs and batch size give the same samples. [recipe's]")
    @functools.wraps(f)
    def wrapper(*args, beam, n_best, max_len, batch_size, device, compile_, precision, attend, no_repeat_ngram, repetition_penalty,
                sample, temperature, top_k, top_p, seed, **kwargs):
        return f(*args, search=dict(beam=beam, n_best=n_best, max_len=max_len, batch_size=batch_size,
                                    compile=compile_, precision=precision, attend=attend, no_repeat_ngram=no_repeat_ngram,
                                    repetition_penalty=repetition_penalty, sample=sample, temperature=temperature,
                                    top_k=top_k, top_p=top_p, seed=seed), device=device, **kwargs)
    return wrapper


def resolve_search(recipe_search, options: dict):
    """The checkpoint's search section with the command line's values put over it (checked
    as a recipe's: a sampling option without sampling is refused in one line)."""
    changes = {k: v for k, v in options.items() if v is not None}
    s = replace(recipe_search, **changes)
    if changes.get("n_best") and s.beam < s.n_best and not s.sample:
        s = replace(s, beam=s.n_best)
    if "n_best" not in changes:
        s = replace(s, n_best=1)
    problems = s.problems()
    if problems:
        raise click.UsageError("search settings: " + "; ".join(p.replace("(sample: true)", "(--sample)")
                                                               for p in problems))
    return s


def ensemble_options(f):
    """--ensemble CKPT (repeatable) and --ensemble-attention: decode with several models at once."""

    @click.option("--ensemble", "ensemble", multiple=True, metavar="CKPT",
                  help="Another checkpoint (or run folder) of the same task and tokenizer, decoded together "
                       "with --checkpoint: the search uses the mean of the models' log-probabilities at "
                       "every step. Repeat it for more models.")
    @click.option("--ensemble-attention", default="mean", show_default=True, metavar="mean|N",
                  help="With --ensemble: the attention shown and scored is the models' mean, or model N's "
                       "(0 = --checkpoint's, 1 = the first --ensemble's, ...).")
    @functools.wraps(f)
    def wrapper(*args, ensemble, ensemble_attention, **kwargs):
        which = ensemble_attention.strip().lower()
        if which != "mean":
            if not which.isdigit() or int(which) > len(ensemble):
                raise click.BadParameter(f"{ensemble_attention!r} is neither 'mean' nor a model number in "
                                         f"0..{len(ensemble)}", param_hint="'--ensemble-attention'")
            which = int(which)
        return f(*args, ensemble=(tuple(ensemble), which), **kwargs)
    return wrapper


def join_ensembles(models: list, ensemble: tuple, device: str) -> list:
    """Each model with the --ensemble checkpoints of its modality joined to it (``build.ensemble``).
    With one --checkpoint every --ensemble joins it; with several, each joins the one of its
    modality, and one that has none (or more than one) is a one-line error."""
    from mmdesc.build import ensemble as build_ensemble, load_trained
    from mmdesc.errors import CheckpointError

    paths, attention = ensemble
    if not paths:
        return models
    joined: dict[int, list] = {id(m): [] for m in models}
    for p in paths:
        member = load_trained(p, device)
        mine = [m for m in models if len(models) == 1 or m.modality == member.modality]
        if len(mine) != 1:
            raise CheckpointError(f"{member.path}: --ensemble of a {member.modality} model: "
                                  f"{'no' if not mine else 'more than one'} --checkpoint is one to join")
        joined[id(mine[0])].append(member)
    if attention != "mean" and any(attention > len(group) for group in joined.values() if group):
        raise click.BadParameter(f"model {attention}: an ensemble here has fewer models",
                                 param_hint="'--ensemble-attention'")
    return [build_ensemble([m, *joined[id(m)]], attention) if joined[id(m)] else m for m in models]


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
