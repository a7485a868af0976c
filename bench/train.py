"""Training speed of the decoder: captions per second and milliseconds per optimisation step.

One step is what mmdesc's Trainer does for the decoder: teacher-forced ``Decoder.forward``,
cross-entropy plus the doubly-stochastic attention penalty (weight 1.0), backward, and an
AdamW update. Context vectors are computed once beforehand, so the encoder is not timed
(bench/encode.py times it without gradients). Targets are random token ids, every caption
exactly --length steps long (no padding), in batches of --batch.

Configurations as in bench/decode.py: "default" (the image recipe's decoder with random
weights over encoded synthetic images; "trained" with --checkpoint) and "classic" (the
Show-Attend-Tell-sized LSTM decoder over 196 random 2048-d vectors). captions_per_s =
batch / seconds per step; peak_rss is the process's high-water mark so far.

padding_fraction: the share of target positions that are padding when the references of
synthetic scenes, tokenized by the default model's tokenizer, are cut into batches of
--batch the way the Trainer does it (data.bucket_batches: sorted by length within chunks
of 50 batches) and, for comparison, in random order. Padding is computed and thrown away.
"""
from __future__ import annotations

import sys

from common import (CLASSIC_POSITIONS, Report, classic_decoder, default_contexts, default_model, measure,
                    parser, random_contexts, report_peak_memory, reset_peak_memory, setup)

DS_PENALTY = 1.0


def train_step(decoder, ctx, inputs, outputs, opt):
    """A call that runs one optimisation step of ``decoder`` on fixed contexts and targets."""
    import torch.nn.functional as F

    from mmdesc.objective import doubly_stochastic_penalty

    target_mask, ctx_mask = (outputs != 0).float(), ctx.mask.float()

    def run():
        logits, alphas = decoder(ctx, inputs)  # (B, T, V), (B, T, N)
        loss = F.cross_entropy(logits.flatten(0, 1), outputs.flatten(), ignore_index=0)  # (B*T, V) vs (B*T,)
        loss = loss + DS_PENALTY * doubly_stochastic_penalty(alphas, target_mask, ctx_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def random_targets(batch: int, length: int, vocab: int, device):
    """Teacher-forcing (inputs, outputs), each (B, length): random ids, then EOS."""
    import torch

    from mmdesc.data import target_tensors

    ids = torch.randint(4, vocab, (batch, length - 1)).tolist()  # 4: past the special tokens
    inputs, outputs = target_tensors(ids)
    return inputs.to(device), outputs.to(device)


def bench_config(report: Report, args, device, name: str, decoder, ctx) -> None:
    import torch

    reset_peak_memory(device)
    decoder.train()
    inputs, outputs = random_targets(args.batch, args.length, decoder.vocab_size, device)
    opt = torch.optim.AdamW(decoder.parameters(), lr=1e-4)
    t = measure(train_step(decoder, ctx, inputs, outputs, opt), device, args.repeats)
    params = dict(batch=args.batch, length=args.length)
    report.emit("captions_per_s", name, args.batch / t, "captions/s", **params)
    report.emit("ms_per_step", name, 1000 * t, "ms", **params)
    report_peak_memory(report, name, device)


def padding(report: Report, args, tokenizer) -> None:
    """Padding share of bucketed batches against shuffled ones, on synthetic references."""
    import random

    from common import synthetic_captions

    from mmdesc.data import bucket_batches

    lengths = [len(tokenizer.encode(c)) + 1 for c in synthetic_captions(100 if args.quick else 2000)]  # + EOS
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    shuffled = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]
    for name, batches in (("bucketed", bucket_batches(lengths, args.batch, seed=0, epoch=0)), ("shuffled", shuffled)):
        real = sum(lengths[i] for b in batches for i in b)
        padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        report.emit("padding_fraction", "default", 1 - real / padded, "fraction", batches=name,
                    batch=args.batch, captions=len(lengths))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=0, help="captions per step (default 32, 4 with --quick)")
    p.add_argument("--length", type=int, default=0, metavar="T",
                   help="decoder steps per caption, EOS included (default 22, 4 with --quick)")
    args = p.parse_args()
    device = setup(args)
    args.batch = args.batch or (4 if args.quick else 32)
    args.length = args.length or (4 if args.quick else 22)
    report = Report("train", args)

    trained = default_model(args.checkpoint, device, args.compile)
    ctx = default_contexts(trained, args.batch, device)
    name = "trained" if args.checkpoint else "default"
    bench_config(report, args, device, name, trained.model.decoder, ctx)
    padding(report, args, trained.tokenizer)

    decoder = classic_decoder(args.quick, device, args.compile)
    ctx = random_contexts(args.batch, CLASSIC_POSITIONS, decoder.ctx_dim, device)
    bench_config(report, args, device, "classic", decoder, ctx)
    report.summary()


if __name__ == "__main__":
    sys.exit(main())
