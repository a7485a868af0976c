"""Decoding speed: captions per second and milliseconds per input, greedy and beam search.

Two configurations, each decoding from context vectors computed beforehand (the encoder is
not timed; see bench/encode.py):

  default  the image recipe's model (recipes/image.yaml) with random weights, over 64 cell
           vectors of synthetic images; or, with --checkpoint, a trained model. Search limits
           come from the recipe (max_len 30 for images), so captions end where the model says.
  classic  a Show-Attend-Tell-sized LSTM decoder (vocabulary 10000, 2048-d context, 512
           everywhere else) with random weights, over 196 random context vectors. Every
           hypothesis is forced to exactly --length tokens (min_len = max_len = L).

For each: greedy search and beam search with beams 1, 3, 5, 10 at input batches 1, 16, 64.
"beam 1" runs the beam-search code with one beam (compare it with greedy for its overhead).
captions_per_s = inputs / seconds per call (one caption per input); ms_per_input is its
inverse. speedup_vs_one_at_a_time compares classic beam 5 over a batch of 64 with the same
search called 64 times on one input each. peak_rss is the process's high-water mark so far.
"""
from __future__ import annotations

import functools
import sys

from common import (CLASSIC_POSITIONS, Report, classic_decoder, default_contexts, default_model, measure,
                    parser, random_contexts, report_peak_memory, reset_peak_memory, setup)

BEAMS = (1, 3, 5, 10)
BATCHES = (1, 16, 64)
SEQUENTIAL = (5, 64)  # (beam, batch) of the one-input-at-a-time comparison


def searcher(decoder, ctx, beam: int | None, limits: dict):
    """A call that decodes ``ctx``: greedy when ``beam`` is None, else beam search with ``beam`` beams.

    ``limits``: max_len, max_len_a, max_len_b, min_len and length_penalty, as in a recipe's search."""
    import torch

    from mmdesc.search import decode, output_limits
    from mmdesc.search.beam import beam_search

    max_lens = output_limits(ctx.lengths, limits["max_len"], limits["max_len_a"], limits["max_len_b"])
    kw = dict(max_lens=max_lens.to(ctx.vectors.device), min_len=limits["min_len"],
              length_penalty=limits["length_penalty"])

    def run():
        if beam is None:
            return decode(decoder, ctx, beam=1, n_best=1, **kw)
        with torch.inference_mode():  # what decode() does before it hands over to beam_search
            return beam_search(decoder, ctx, beam=beam, n_best=1, **kw)
    return run


def fixed_length(length: int) -> dict:
    """Search limits that make every hypothesis exactly ``length`` tokens long."""
    return dict(max_len=length, max_len_a=0.0, max_len_b=0, min_len=length, length_penalty=0.0)


def bench_config(report: Report, args, device, name: str, decoder, contexts, batches, beams,
                 limits: dict) -> None:
    reset_peak_memory(device)
    for batch in batches:
        ctx = contexts(batch)
        for beam in (None, *beams):
            run = searcher(decoder, ctx, beam, limits)
            hyps = run()  # also the warm-up
            mean_len = sum(len(h[0].tokens) for h in hyps) / len(hyps)
            t = measure(run, device, args.repeats, warmup=0)
            params = dict(search="greedy" if beam is None else "beam", beam=beam or 1, batch=batch,
                          mean_len=round(mean_len, 1))
            report.emit("captions_per_s", name, batch / t, "captions/s", **params)
            report.emit("ms_per_input", name, 1000 * t / batch, "ms", **params)
    report_peak_memory(report, name, device)


def bench_sequential(report: Report, args, device, decoder, contexts, beam: int, batch: int, length: int):
    """Batched beam search against the same search called once per input."""
    import torch

    ctx = contexts(batch)
    batched = searcher(decoder, ctx, beam, fixed_length(length))
    singles = [searcher(decoder, ctx.select(torch.tensor([i], device=device)), beam, fixed_length(length))
               for i in range(batch)]
    t_batched = measure(batched, device, args.repeats)
    t_single = measure(lambda: [run() for run in singles], device, args.repeats)
    params = dict(search="beam", beam=beam, batch=batch, mean_len=float(length), mode="one_at_a_time")
    report.emit("captions_per_s", "classic", batch / t_single, "captions/s", **params)
    report.emit("speedup_vs_one_at_a_time", "classic", t_single / t_batched, "x", **params)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--length", type=int, default=0, metavar="L",
                   help="classic: every caption has exactly L tokens (default 16, 4 with --quick)")
    args = p.parse_args()
    device = setup(args)
    report = Report("decode", args)
    quick = args.quick
    batches, beams = ((2,), (1, 3)) if quick else (BATCHES, BEAMS)
    length = args.length or (4 if quick else 16)

    trained = default_model(args.checkpoint, device, args.compile)
    limits = {k: getattr(trained.recipe.search, k)
              for k in ("max_len", "max_len_a", "max_len_b", "min_len", "length_penalty")}
    if quick:
        limits.update(max_len=4, min_len=0)
    name = "trained" if args.checkpoint else "default"
    contexts = functools.partial(default_contexts, trained, device=device)
    bench_config(report, args, device, name, trained.model.decoder, contexts, batches, beams, limits)

    decoder = classic_decoder(quick, device, args.compile)
    contexts = functools.partial(random_contexts, positions=CLASSIC_POSITIONS, dim=decoder.ctx_dim, device=device)
    bench_config(report, args, device, "classic", decoder, contexts, batches, beams, fixed_length(length))
    beam, batch = (3, 2) if quick else SEQUENTIAL
    bench_sequential(report, args, device, decoder, contexts, beam, batch, length)
    report.summary()


if __name__ == "__main__":
    sys.exit(main())
