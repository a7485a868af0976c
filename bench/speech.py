"""Speech speed: seconds of audio read and featurised per second, and describe's real-time factor.

--inputs spoken captions (eSpeak NG voices with noise, the speech module's ``bench_inputs``,
written as 16 kHz WAV to a temporary folder and served from the page cache) are

  read        ``Reader.load`` one by one: PyAV decoding, resampling to 16 kHz mono and the
              80-bin Kaldi filterbank; ``audio_seconds_per_s`` is seconds of audio per
              second of this work (higher is better);
  described   the whole of ``mmdesc describe``'s work: read, batched, encoded and searched
              with beam --beam (default 5) in batches of --batch; ``rtf`` is the real-time
              factor, processing seconds per second of audio (lower is better; < 1 is faster
              than real time), and ``rtf_one_by_one`` the same with one file at a time
              (batch 1: what a single ``describe talk.wav`` sees).

The model is recipes/speech.yaml's with random weights (``config: random``: its searches
run to the length limit, so this is the slow end), or the trained one of --checkpoint
(``config: trained``).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common import ROOT, Report, measure, parser, report_peak_memory, setup, synthetic_captions

RECIPE = ROOT / "recipes" / "speech.yaml"


def model(args, device):
    """A ``Trained`` from --checkpoint, or the recipe's model with random weights."""
    from mmdesc import build
    from mmdesc.config import load_recipe
    from mmdesc.corpora import Example

    if args.checkpoint:
        return build.load_trained(args.checkpoint, device=str(device)), "trained"
    overrides = ["encoder.channels=4", "encoder.hidden=8", "decoder.hidden=16", "decoder.att=8",
                 "decoder.emb=8", "decoder.out=8", "search.max_len=8"] if args.quick else []
    recipe = load_recipe(RECIPE, overrides)
    reader = build.build_reader(recipe)
    captions = synthetic_captions(50, seed=1)
    tokenizer = build.build_tokenizer(recipe, [Example(str(k), "", [c]) for k, c in enumerate(captions)])
    with tempfile.TemporaryDirectory() as tmp:
        from mmdesc.modalities import speech

        reader.fit([Example(str(k), s, ["x"]) for k, s in enumerate(speech.bench_inputs(Path(tmp), 4))])
    net = build.build_model(recipe, reader, tokenizer).to(device).eval()
    return build.Trained(net, reader, tokenizer, recipe, {}, Path(".")), "random"


def main() -> None:
    p = parser(__doc__, compile=False)
    p.add_argument("--inputs", type=int, default=0, metavar="N", help="spoken captions (default 64, 4 with --quick)")
    p.add_argument("--batch", type=int, default=0, metavar="B", help="inputs decoded together (default 32)")
    p.add_argument("--beam", type=int, default=5, help="beam size of describe (default 5)")
    args = p.parse_args()
    device = setup(args)
    args.inputs = args.inputs or (4 if args.quick else 64)
    args.batch = args.batch or (2 if args.quick else 32)
    report = Report("speech", args)

    from mmdesc import build
    from mmdesc.modalities import speech
    from mmdesc.predict import describe

    trained, config = model(args, device)
    search = {**build.search_kwargs(trained.recipe.search), "beam": args.beam, "n_best": 1}
    with tempfile.TemporaryDirectory() as tmp:
        sources = speech.bench_inputs(Path(tmp), args.inputs)
        reader = trained.reader
        audio = sum(reader.load(s)["seconds"] for s in sources)  # also warms the page cache
        read_s = measure(lambda: [reader.load(s) for s in sources], device, args.repeats)
        params = dict(inputs=args.inputs, audio_seconds=round(audio, 1))
        report.emit("audio_seconds_per_s", config, audio / read_s, "audio s/s", **params)

        def run(batch: int) -> None:
            describe(trained, [reader.load(s) for s in sources], batch_size=batch, **search)

        for what, batch in (("rtf", args.batch), ("rtf_one_by_one", 1)):
            seconds = measure(lambda: run(batch), device, max(1, args.repeats // 2 if batch == 1 else args.repeats))
            report.emit(what, config, seconds / audio, "s/s", beam=args.beam, batch=batch, **params)
    report_peak_memory(report, config, device)
    report.summary()


if __name__ == "__main__":
    sys.exit(main())
