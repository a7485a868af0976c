"""What describe, translate and evaluate share: search options, JSON, attention pictures."""
from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import click


def search_options(f):
    """--beam, --n-best, --max-len, --batch-size, --device: override the checkpoint's search settings."""
    @click.option("--beam", type=click.IntRange(min=1), default=None, help="Beam size (1 = greedy). [recipe's]")
    @click.option("--n-best", type=click.IntRange(min=1), default=None, help="Hypotheses per input. [1]")
    @click.option("--max-len", type=click.IntRange(min=1), default=None, help="Longest output in tokens. [recipe's]")
    @click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Inputs decoded together. [recipe's]")
    @click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
    @click.option("--compile/--no-compile", "compile_", default=None,
                  help="Run additive attention's score as one loop compiled by torch.compile: up to "
                       "2x faster decoding of large batches over many positions (images); the first "
                       "batch waits ~10 s to compile. [recipe's]")
    @functools.wraps(f)
    def wrapper(*args, beam, n_best, max_len, batch_size, device, compile_, **kwargs):
        return f(*args, search=dict(beam=beam, n_best=n_best, max_len=max_len, batch_size=batch_size,
                                    compile=compile_), device=device, **kwargs)
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


def draw(outdir: Path, name, described, source: str) -> Path:
    """The attention picture of the best hypothesis, at OUTDIR/NAME (a relative path; a name
    without a suffix gets ``.png``)."""
    from mmdesc.viz import draw_attention

    path = outdir / name
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    best = described[0]
    return draw_attention(best.layout, source, best.words, best.alpha.numpy(), path)
