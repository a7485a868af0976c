"""Speech: reading any sound file into finite filterbanks, failing cleanly, encoding with
lengths that match the layout, the spoken corpus, the importers, and the CLI end to end."""
from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import RECIPES, mmdesc
from mmdesc.config import load_recipe
from mmdesc.corpora import librispeech, synth
from mmdesc.errors import ConfigError, DataError, MediaError, MmdescWarning
from mmdesc.modalities import MODALITIES, speech
from mmdesc.modalities.speech import Encoder, Reader, SplitConfig

TONE_HZ = 1000.0


def write_audio(path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1,
                codec: str = "pcm_s16le", signal=None) -> Path:
    """A sound file written with PyAV: a 1 kHz tone (or ``signal(t) -> (n,)``) on every channel."""
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    t = np.arange(int(seconds * rate)) / rate
    x = signal(t) if signal is not None else 0.5 * np.sin(2 * np.pi * TONE_HZ * t)
    pcm = np.repeat(np.clip(x, -1, 1)[:, None], channels, axis=1)  # (n,) -> (n, C)
    pcm = (pcm * 32767).astype(np.int16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        for s in range(0, len(pcm), 1024):
            frame = av.AudioFrame.from_ndarray(pcm[s:s + 1024].reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def peak_bin(item: dict) -> int:
    return int(item["feats"].float().mean(0).argmax())


# ---------------------------------------------------------------------------------------------
# Reading


@pytest.mark.parametrize("name,rate,channels,codec", [
    ("a.wav", 16000, 1, "pcm_s16le"), ("b.flac", 44100, 2, "flac"), ("c.mp3", 44100, 2, "libmp3lame"),
    ("d.ogg", 48000, 2, "libopus"), ("e.wav", 8000, 1, "pcm_s16le"), ("f.wav", 96000, 6, "pcm_s16le"),
])
def test_any_format_rate_and_layout_becomes_16k_mono_filterbanks(tmp_path, name, rate, channels, codec):
    path = write_audio(tmp_path / name, 1.0, rate, channels, codec)
    reader = Reader()
    item = reader.load(path)
    assert item["feats"].shape[1] == 80 and item["feats"].dtype == torch.float16
    assert item["seconds"] == pytest.approx(1.0, abs=0.03)  # mp3/opus add a few ms of priming
    assert abs(reader.length(item) - reader.probe(path)) <= 3  # the header's estimate
    assert torch.isfinite(item["feats"].float()).all()
    reference = reader.load(write_audio(tmp_path / "ref.wav"))
    assert peak_bin(item) == peak_bin(reference)  # resampled right: the tone lands in the same mel bin


def test_digital_silence_is_one_clear_error_and_quiet_sound_is_not(tmp_path):
    """30 s of zeros would be transcribed as whatever the model likes to say: it is a MediaError
    naming the file; sound 80 dB down is still sound."""
    with pytest.raises(MediaError, match=r"silence\.wav: digital silence: 30\.0 s without a sound"):
        Reader().load(write_audio(tmp_path / "silence.wav", 30.0, signal=lambda t: 0 * t))
    quiet = Reader().load(write_audio(tmp_path / "quiet.wav", 1.0, signal=lambda t: 1e-4 * np.sin(2000 * t)))
    assert torch.isfinite(quiet["feats"]).all()


def test_near_silence_clipping_and_dc_offset_give_finite_features(tmp_path):
    reader = Reader()
    silence = reader.load(write_audio(tmp_path / "silence.wav", 30.0, signal=lambda t: 1e-4 * np.sin(300 * t)))
    clipped = reader.load(write_audio(tmp_path / "clipped.wav", signal=lambda t: 4 * np.sign(np.sin(440 * t))))
    dc = reader.load(write_audio(tmp_path / "dc.wav", signal=lambda t: 0.7 + 0 * t))
    assert silence["seconds"] == pytest.approx(30.0) and silence["feats"].shape[0] == 2998
    for norm in ("utterance", "global", "none"):
        r = Reader(normalise=norm)
        r.mean, r.std = torch.zeros(80), torch.ones(80)
        batch = r.collate([silence, clipped, dc])
        assert torch.isfinite(batch["feats"]).all(), norm


def test_bad_files_are_media_errors_naming_the_file(tmp_path):
    reader = Reader()
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not sound\n" * 50)
    good = write_audio(tmp_path / "good.wav").read_bytes()
    (tmp_path / "header.wav").write_bytes(good[:30])
    (tmp_path / "folder.wav").mkdir()
    cases = {"empty.wav": "empty file", "text.wav": "not a sound file", "header.wav": "not a sound file",
             "missing.wav": "no such file", "folder.wav": "directory"}
    for name, reason in cases.items():
        with pytest.raises(MediaError, match=reason) as err:
            reader.load(tmp_path / name)
        assert err.value.path == str(tmp_path / name)
        with pytest.raises(MediaError):
            reader.probe(tmp_path / name)
    (tmp_path / "half.wav").write_bytes(good[: len(good) // 2])  # cut in the data: what is there is read
    assert reader.load(tmp_path / "half.wav")["seconds"] == pytest.approx(0.5, abs=0.01)
    noise = lambda t: np.random.default_rng(0).uniform(-0.5, 0.5, t.size)  # noqa: E731 - compresses little
    flac = write_audio(tmp_path / "whole.flac", codec="flac", signal=noise).read_bytes()
    (tmp_path / "half.flac").write_bytes(flac[: len(flac) // 2])  # its header says 1 s
    with pytest.warns(MmdescWarning, match="half.flac: truncated or corrupt, read 0.[2-6]. s of 1.00 s"):
        assert 0.2 < reader.load(tmp_path / "half.flac")["seconds"] < 0.7


def test_video_files_give_their_sound_track_and_claims_tells_them_apart(tmp_path):
    both, picture = tmp_path / "clip.mp4", tmp_path / "silent.mp4"
    for path, with_sound in ((both, True), (picture, False)):
        with av.open(str(path), "w") as container:
            video = container.add_stream("mpeg4", rate=10)
            video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
            audio = container.add_stream("aac", rate=16000, layout="mono") if with_sound else None
            for k in range(10):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 25 * k, np.uint8), format="rgb24")
                for packet in video.encode(frame):
                    container.mux(packet)
            if audio is not None:
                tone = (0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(16000) / 16000) * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(tone[None], format="s16", layout="mono")
                frame.sample_rate = 16000
                for packet in list(audio.encode(frame)) + list(audio.encode(None)):
                    container.mux(packet)
            for packet in video.encode(None):
                container.mux(packet)
    reader = Reader()
    assert reader.load(both)["seconds"] == pytest.approx(1.0, abs=0.1)
    with pytest.raises(MediaError, match="no audio stream"):
        reader.load(picture)
    sound = write_audio(tmp_path / "sound.ogg", codec="libopus")
    assert speech.claims(sound) and not speech.claims(both) and not speech.claims(picture)
    assert not speech.claims(tmp_path / "missing.wav")


def test_audio_past_max_seconds_is_cut_with_a_warning(tmp_path):
    path = write_audio(tmp_path / "long.wav", 3.0)
    with pytest.warns(MmdescWarning, match="cut to max_seconds=1"):
        item = Reader(max_seconds=1.0).load(path)
    assert item["seconds"] == pytest.approx(1.0)
    assert Reader(max_seconds=1.0).probe(path) == 98


def test_global_statistics_are_fitted_saved_and_restored(tmp_path):
    from mmdesc.corpora import Example

    files = [write_audio(tmp_path / f"{k}.wav", 0.5, signal=lambda t, k=k: (k + 1) * 0.1 * np.sin(3000 * t))
             for k in range(3)]
    reader = Reader(normalise="global")
    reader.fit([Example(str(k), str(f), ["x"]) for k, f in enumerate(files)])
    batch = reader.collate([reader.load(f) for f in files])
    real = batch["feats"][batch["feats"].abs().sum(-1) > 0]  # (frames, F)
    assert real.mean().abs() < 0.05 and (real.std() - 1).abs() < 0.1
    again = Reader(normalise="global")
    again.load_state(json.loads(json.dumps(reader.state())))
    assert torch.equal(again.collate([again.load(files[0])])["feats"], reader.collate([reader.load(files[0])])["feats"])


def test_specaugment_masks_only_when_asked_and_only_in_training(tmp_path):
    reader = Reader(freq_masks=2, freq_width=10, time_masks=2, time_width=30, time_fraction=0.5)
    item = reader.load(write_audio(tmp_path / "a.wav", 1.0, signal=lambda t: np.sin(2000 * t) * np.sin(3 * t)))
    assert torch.equal(reader.load(tmp_path / "a.wav")["feats"], item["feats"])  # reading never augments
    masked = reader.augment(item, random.Random(4))
    changed = masked["feats"] != item["feats"]  # (T, F)
    assert changed.any() and not changed.all()
    assert torch.equal(reader.augment(item, random.Random(4))["feats"], masked["feats"])  # the rng decides
    assert torch.equal(item["feats"], reader.load(tmp_path / "a.wav")["feats"])  # the item is not touched
    off = Reader(freq_masks=0, time_masks=0)
    assert torch.equal(off.augment(item, random.Random(4))["feats"], item["feats"])
    # the training data augments, the same data for evaluation does not
    from mmdesc.corpora import Example
    from mmdesc.data import Pairs

    examples, pairs = [Example("a", str(tmp_path / "a.wav"), ["x"])], [(0, [5])]
    trained_on = Pairs(reader, examples, pairs, augment_seed=1)[0][0]["feats"]
    evaluated = Pairs(reader, examples, pairs, augment_seed=None)[0][0]["feats"]
    assert torch.equal(evaluated, item["feats"]) and not torch.equal(trained_on, item["feats"])


def test_narrowband_training_hears_an_8k_recording_and_evaluation_the_file(tmp_path):
    """``narrowband: 1`` passes every training utterance through 8 kHz: the mel bins above 4 kHz
    go (nearly) silent, as in an 8 kHz file read and resampled; those below keep their level.
    Evaluation (no augment) reads the file as it is."""
    from mmdesc.corpora import Example
    from mmdesc.data import Pairs

    rng = np.random.default_rng(0)
    noise = rng.standard_normal(16000) * 0.1  # broadband: every mel bin has energy
    path = write_audio(tmp_path / "wide.wav", 1.0, signal=lambda t: noise[: t.size])
    phone = write_audio(tmp_path / "phone.wav", 1.0, rate=8000, signal=lambda t: noise[: t.size])
    reader = Reader(normalise="none", freq_masks=0, time_masks=0, narrowband=1.0)
    item = reader.load(path)
    heard = reader.augment(item, random.Random(0))["feats"].float().mean(0)  # (F,)
    full = item["feats"].float().mean(0)
    eight = reader.load(phone)["feats"].float().mean(0)  # an 8 kHz file, resampled to 16 kHz
    top, low = slice(70, 80), slice(5, 40)  # mel bins above ~4.5 kHz; below ~2 kHz
    assert (full[top] - heard[top]).min() > 5  # the high band is gone (log energy)
    assert (full[low] - heard[low]).abs().max() < 0.5
    assert (heard[top] - eight[top]).abs().mean() < (full[top] - eight[top]).abs().mean() / 3
    assert "samples" not in reader.augment(item, random.Random(0))  # nothing extra reaches a batch
    off = Reader(normalise="none", freq_masks=0, time_masks=0)
    assert "samples" not in off.load(path)
    examples, pairs = [Example("a", str(path), ["x"])], [(0, [5])]
    assert torch.equal(Pairs(reader, examples, pairs, augment_seed=None)[0][0]["feats"], item["feats"])
    assert not torch.equal(Pairs(reader, examples, pairs, augment_seed=1)[0][0]["feats"], item["feats"])


# ---------------------------------------------------------------------------------------------
# Encoder


def test_positions_give_the_subsampled_lengths_and_cover_every_frame():
    for n in (1, 2, 3, 4, 5, 17, 64, 301):
        for strides in ((2, 2), (2, 2, 2), (2, 2, 2, 2)):
            spans = speech.positions(n, strides)
            length = n
            for s in strides:
                length = -(-length // s)
            assert len(spans) == length
            assert spans[0][0] == 0 and spans[-1][1] == n - 1
            assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("pyramid", [0, 1, 2])
def test_encoder_lengths_equal_layout_lengths_and_padding_changes_nothing(tmp_path, pyramid):
    reader = Reader(n_mels=20)
    paths = [write_audio(tmp_path / f"{s}.wav", s, signal=lambda t: np.sin(5000 * t * t)) for s in (0.3, 1.1, 0.57)]
    items = [reader.load(p) for p in paths]
    torch.manual_seed(0)
    enc = Encoder(**reader.encoder_kwargs(), channels=3, hidden=5, layers=3, pyramid=pyramid).eval()
    with torch.no_grad():
        ctx = enc(reader.collate(items))
        alone = [enc(reader.collate([it])) for it in items]
    assert ctx.vectors.shape[-1] == enc.out_dim == 10
    for b, (it, one) in enumerate(zip(items, alone)):
        n = int(ctx.lengths[b])
        assert n == len(ctx.layouts[b]) == len(speech.positions(reader.length(it), enc.strides()))
        lay = ctx.layouts[b]
        assert lay.kind == "time" and lay.duration == pytest.approx(it["seconds"], abs=1e-3)
        assert lay.spans[0][0] == 0 and lay.spans[-1][1] == pytest.approx(it["seconds"], abs=0.03)
        torch.testing.assert_close(ctx.vectors[b, :n], one.vectors[0], atol=1e-5, rtol=1e-4)
        assert not ctx.vectors[b, n:].any()  # padding is 0


def test_local_keys_see_only_the_frames_under_their_position(tmp_path):
    """encoder.keys=local: each position's key is the front end's output over its own frames,
    so sound far later changes the BiLSTM's vectors at the start but not the keys there."""
    reader = Reader(n_mels=20, normalise="none")  # per-utterance statistics would carry the change everywhere
    torch.manual_seed(0)
    enc = Encoder(**reader.encoder_kwargs(), channels=3, hidden=5, layers=2, pyramid=1, keys="local").eval()
    a = reader.load(write_audio(tmp_path / "a.wav", 1.0, signal=lambda t: np.sin(5000 * t * t)))
    b = dict(a, feats=a["feats"].clone())
    b["feats"][60:] = torch.randn_like(b["feats"][60:])  # another sound from 0.6 s on
    with torch.no_grad():
        ca, cb = enc(reader.collate([a])), enc(reader.collate([b]))
    assert ca.keys.shape == (*ca.vectors.shape[:2], enc.key_dim) and enc.key_dim == 3 * 5 * 2
    torch.testing.assert_close(ca.keys[:, :4], cb.keys[:, :4])  # positions 0-3 cover the first 0.5 s
    assert not torch.allclose(ca.vectors[:, :4], cb.vectors[:, :4])  # the backward LSTM heard the change
    assert not torch.allclose(ca.keys, cb.keys)
    assert Encoder(**reader.encoder_kwargs(), channels=3, hidden=5, layers=2)(reader.collate([a])).keys is None


# ---------------------------------------------------------------------------------------------
# The synthetic corpus and the importers


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    """The tiny spoken corpus, through the CLI."""
    root = tmp_path_factory.mktemp("spoken")
    r = mmdesc("data", "synth", root, "--train", 16, "--valid", 4, "--test", 4, "--seed", 3, "--modalities", "speech")
    assert r.code == 0, r.err
    return root


def test_spoken_corpus_holds_out_whole_voices_and_times_every_word(spoken):
    voices = {}
    for split in ("train", "valid", "test"):
        examples = speech.read_split(SplitConfig(manifest=f"speech_{split}.tsv"), spoken)
        voices[split] = {ex.meta["voice"].split("+")[1] for ex in examples}
        for ex in examples:
            spans = ex.meta["spans"]
            assert len(spans) == len(ex.references[0].split())
            assert all(s < e for s, e in spans) and all(a[1] <= b[0] + 1e-6 for a, b in zip(spans, spans[1:]))
            with av.open(ex.source) as c:
                s = c.streams.audio[0]
                assert (s.rate, s.channels) == (16000, 1)
                assert spans[-1][1] <= float(s.duration * s.time_base) + 1e-3
        if split != "train":
            assert len(examples) == 4
    assert len(speech.read_split(SplitConfig(manifest="speech_train.tsv"), spoken)) > 16  # every reference
    assert not voices["test"] & (voices["train"] | voices["valid"]) and not voices["valid"] & voices["train"]
    scenes = synth.read_manifest(spoken, "test")
    assert [s["forms"]["speech"]["caption"] for s in scenes] == [s["caption"] for s in scenes]
    assert synth.is_complete(spoken, "speech")


def test_word_spans_follow_espeak_word_events():
    from mmdesc.corpora.espeak import ESpeak, word_spans

    spoken = ESpeak().speak("a red circle above a blue square", "en-us+m3")
    assert len(spoken.words) == 7 and spoken.words[0][0] == 0.0
    assert spoken.words[-1][1] == pytest.approx(len(spoken.samples) / spoken.rate, abs=0.05)
    # a word without its own event shares its group's span by letters + 1: "of" 3/5, "a" 2/5
    spans, timed = word_spans("of a cat", [(0, 0.0), (5, 0.6)], 1.0)
    assert np.allclose(spans, [(0.0, 0.36), (0.36, 0.6), (0.6, 1.0)]) and timed == [True, False, True]


def test_librispeech_and_common_voice_layouts(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    chapter.mkdir(parents=True)
    for uid in ("84-121123-0000", "84-121123-0001"):
        write_audio(chapter / f"{uid}.flac", 0.3, codec="flac")
    (chapter / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS\n")
    cv = tmp_path / "cv" / "en"
    (cv / "clips").mkdir(parents=True)
    write_audio(cv / "clips" / "common_voice_en_1.mp3", 0.3, 44100, 2, "libmp3lame")
    (cv / "test.tsv").write_text("client_id\tpath\tsentence\tup_votes\n"
                                 "abc\tcommon_voice_en_1.mp3\tHe said \"yes\", twice.\t2\n")
    libri = speech.read_split(SplitConfig(librispeech="LibriSpeech/dev-clean"), tmp_path)
    assert [(ex.id, ex.references) for ex in libri] == [("84-121123-0000", ["go do you hear"]),
                                                       ("84-121123-0001", ["but in less"])]
    common = speech.read_split(SplitConfig(commonvoice="cv/en/test.tsv"), tmp_path)
    assert common[0].references == ['He said "yes", twice.'] and common[0].meta["speaker"] == "abc"
    reader = Reader()
    for ex in libri + common:
        assert reader.load(ex.source)["seconds"] == pytest.approx(0.3, abs=0.03)
    (cv / "bad.tsv").write_text("path\tup_votes\nx.mp3\t1\n")
    with pytest.raises(DataError, match="'sentence'"):
        librispeech.read_commonvoice(cv / "bad.tsv")
    with pytest.raises(DataError, match="no \\*.trans.txt"):
        librispeech.read_librispeech(tmp_path / "cv")


def test_manifest_errors_name_the_line(tmp_path):
    (tmp_path / "m.tsv").write_text("path\ttranscript\tspans\na.wav\ttwo words\t0.1-0.2\n")
    with pytest.raises(DataError, match="line 2: 1 spans for 2 words"):
        librispeech.read_manifest(tmp_path / "m.tsv")
    (tmp_path / "m.tsv").write_text("path\ttranscript\tspans\na.wav\tone\t0.3-0.2\n")
    with pytest.raises(DataError, match="line 2: span '0.3-0.2'"):
        librispeech.read_manifest(tmp_path / "m.tsv")


def test_a_split_names_exactly_one_corpus_format(tmp_path):
    recipe = RECIPES / "tiny" / "speech.yaml"
    with pytest.raises(ConfigError, match="data.train.manifest: give exactly one of") as err:
        load_recipe(recipe, ["data.train.librispeech=LibriSpeech/dev-clean", "data.valid.manifest=null"])
    assert "data.valid.manifest" in str(err.value)
    assert load_recipe(recipe, ["data.train.manifest=null", "data.train.librispeech=x"]).data.train.librispeech == "x"


# ---------------------------------------------------------------------------------------------
# Through the command line


@pytest.fixture(scope="module")
def run(spoken, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "speech"
    r = mmdesc("train", RECIPES / "tiny" / "speech.yaml", f"data.root={spoken}", f"out={out}")
    assert r.code == 0, r.err
    return out


def test_describe_transcribes_every_good_file_and_names_the_bad_one(run, tmp_path):
    good = [write_audio(tmp_path / "a.wav", 0.8), write_audio(tmp_path / "b.flac", 0.8, 44100, 2, "flac"),
            write_audio(tmp_path / "c.mp3", 0.8, 8000, 1, "libmp3lame"),
            write_audio(tmp_path / "d.ogg", 0.8, 48000, 2, "libopus")]
    (tmp_path / "bad.wav").write_text("not a sound file")
    out = tmp_path / "att"
    r = mmdesc("describe", *good, tmp_path / "bad.wav", "--checkpoint", run, "--attention", out)
    assert r.code != 0
    lines = dict(line.split("\t", 1) for line in r.out.splitlines())
    assert sorted(lines) == sorted(str(p) for p in good)
    assert all(text.strip() for text in lines.values())  # the tiny recipe's search has min_len 1
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'bad.wav'}: not a sound file, or a format FFmpeg cannot read"]
    assert "Traceback" not in r.err
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png", "d.png"]


def test_evaluate_reports_wer_and_the_time_alignment(run):
    r = mmdesc("evaluate", "--checkpoint", run, "--json")
    assert r.code == 0, r.err
    scores = json.loads(r.out)
    assert {"wer", "cer", "substitutions", "deletions", "insertions", "time_alignment", "backward_steps"} <= set(scores)
    assert scores["time_alignment_n"] > 0 and 0 <= scores["time_alignment"] <= 100


def test_local_keys_train_describe_and_ensemble_through_the_cli(spoken, tmp_path):
    out = tmp_path / "local"
    r = mmdesc("train", RECIPES / "tiny" / "speech.yaml", f"data.root={spoken}", f"out={out}", "encoder.keys=local")
    assert r.code == 0, r.err
    clip = write_audio(tmp_path / "a.wav", 0.8)
    one = mmdesc("describe", clip, "--checkpoint", out)
    both = mmdesc("describe", clip, "--checkpoint", out, "--ensemble", out)
    assert one.code == both.code == 0, one.err + both.err
    assert one.out.strip() and one.out == both.out  # the model with itself: its own transcript
    r = mmdesc("train", RECIPES / "tiny" / "speech.yaml", f"data.root={spoken}", f"out={tmp_path / 'x'}",
               "encoder.keys=nearby")
    assert r.code == 2 and "encoder.keys" in r.err, r.err


def test_supervised_attention_trains_on_the_word_spans_through_the_cli(spoken, tmp_path):
    """``loss.attention_truth`` reads each training utterance's word spans: the term is logged
    and falls; training is otherwise the same run (here also hearing half the utterances
    through 8 kHz, ``input.narrowband``)."""
    out = tmp_path / "truth"
    r = mmdesc("train", RECIPES / "tiny" / "speech.yaml", f"data.root={spoken}", f"out={out}",
               "loss.attention_truth=1.0", "input.narrowband=0.5")
    assert r.code == 0, r.err
    logged = [s for s in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "xent" in s]
    assert all("att_truth" in s for s in logged) and logged[-1]["att_truth"] < logged[0]["att_truth"]
    r = mmdesc("train", RECIPES / "tiny" / "speech.yaml", f"data.root={spoken}", f"out={tmp_path / 'x'}",
               "loss.attention_truth=-1")
    assert r.code == 2 and "attention_truth" in r.err, r.err
    r = mmdesc("train", RECIPES / "tiny" / "speech.yaml", f"data.root={spoken}", f"out={tmp_path / 'y'}",
               "input.narrowband=1.5")
    assert r.code == 2 and "narrowband: must be in [0, 1]" in r.err and "Traceback" not in r.err, r.err


def test_registered_and_the_recipes_load():
    assert MODALITIES["speech"] is speech
    for path in (RECIPES / "speech.yaml", RECIPES / "tiny" / "speech.yaml"):
        assert load_recipe(path).modality == "speech"
