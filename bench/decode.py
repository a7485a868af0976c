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

--precision fp32 bf16 int8 measures each precision (mmdesc.precision: the models converted
as ``search.precision`` converts them) in the same run; --positions N [N ...] runs the classic
configuration over N random context vectors for each N (a sweep, e.g. 64 200 800 1600), and
times one decode step there: step_ms (the whole ``Decoder.step`` at batch x beam 5) and
attention_ms (the attention alone: query projection, score, softmax, weighted sum), with
attention_share = attention_ms / step_ms. Every record carries its precision and positions.
On CUDA, --compile also replays the decode step as CUDA graphs (mmdesc.graphs), as
``search.compile`` does there.
"""
from __future__ import annotations

import dataclasses
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
                 limits: dict, tags: dict) -> None:
    reset_peak_memory(device)
    for batch in batches:
        ctx = contexts(batch)
        for beam in (None, *beams):
            run = searcher(decoder, ctx, beam, limits)
            hyps = run()  # also the warm-up
            mean_len = sum(len(h[0].tokens) for h in hyps) / len(hyps)
            t = measure(run, device, args.repeats, warmup=0)
            params = dict(search="greedy" if beam is None else "beam", beam=beam or 1, batch=batch,
                          mean_len=round(mean_len, 1), **tags)
            report.emit("captions_per_s", name, batch / t, "captions/s", **params)
            report.emit("ms_per_input", name, 1000 * t / batch, "ms", **params)
    report_peak_memory(report, name, device, **tags)


def bench_sequential(report: Report, args, device, decoder, contexts, beam: int, batch: int, length: int,
                     tags: dict):
    """Batched beam search against the same search called once per input."""
    import torch

    ctx = contexts(batch)
    batched = searcher(decoder, ctx, beam, fixed_length(length))
    singles = [searcher(decoder, ctx.select(torch.tensor([i], device=device)), beam, fixed_length(length))
               for i in range(batch)]
    t_batched = measure(batched, device, args.repeats)
    t_single = measure(lambda: [run() for run in singles], device, args.repeats)
    params = dict(search="beam", beam=beam, batch=batch, mean_len=float(length), mode="one_at_a_time", **tags)
    report.emit("captions_per_s", "classic", batch / t_single, "captions/s", **params)
    report.emit("speedup_vs_one_at_a_time", "classic", t_single / t_batched, "x", **params)


def bench_step(report: Report, args, device, decoder, contexts, batch: int, beam: int, tags: dict) -> None:
    """One decode step, and its attention alone, at ``batch`` inputs x ``beam`` beams."""
    import torch

    ctx = contexts(batch)
    with torch.inference_mode():
        pctx = decoder.prepare(ctx)
        state = decoder.init_state(pctx, beam)
        y = torch.randint(4, decoder.vocab_size, (batch, beam), device=device)
        h = state["h"]

    def step():
        with torch.inference_mode():
            return decoder.step(pctx, y, state)

    def attention():
        with torch.inference_mode():
            return decoder.att(h, pctx.vectors, pctx.keys, pctx.mask, state)

    t_step, t_att = measure(step, device, args.repeats), measure(attention, device, args.repeats)
    params = dict(batch=batch, beam=beam, **tags)
    report.emit("step_ms", "classic", 1000 * t_step, "ms", **params)
    report.emit("attention_ms", "classic", 1000 * t_att, "ms", **params)
    report.emit("attention_share", "classic", t_att / t_step, "fraction", **params)


def converted(module, precision: str, graphs: bool):
    """A copy of ``module`` (a Describer or a bare decoder) converted to ``precision``; ``graphs``:
    its decode step replayed as CUDA graphs (``--compile`` on CUDA, as ``search.compile`` does)."""
    import copy

    from mmdesc.graphs import capture_steps
    from mmdesc.precision import convert

    module = convert(copy.deepcopy(module), precision)
    capture_steps(getattr(module, "decoder", module), graphs)
    return module


def cast_contexts(contexts, decoder):
    """``contexts`` whose vectors come in the dtype of ``decoder``'s weights (bf16 for a bf16 decoder)."""
    from mmdesc.contexts import ContextSet

    dtype = decoder.embed.weight.dtype

    def make(batch: int):
        ctx = contexts(batch)
        return ContextSet(ctx.vectors.to(dtype), ctx.mask, ctx.layouts)
    return make


def main() -> None:
    from mmdesc.precision import PRECISIONS

    p = parser(__doc__)
    p.add_argument("--length", type=int, default=0, metavar="L",
                   help="classic: every caption has exactly L tokens (default 16, 4 with --quick)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"], metavar="P",
                   help="fp32, bf16 and/or int8: measure each, in this run (default: fp32)")
    p.add_argument("--positions", nargs="+", type=int, default=[CLASSIC_POSITIONS], metavar="N",
                   help=f"classic: context positions, one run each (default {CLASSIC_POSITIONS}; "
                        "a sweep: 64 200 800 1600)")
    p.add_argument("--batches", nargs="+", type=int, default=None, metavar="B",
                   help=f"input batches (default {' '.join(map(str, BATCHES))})")
    p.add_argument("--beams", nargs="+", type=int, default=None, metavar="K",
                   help=f"beam sizes (default {' '.join(map(str, BEAMS))})")
    p.add_argument("--configs", nargs="+", choices=("default", "classic"), default=["default", "classic"],
                   help="which configurations to run (default both)")
    p.add_argument("--no-sequential", action="store_true",
                   help="skip the one-input-at-a-time comparison (64 searches of one input each)")
    args = p.parse_args()
    device = setup(args)
    report = Report("decode", args)
    quick = args.quick
    batches, beams = ((2,), (1, 3)) if quick else (BATCHES, BEAMS)
    batches, beams = args.batches or batches, args.beams or beams
    length = args.length or (4 if quick else 16)
    graphs = args.compile and device.type == "cuda"

    if "default" in args.configs:
        trained = default_model(args.checkpoint, device, args.compile)
        limits = {k: getattr(trained.recipe.search, k)
                  for k in ("max_len", "max_len_a", "max_len_b", "min_len", "length_penalty")}
        if quick:
            limits.update(max_len=4, min_len=0)
        name = "trained" if args.checkpoint else "default"
        for precision in args.precision:
            model = converted(trained.model, precision, graphs)
            mine = dataclasses.replace(trained, model=model)
            contexts = functools.partial(default_contexts, mine, device=device)
            tags = dict(precision=precision, positions=contexts(1).vectors.shape[1])
            bench_config(report, args, device, name, model.decoder, contexts, batches, beams, limits, tags)

    if "classic" in args.configs:
        base = classic_decoder(quick, device, args.compile)
        step_beam = 5 if 5 in beams else beams[-1]
        for precision in args.precision:
            decoder = converted(base, precision, graphs)
            for positions in args.positions:
                tags = dict(precision=precision, positions=positions)
                contexts = cast_contexts(functools.partial(random_contexts, positions=positions,
                                                           dim=decoder.ctx_dim, device=device), decoder)
                for batch in batches:
                    bench_step(report, args, device, decoder, contexts, batch, step_beam, tags)
                bench_config(report, args, device, "classic", decoder, contexts, batches, beams,
                             fixed_length(length), tags)
                if not args.no_sequential:
                    beam, batch = (3, 2) if quick else SEQUENTIAL
                    bench_sequential(report, args, device, decoder, contexts, beam, batch, length, tags)
    report.summary()


if __name__ == "__main__":
    sys.exit(main())
