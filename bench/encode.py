"""Encoding speed: inputs per second through each modality's reader and encoder.

For every modality in mmdesc.modalities.MODALITIES, --inputs synthetic inputs (made by
the modality's ``bench_inputs``: files in a temporary folder, served from the page cache,
or lines of text) are read with ``Reader.load`` one by one, batched with ``collate`` in
batches of --batch, moved to the device and encoded with ``Encoder.forward`` (eval mode,
no gradient). Readers and encoders are built from the modality's recipe in recipes/ with
random weights (the reader fitted on synthetic captions), or, for the modality of
--checkpoint, taken from the trained model.

A modality may add named input sets with ``bench_extra(root, quick) -> {label: sources}``
(their records carry ``"set": label``), e.g. one long, large file.

inputs_per_s is the whole pipeline (load + collate + encode); load_ms, collate_ms and
encode_ms per input split it into its parts. length_per_s counts ``Reader.length`` units
through the whole pipeline (sampled frames, tokens; 1 per image), length_read_per_s through
``load`` alone (decode + sample + scale). Each is the median over --repeats passes.
"""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from common import (Report, parser, recipe_for, report_peak_memory, reset_peak_memory, setup, synthetic_captions,
                    synthetic_sources)


def reader_and_encoder(name: str, module, trained, device):
    """The modality's reader (fitted) and encoder (eval mode): the checkpoint's, or its recipe's."""
    from mmdesc.config import constructor_args, load_recipe
    from mmdesc.corpora import Example

    if trained is not None and trained.modality == name:
        return trained.reader, trained.model.encoder.eval()
    recipe = load_recipe(recipe_for(name))
    reader = module.Reader(**asdict(recipe.input))
    with tempfile.TemporaryDirectory() as tmp:
        fit_on = synthetic_sources(name, 16, Path(tmp))
        reader.fit([Example(str(k), src, [c]) for k, (src, c) in
                    enumerate(zip(fit_on, synthetic_captions(16, seed=1)))])
    encoder = module.Encoder(**constructor_args(recipe.encoder), **reader.encoder_kwargs())
    return reader, encoder.to(device).eval()


def one_pass(reader, encoder, sources: list, batch: int, device, sync) -> tuple[float, float, float, int]:
    """Seconds spent loading, collating and encoding all ``sources`` once, and their total length."""
    import torch

    from mmdesc.data import to_device

    load = collate = encode = 0.0
    length = 0
    for s in range(0, len(sources), batch):
        t0 = time.perf_counter()
        items = [reader.load(src) for src in sources[s:s + batch]]
        t1 = time.perf_counter()
        data = reader.collate(items)
        t2 = time.perf_counter()
        with torch.inference_mode():
            encoder(to_device(data, device))
        sync()
        t3 = time.perf_counter()
        load, collate, encode = load + t1 - t0, collate + t2 - t1, encode + t3 - t2
        length += sum(reader.length(it) for it in items)
    return load, collate, encode, length


def bench_modality(report: Report, args, device, name: str, module, trained) -> None:
    """The modality's synthetic inputs, then each input set of its optional ``bench_extra(root, quick)``."""
    reset_peak_memory(device)
    reader, encoder = reader_and_encoder(name, module, trained, device)
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"": synthetic_sources(name, args.inputs, Path(tmp))}
        extra = getattr(module, "bench_extra", None)
        sets.update(extra(Path(tmp), args.quick) if extra else {})
        for label, sources in sets.items():
            bench_sources(report, args, device, name, reader, encoder, sources, label)
    report_peak_memory(report, name, device)


def bench_sources(report: Report, args, device, config: str, reader, encoder, sources: list,
                  label: str = "") -> None:
    """The figures of one input set (``label``: a ``bench_extra`` set's name, a ``set`` field)."""
    import statistics

    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batch = min(args.batch, len(sources))
    one_pass(reader, encoder, sources, batch, device, sync)  # warm-up
    passes = [one_pass(reader, encoder, sources, batch, device, sync) for _ in range(args.repeats)]
    load, collate, encode = (statistics.median(p[i] for p in passes) for i in range(3))
    n, length, params = len(sources), passes[0][3], dict(batch=batch, inputs=len(sources))
    if label:
        params["set"] = label
    report.emit("inputs_per_s", config, n / (load + collate + encode), "inputs/s", **params)
    report.emit("length_per_s", config, length / (load + collate + encode), "length/s", **params)
    report.emit("length_read_per_s", config, length / load, "length/s", **params)
    for what, seconds in (("load_ms", load), ("collate_ms", collate), ("encode_ms", encode)):
        report.emit(what, config, 1000 * seconds / n, "ms/input", **params)


def main() -> None:
    p = parser(__doc__, compile=False)
    p.add_argument("--inputs", type=int, default=0, metavar="N",
                   help="inputs per modality (default 256, 8 with --quick)")
    p.add_argument("--batch", type=int, default=0,
                   help="inputs per encoder batch (default 64, 4 with --quick)")
    args = p.parse_args()
    device = setup(args)
    args.inputs = args.inputs or (8 if args.quick else 256)
    args.batch = args.batch or (4 if args.quick else 64)
    report = Report("encode", args)

    from mmdesc.build import load_trained
    from mmdesc.modalities import MODALITIES

    trained = load_trained(args.checkpoint, device=str(device)) if args.checkpoint else None
    for name in MODALITIES:
        try:
            module = MODALITIES[name]
        except ModuleNotFoundError as e:
            report.emit("skipped", name, None, None, reason=f"cannot import it: {e}")
            continue
        if not hasattr(module, "bench_inputs") or recipe_for(name) is None:
            report.emit("skipped", name, None, None, reason="the modality has no bench_inputs or no recipe")
            continue
        bench_modality(report, args, device, name, module, trained)
    report.summary()


if __name__ == "__main__":
    sys.exit(main())
