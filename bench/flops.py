"""How close the decoder comes to the machine's matrix-multiply speed.

1. matmul_gflops: float32 ``torch.mm`` of two n x n matrices (n = --size), 2 n^3 FLOPs per
   call: what the machine's BLAS reaches on a large, perfectly shaped product.
2. step_flops: FLOPs of one decode step of the classic Show-Attend-Tell decoder per
   hypothesis, counted from the layer sizes (1 multiply-add = 2 FLOPs). Counted: the query
   projection H x A, the score v . tanh(...) over N positions N x A, the weighted context
   sum N x D, the gate H (if the decoder has one), the LSTM input (E + D) x 4H and recurrent
   H x 4H, the deep output (H + E + D) x O and the vocabulary projection O x V. Not counted:
   the attention keys (projected once per input, not per step), additions, tanh, softmax.
3. decode_step_gflops: the real ``Decoder.step`` timed at batch 64 x beam 5 = 320 hypotheses,
   step_flops x 320 / seconds; train_step_gflops: ``Decoder.forward`` + cross-entropy +
   backward at batch 256, 22 steps, counted as 3 x the forward FLOPs (the backward pass
   costs twice the forward); the optimizer update is not timed. fraction_of_matmul divides
   each by matmul_gflops: far below 1 means time goes to memory-bound work (the (B, K, N, A)
   tanh of additive attention, softmax, gathers) or to Python overhead, not to the products.
"""
from __future__ import annotations

import sys

from common import (CLASSIC_POSITIONS, Report, classic_decoder, classic_sizes, measure, parser,
                    random_contexts, setup)

TRAIN_NOTE = ("training FLOPs = 3 x forward FLOPs (backward = 2 x forward); forward = length x step_flops "
              "+ the attention keys N x D x A + the initial state N x D + 2 x D x H per caption; "
              "elementwise ops, softmax and the optimizer not counted")


def step_macs(s: dict, positions: int, gate: bool) -> dict[str, int]:
    """Multiply-adds of one decode step per hypothesis, by part, from the classic sizes ``s``."""
    H, A, D, E, O, V, N = s["hidden"], s["att"], s["ctx_dim"], s["emb"], s["out"], s["vocab_size"], positions
    return {"query": H * A, "score": N * A, "context": N * D, "gate": H if gate else 0,
            "lstm_input": (E + D) * 4 * H, "lstm_recurrent": H * 4 * H, "deep_output": (H + E + D) * O,
            "vocabulary": O * V}


def input_macs(s: dict, positions: int) -> int:
    """Multiply-adds done once per input: attention keys, the mean context (a masked sum over
    the positions) and the LSTM's initial h and m from it."""
    return positions * s["ctx_dim"] * s["att"] + positions * s["ctx_dim"] + 2 * s["ctx_dim"] * s["hidden"]


def matmul_gflops(report: Report, args, device) -> float:
    import torch

    n = args.size
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = measure(lambda: torch.mm(a, b), device, args.repeats)
    gflops = 2 * n**3 / t / 1e9
    report.emit("matmul_gflops", f"mm{n}", gflops, "GFLOP/s", size=n)
    return gflops


def decode_step(decoder, batch: int, beam: int, device):
    """A call that runs one ``Decoder.step`` for batch x beam hypotheses."""
    import torch

    ctx = random_contexts(batch, CLASSIC_POSITIONS, decoder.ctx_dim, device)
    with torch.inference_mode():
        pctx = decoder.prepare(ctx)
        state = decoder.init_state(pctx, beam)
    y = torch.randint(4, decoder.vocab_size, (batch, beam), device=device)

    def run():
        with torch.inference_mode():
            return decoder.step(pctx, y, state)
    return run


def train_step(decoder, batch: int, length: int, device):
    """A call that runs forward, loss and backward on random targets (no optimizer update)."""
    import torch
    import torch.nn.functional as F

    from mmdesc.objective import doubly_stochastic_penalty

    ctx = random_contexts(batch, CLASSIC_POSITIONS, decoder.ctx_dim, device)
    inputs = torch.randint(4, decoder.vocab_size, (batch, length), device=device)
    outputs = torch.randint(4, decoder.vocab_size, (batch, length), device=device)
    ones = torch.ones(batch, length, device=device)

    def run():
        decoder.zero_grad(set_to_none=True)
        logits, alphas = decoder(ctx, inputs)  # (B, T, V), (B, T, N)
        loss = F.cross_entropy(logits.flatten(0, 1), outputs.flatten())  # (B*T, V) vs (B*T,)
        loss = loss + doubly_stochastic_penalty(alphas, ones, ctx.mask.float())
        loss.backward()
    return run


def main() -> None:
    p = parser(__doc__, checkpoint=False)
    p.add_argument("--size", type=int, default=0, metavar="N",
                   help="matmul size (default 2048, 256 with --quick)")
    p.add_argument("--train-batch", type=int, default=256, metavar="B", help="training batch (default 256)")
    args = p.parse_args()
    device = setup(args)
    args.size = args.size or (256 if args.quick else 2048)
    report = Report("flops", args)
    peak = matmul_gflops(report, args, device)

    sizes = classic_sizes(args.quick)
    decoder = classic_decoder(args.quick, device, args.compile)
    macs = step_macs(sizes, CLASSIC_POSITIONS, decoder.use_gate)
    step_flops = 2 * sum(macs.values())
    for part, m in macs.items():
        report.emit("step_flops", "classic", 2 * m, "FLOP/hypothesis", part=part)
    report.emit("step_flops", "classic", step_flops, "FLOP/hypothesis", part="total")

    batch, beam = (2, 3) if args.quick else (64, 5)
    t = measure(decode_step(decoder, batch, beam, device), device, args.repeats)
    gflops = batch * beam * step_flops / t / 1e9
    params = dict(batch=batch, beam=beam, hypotheses=batch * beam, ms_per_step=round(1000 * t, 3))
    report.emit("decode_step_gflops", "classic", gflops, "GFLOP/s", **params)
    report.emit("fraction_of_matmul", "classic", gflops / peak, "fraction", **params)

    batch, length = (8, 4) if args.quick else (args.train_batch, 22)
    decoder.train()
    t = measure(train_step(decoder, batch, length, device), device, args.repeats)
    flops = 3 * batch * (length * step_flops + 2 * input_macs(sizes, CLASSIC_POSITIONS))
    gflops = flops / t / 1e9
    params = dict(batch=batch, length=length, ms_per_step=round(1000 * t, 3))
    report.emit("train_step_gflops", "classic", gflops, "GFLOP/s", **params, note=TRAIN_NOTE)
    report.emit("fraction_of_matmul", "classic", gflops / peak, "fraction", **params, note=TRAIN_NOTE)
    report.summary()


if __name__ == "__main__":
    sys.exit(main())
