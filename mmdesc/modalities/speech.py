"""Speech: a sound file becomes log-mel filterbank frames, and a convolutional front end plus
stacked bidirectional LSTMs turn them into a sequence of context vectors (Chan et al. 2016,
"Listen, Attend and Spell"; Chorowski et al. 2015, "Attention-Based Models for Speech
Recognition").

Reading: PyAV decodes any container FFmpeg knows (WAV, FLAC, MP3, Ogg/Opus, the sound track
of a video) and its resampler turns any rate and channel layout into 16 kHz mono. Audio past
``max_seconds`` is dropped with a warning. Features are Kaldi-compatible filterbanks
(``torchaudio.compliance.kaldi.fbank``), computed once in ``load`` (the item is what a
dataset keeps, so training never recomputes them) and kept as float16; ``collate`` pads them
and normalises the whole batch at once, per utterance or with global statistics fitted on the
training split (saved with the model). Silence, clipping and DC offset give finite features:
the DC offset is removed per frame and every log energy has a floor.

Encoding: two stride-2 3x3 convolutions subsample time (and frequency) by 4, then BiLSTM
layers read the frames as packed sequences; with ``pyramid = p`` the first p layer outputs
are halved in time by concatenating neighbours (LAS's pyramid). ``positions`` maps a frame
count to the frames under each output position: the encoder's lengths and the layout's
spans in seconds both come from it.

Synthetic corpus: the shared scene captions spoken by eSpeak NG (``mmdesc.corpora.espeak``)
with many voices, accents, rates and pitches, plus noise and room reverberation; word time
spans come from eSpeak's word events. Whole voices are held out for the valid and test
splits. SpecAugment (time and frequency masks) is applied by ``Reader.augment``, in training
only.
"""
from __future__ import annotations

import functools
import math
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmdesc.config import EncoderTransfer
from mmdesc.contexts import ContextSet, TimeLayout
from mmdesc.corpora import Example
from mmdesc.errors import MediaError, MmdescWarning
from mmdesc.media import check_file

NAME = "speech"  # this modality's registry name: its part of the synthetic corpus
SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".oga", ".m4a", ".aac", ".wma", ".mka",
            ".webm", ".mp4", ".mkv", ".mov")
RATE = 16_000
NORMALISE = ("utterance", "global", "none")
FRONT_STRIDES = (2, 2)  # the convolutional front end's time strides
SILENT = 1e-5  # peak amplitude at or below which a file is digital silence (16-bit audio's step is 3e-5)


@dataclass(frozen=True)
class ReaderConfig:
    n_mels: int = 80
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    normalise: Literal["utterance", "global", "none"] = "utterance"
    max_seconds: float = 60.0  # audio past this is dropped, with a warning
    fit_items: int = 300  # training files the global statistics are fitted on
    freq_masks: int = 2  # SpecAugment, training only: masks per utterance ...
    freq_width: int = 12  # ... each up to this many mel bins wide
    time_masks: int = 2
    time_width: int = 20  # frames
    time_fraction: float = 0.15  # a time mask covers at most this share of the utterance
    narrowband: float = 0.0  # training only: share of utterances heard through 8 kHz (telephone band)

    def problems(self) -> list[str]:
        found = [f"{n}: must be > 0, got {getattr(self, n)}"
                 for n in ("n_mels", "frame_shift_ms", "frame_length_ms", "max_seconds", "fit_items")
                 if not getattr(self, n) > 0]
        found += [f"{n}: must be >= 0, got {getattr(self, n)}"
                  for n in ("freq_masks", "freq_width", "time_masks", "time_width") if getattr(self, n) < 0]
        for n in ("time_fraction", "narrowband"):
            if not 0 <= getattr(self, n) <= 1:
                found.append(f"{n}: must be in [0, 1], got {getattr(self, n)}")
        if self.frame_length_ms < self.frame_shift_ms:
            found.append(f"frame_length_ms: must be >= frame_shift_ms ({self.frame_shift_ms}), "
                         f"got {self.frame_length_ms}")
        if self.freq_width >= self.n_mels:
            found.append(f"freq_width: must be < n_mels ({self.n_mels}), got {self.freq_width}")
        return found


@dataclass(frozen=True)
class EncoderConfig(EncoderTransfer):  # + init_from, unfreeze_at, backbone_lr (mmdesc/transfer.py)
    channels: int = 32  # of the convolutional front end
    hidden: int = 128  # per direction
    layers: int = 3
    pyramid: int = 1  # halvings of time between BiLSTM layers
    dropout: float = 0.1
    # what the attention scores each position by: the BiLSTM's output (context), or the
    # convolutional front end's at that position alone (local): what is said there, not what
    # the recurrence has heard up to it, so the attention finds a word where it is spoken
    keys: Literal["context", "local"] = "context"

    def problems(self) -> list[str]:
        found = [f"{n}: must be > 0, got {getattr(self, n)}" for n in ("channels", "hidden", "layers")
                 if not getattr(self, n) > 0]
        if not 0 <= self.pyramid < max(self.layers, 1):
            found.append(f"pyramid: must be in [0, layers - 1 = {self.layers - 1}], got {self.pyramid}")
        if not 0 <= self.dropout < 1:
            found.append(f"dropout: must be in [0, 1), got {self.dropout}")
        return found


@dataclass(frozen=True)
class SplitConfig:
    """One of: ``manifest`` (mmdesc's TSV: path, transcript, word spans), ``librispeech`` (a
    LibriSpeech split folder of ``*.trans.txt`` and FLAC files), ``commonvoice`` (a Common Voice
    TSV, e.g. ``cv/en/test.tsv``). ``audio``: the folder the manifest's or Common Voice's paths
    are relative to (default: the manifest's folder; Common Voice: ``clips`` beside the TSV)."""

    manifest: str | None = None
    librispeech: str | None = None
    commonvoice: str | None = None
    audio: str | None = None

    def problems(self) -> list[str]:
        given = [n for n in ("manifest", "librispeech", "commonvoice") if getattr(self, n)]
        if len(given) != 1:
            return [f"manifest: give exactly one of manifest, librispeech, commonvoice (got "
                    f"{', '.join(given) if given else 'none'})"]
        return []


# ---------------------------------------------------------------------------------------------
# Decoding


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:120]


def _open(path):
    """The container and its first audio stream; MediaError when there is none."""
    import av

    check_file(path, "a sound file")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        raise MediaError(path, "not a sound file, or a format FFmpeg cannot read") from None
    if not container.streams.audio:
        container.close()
        raise MediaError(path, "has no audio stream")
    return container, container.streams.audio[0]


def _declared_seconds(container, stream) -> float | None:
    """Duration from the container header (no decoding), or None when it says nothing."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def decode(path, max_seconds: float = 60.0) -> np.ndarray:
    """The audio of ``path`` as float32 (n,) samples at 16 kHz, mono, in [-1, 1].

    Any rate and channel layout is resampled and mixed down by FFmpeg (libswresample).
    Warns (MmdescWarning) when the audio is cut at ``max_seconds`` or ends well before its
    header says (a truncated file). Raises MediaError for anything with no decodable audio.
    """
    import av

    container, stream = _open(path)
    cap = int(max_seconds * RATE)
    chunks, n, cut, broken = [], 0, False, None
    with container:
        declared = _declared_seconds(container, stream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        try:
            for frame in container.decode(stream):
                frame.pts = None  # the resampler keeps its own clock: no gaps from odd timestamps
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))  # (1, n) -> (n,)
                    n += chunks[-1].size
                if n >= cap:
                    cut = True
                    break
            if not cut:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))  # (1, n) -> (n,)
                    n += chunks[-1].size
        except (av.error.FFmpegError, ValueError) as e:
            broken = e
    if not n:
        why = f"corrupt audio data ({_short(broken)})" if broken else "no audio samples in it"
        raise MediaError(path, why)
    x = np.concatenate(chunks)[:cap]
    if not np.abs(np.nan_to_num(x)).max() > SILENT:
        raise MediaError(path, f"digital silence: {n / RATE:.1f} s without a sound in it, nothing to transcribe")
    if cut:
        warnings.warn(f"{path}: audio of {declared or n / RATE:.1f} s cut to max_seconds={max_seconds:g}",
                      MmdescWarning, stacklevel=2)
    elif broken is not None or (declared and n / RATE < 0.9 * declared - 0.1):
        warnings.warn(f"{path}: truncated or corrupt, read {n / RATE:.2f} s"
                      + (f" of {declared:.2f} s" if declared else ""), MmdescWarning, stacklevel=2)
    return np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)


def fbank(samples: np.ndarray, n_mels: int = 80, frame_shift_ms: float = 10.0,
          frame_length_ms: float = 25.0) -> Tensor:
    """float32 16 kHz samples (n,) -> log-mel filterbank (T, n_mels), Kaldi's definition.

    Audio shorter than one window is zero-padded to one frame, so T >= 1. Finite for any
    input: the DC offset is removed per frame and the log has a floor."""
    import torchaudio.compliance.kaldi as kaldi

    window = int(round(RATE * frame_length_ms / 1000))
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if x.numel() < window:
        x = torch.nn.functional.pad(x, (0, window - x.numel()))
    feats = kaldi.fbank(x[None] * 32768.0, num_mel_bins=n_mels, frame_length=frame_length_ms,
                        frame_shift=frame_shift_ms, dither=0.0, energy_floor=0.0,
                        sample_frequency=RATE)  # (T, n_mels); Kaldi's scale of 16-bit samples
    return torch.nan_to_num(feats, nan=0.0, neginf=math.log(1.1920928955078125e-07))


def narrowband(samples: np.ndarray, rate: int = 8000) -> np.ndarray:
    """16 kHz samples (n,) -> the same, heard through ``rate``: resampled there and back with
    FFmpeg's resampler, the one that reads an 8 kHz file (the band above rate / 2 is gone)."""
    import av

    def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
        frame = av.AudioFrame.from_ndarray(x[None], format="flt", layout="mono")  # (n,) -> (1, n)
        frame.sample_rate = src
        resampler = av.AudioResampler(format="flt", layout="mono", rate=dst)
        out = resampler.resample(frame) + resampler.resample(None)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in out]) if out else np.zeros(0, np.float32)

    x = np.ascontiguousarray(samples, dtype=np.float32)
    y = resample(resample(x, RATE, rate), rate, RATE)[: x.size]
    return np.pad(y, (0, x.size - y.size))


def n_frames(seconds: float, frame_shift_ms: float, frame_length_ms: float) -> int:
    """Frames ``fbank`` gives for ``seconds`` of audio (at least 1)."""
    n, shift, window = int(round(seconds * RATE)), int(round(RATE * frame_shift_ms / 1000)), \
        int(round(RATE * frame_length_ms / 1000))
    return max(1, 1 + (n - window) // shift) if n >= window else 1


# ---------------------------------------------------------------------------------------------
# Reading


class Reader:
    """Sound file -> ``{"feats": float16 (T, n_mels) log-mel, "seconds": float}``.

    ``normalise``: ``utterance`` (each utterance to zero mean, unit variance per bin),
    ``global`` (statistics of up to ``fit_items`` training files, fitted by ``fit`` and saved
    in ``state()``) or ``none``. Raises :class:`MediaError` for anything that is not usable
    audio.
    """

    def __init__(self, n_mels: int = 80, frame_shift_ms: float = 10.0, frame_length_ms: float = 25.0,
                 normalise: str = "utterance", max_seconds: float = 60.0, fit_items: int = 300,
                 freq_masks: int = 2, freq_width: int = 12, time_masks: int = 2, time_width: int = 20,
                 time_fraction: float = 0.15, narrowband: float = 0.0):
        if normalise not in NORMALISE:
            raise ValueError(f"normalise: {normalise!r} is not one of {{{', '.join(NORMALISE)}}}")
        self.n_mels, self.shift, self.window = n_mels, frame_shift_ms, frame_length_ms
        self.normalise, self.max_seconds, self.fit_items = normalise, max_seconds, fit_items
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width, self.time_fraction = time_masks, time_width, time_fraction
        self.narrowband = narrowband
        self.mean: Tensor | None = None  # (n_mels,) global statistics
        self.std: Tensor | None = None

    # --- what the model keeps -------------------------------------------------------------
    def fit(self, examples: Sequence[Example]) -> None:
        """Global normalisation: per-bin mean and deviation over (a sample of) the training files."""
        if self.normalise != "global":
            return
        from mmdesc.data import read_sources

        rng = random.Random(0)
        sources = [ex.source for ex in examples]
        sample = rng.sample(sources, min(len(sources), self.fit_items))
        feats = [it["feats"].float() for it in read_sources(self, sample) if not isinstance(it, MediaError)]
        if not feats:
            raise MediaError(sample[0] if sample else "<training split>", "no readable file to fit "
                             "the global feature statistics on")
        x = torch.cat(feats)  # (sum T, n_mels)
        self.mean, self.std = x.mean(0), x.std(0).clamp(min=1e-3)

    def state(self) -> dict:
        if self.mean is None:
            return {}
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state(self, state: dict) -> None:
        if state.get("mean") is not None:
            self.mean = torch.tensor(state["mean"], dtype=torch.float32)
            self.std = torch.tensor(state["std"], dtype=torch.float32)

    def encoder_kwargs(self) -> dict:
        return {"n_mels": self.n_mels, "frame_shift_ms": self.shift, "frame_length_ms": self.window}

    # --- items ------------------------------------------------------------------------------
    def length(self, item: dict) -> int:
        return int(item["feats"].shape[0])

    def probe(self, path) -> int:
        """Feature frames, from the container header's duration (no decoding); raises MediaError
        for a missing or empty file, or one without an audio stream."""
        container, stream = _open(path)
        with container:
            seconds = _declared_seconds(container, stream)
        seconds = min(seconds if seconds is not None else self.max_seconds, self.max_seconds)
        return n_frames(seconds, self.shift, self.window)

    def load(self, path) -> dict:
        samples = decode(path, self.max_seconds)
        feats = fbank(samples, self.n_mels, self.shift, self.window)
        item = {"feats": feats.to(torch.float16), "seconds": samples.size / RATE}
        if self.narrowband > 0:  # what augment() may pass through the telephone band (16-bit)
            item["samples"] = torch.from_numpy(np.round(samples * 32767).astype(np.int16))
        return item

    def augment(self, item: dict, rng: random.Random) -> dict:
        """Training only. A share ``narrowband`` of the utterances is heard through 8 kHz
        (resampled down and back up: nothing above 4 kHz, as in a telephone recording or any
        8 kHz file), then SpecAugment (Park et al. 2019): ``freq_masks`` bands of mel bins and
        ``time_masks`` runs of frames set to the mean (the global one, else the utterance's)."""
        item = dict(item)
        samples = item.pop("samples", None)
        if samples is not None and rng.random() < self.narrowband:
            item["feats"] = fbank(narrowband(samples.float().numpy() / 32767), self.n_mels, self.shift,
                                  self.window).to(torch.float16)
        feats = item["feats"].clone()  # (T, F)
        t, f = feats.shape
        fill = self.mean if self.mean is not None else feats.float().mean(0)  # (F,)
        fill = fill.to(feats.dtype)
        for _ in range(self.freq_masks):
            w = rng.randint(0, self.freq_width)
            f0 = rng.randint(0, f - w)
            feats[:, f0:f0 + w] = fill[f0:f0 + w]
        longest = min(self.time_width, int(self.time_fraction * t))
        for _ in range(self.time_masks):
            w = rng.randint(0, longest)
            t0 = rng.randint(0, t - w)
            feats[t0:t0 + w] = fill
        return {**item, "feats": feats}

    def collate(self, items: Sequence[dict]) -> dict[str, Tensor]:
        """Items -> ``feats`` float (B, T_max, n_mels) normalised, 0 past each end;
        ``lengths`` long (B,) frames; ``seconds`` float (B,) durations."""
        lengths = torch.tensor([it["feats"].shape[0] for it in items], dtype=torch.long)
        x = torch.zeros(len(items), int(lengths.max()), self.n_mels)
        for b, it in enumerate(items):
            x[b, : it["feats"].shape[0]] = it["feats"]
        mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
        if self.normalise == "utterance":
            n = lengths.view(-1, 1, 1).float()  # (B,) -> (B, 1, 1)
            mean = x.sum(1, keepdim=True) / n  # (B, 1, F)
            var = ((x - mean).square() * mask).sum(1, keepdim=True) / n
            x = (x - mean) / (var + 1e-5).sqrt()
        elif self.normalise == "global":
            if self.mean is None:
                raise RuntimeError("the speech reader has no global statistics: call fit() or load_state()")
            x = (x - self.mean) / self.std
        x = x * mask
        seconds = torch.tensor([float(it["seconds"]) for it in items])
        return {"feats": x, "lengths": lengths, "seconds": seconds}


# ---------------------------------------------------------------------------------------------
# Encoder


@functools.lru_cache(maxsize=16384)
def positions(frames: int, strides: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``(first, last)`` input frame under each output position after subsampling time by each
    of ``strides`` in turn (a stride-s step keeps ceil(n / s) positions, the last one possibly
    short). Its length is the subsampled length: the encoder's mask and layout both use it."""
    spans = tuple((i, i) for i in range(frames))
    for s in strides:
        spans = tuple((spans[j][0], spans[min(j + s, len(spans)) - 1][1]) for j in range(0, len(spans), s))
    return spans


@functools.lru_cache(maxsize=16384)
def time_layout(frames: int, seconds: float, frame_shift_ms: float, frame_length_ms: float,
                strides: tuple[int, ...]) -> TimeLayout:
    """Each output position's time span: frame i is centred at ``i * shift + window / 2`` and owns
    one shift around its centre, so the spans tile [0, seconds] without overlap."""
    shift, window = frame_shift_ms / 1000, frame_length_ms / 1000
    offset = (window - shift) / 2
    spans = [(first * shift + offset, (last + 1) * shift + offset) for first, last in positions(frames, strides)]
    end = max(seconds, spans[-1][1] if spans else 0.0)
    if spans:
        spans[0] = (0.0, spans[0][1])
        spans[-1] = (spans[-1][0], end)
    return TimeLayout(spans=tuple(spans), duration=float(seconds))


class Encoder(nn.Module):
    """Filterbank batch -> ContextSet of T' = ~T / (4 * 2^pyramid) vectors of ``out_dim = 2 * hidden``.

    Front end: two (conv 3x3 stride 2, BatchNorm, ReLU) over (time, mel), flattened per frame;
    then ``layers`` BiLSTMs over packed sequences, the first ``pyramid`` outputs halved in time by
    concatenating neighbouring frames. Padded positions are 0 and masked.
    """

    def __init__(self, n_mels: int = 80, frame_shift_ms: float = 10.0, frame_length_ms: float = 25.0,
                 channels: int = 32, hidden: int = 128, layers: int = 3, pyramid: int = 1, dropout: float = 0.1,
                 keys: str = "context"):
        super().__init__()
        if not 0 <= pyramid < max(layers, 1):
            raise ValueError(f"pyramid must be in [0, layers - 1], got {pyramid} with {layers} layers")
        if keys not in ("context", "local"):
            raise ValueError(f"keys {keys!r} is not one of {{context, local}}")
        self.front = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        freq = (n_mels + 3) // 4  # two stride-2 convolutions: ceil(F / 4) mel rows
        sizes = [channels * freq] + [2 * hidden * (2 if i < pyramid else 1) for i in range(layers - 1)]
        self.rnns = nn.ModuleList(nn.LSTM(d, hidden, batch_first=True, bidirectional=True) for d in sizes)
        self.drop = nn.Dropout(dropout)
        self.pyramid, self.out_dim = pyramid, 2 * hidden
        self.local = keys == "local"
        if self.local:  # the front end's features of the frames under each position, side by side
            self.key_dim = channels * freq * 2 ** pyramid
        self.shift, self.window = frame_shift_ms, frame_length_ms

    def strides(self, layer: int | None = None) -> tuple[int, ...]:
        """Time strides before BiLSTM ``layer`` (all of them when None)."""
        n = self.pyramid if layer is None else min(layer, self.pyramid)
        return FRONT_STRIDES + (2,) * n

    def forward(self, batch: dict) -> ContextSet:
        frames = batch["lengths"].tolist()
        h = self.front(batch["feats"].unsqueeze(1))  # (B, T, F) -> (B, 1, T, F) -> (B, C, T/4, F/4)
        b, c, t, f = h.shape
        h = h.permute(0, 2, 1, 3).reshape(b, t, c * f)  # (B, C, T', F') -> (B, T', C*F')
        keys = h if self.local else None
        for i, rnn in enumerate(self.rnns):
            if 0 < i <= self.pyramid:
                h = _halve(h)
                if keys is not None:
                    keys = _halve(keys)
            lens = [len(positions(n, self.strides(i))) for n in frames]
            packed = pack_padded_sequence(self.drop(h), torch.tensor(lens), batch_first=True, enforce_sorted=False)
            out, _ = rnn(packed)
            h, _ = pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])  # (B, T', 2H)
        h = self.drop(h)
        mask = torch.arange(h.shape[1], device=h.device)[None, :] < torch.tensor(lens, device=h.device)[:, None]
        seconds = batch["seconds"].tolist()
        layouts = [time_layout(n, round(s, 4), self.shift, self.window, self.strides())
                   for n, s in zip(frames, seconds)]
        return ContextSet(h, mask, layouts, keys)


def _halve(h: Tensor) -> Tensor:
    """(B, T', D) -> (B, ceil(T'/2), 2D): each pair of neighbouring frames side by side."""
    if h.shape[1] % 2:
        h = nn.functional.pad(h, (0, 0, 0, 1))  # (B, T', D) -> (B, T'+1, D)
    return h.reshape(h.shape[0], h.shape[1] // 2, 2 * h.shape[2])


# ---------------------------------------------------------------------------------------------
# What describe, the attention pictures and bench/ ask of a modality


def claims(path) -> bool:
    """Whether ``path`` holds sound and no moving picture (cover art does not count)."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            video = [s for s in container.streams.video
                     if not (s.disposition & av.stream.Disposition.attached_pic)]
            return bool(container.streams.audio) and not video
    except (av.error.FFmpegError, OSError, ValueError):
        return False


def spectrogram(samples: np.ndarray, seconds: float | None = None, height: int = 160):
    """A log-mel spectrogram picture (low frequencies at the bottom), 100 columns per second."""
    from PIL import Image

    from mmdesc.viz.canvas import colormap_array

    if seconds is not None:
        samples = samples[: max(1, int(seconds * RATE))]
    s = fbank(samples, 80).numpy()  # (T, 80)
    lo, hi = np.percentile(s, 5), np.percentile(s, 99.5)
    v = (s - lo) / max(hi - lo, 1e-6)
    rgb = colormap_array(v.T[::-1], "inferno")  # (80, T, 3), highest bin on top
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB").resize((rgb.shape[1], height), Image.NEAREST)


def backdrop(source: str, layout):
    """The spectrogram of ``source`` over the layout's duration, for attention pictures."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MmdescWarning)
        samples = decode(source, max(getattr(layout, "duration", 0.0), 0.01) + 0.05)
    return spectrogram(samples, getattr(layout, "duration", None))


def bench_inputs(root: Path, n: int) -> list[str]:
    """``n`` spoken captions (eSpeak NG, random voices, with noise) written as WAV under ``root``."""
    from mmdesc.corpora import synth

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    scenes = synth.split_scenes(7, "bench", n)
    jobs = [_job(rng, synth.captions(s)[0], VOICES, str(root / f"bench_{k:05d}.wav")) for k, s in enumerate(scenes)]
    _run(jobs)
    return [j["path"] for j in jobs]


# ---------------------------------------------------------------------------------------------
# Corpora


def read_split(split: SplitConfig, root: Path) -> list[Example]:
    """A manifest TSV, a LibriSpeech folder or a Common Voice TSV (paths resolve against root)."""
    from mmdesc.corpora import librispeech

    root = Path(root)
    audio = root / split.audio if split.audio else None
    if split.librispeech:
        return librispeech.read_librispeech(root / split.librispeech)
    if split.commonvoice:
        return librispeech.read_commonvoice(root / split.commonvoice, audio)
    return librispeech.read_manifest(root / split.manifest, audio)


# The speakers of the synthetic corpus: eSpeak NG's voice variants (each a timbre: formants,
# breath, tone), spoken with one of its English accents. A split's voices are its own: the
# valid and test voices are never heard in training.
ACCENTS = ("en", "en-us", "en-029", "en-GB-scotland", "en-GB-x-gbclan", "en-GB-x-gbcwmd",
           "en-GB-x-rp", "en-US-nyc")
VOICES = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Demonic", "Denis", "Diogo", "Gene",
    "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Mr serious",
    "Nguyen", "Reed", "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot",
    "adam", "anika", "anikaRobot", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris",
    "caleb", "croak", "david", "ed", "edward", "edward2", "f1", "f2", "f3", "f4", "f5", "fast",
    "grandma", "grandpa", "gustave", "ian", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "linda", "m1", "m2", "m3", "m4", "m5",
    "m6", "m7", "m8", "marcelo", "max", "michel", "miguel", "mike2", "norbert", "pablo", "paul",
    "pedro", "quincy", "rob", "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4",
    "robosoft5", "robosoft6", "robosoft7", "robosoft8", "sandro", "shelby", "steph", "steph2",
    "steph3", "travis", "victor", "whisper", "whisperf", "zac")
# one of each family of variants, and some single ones
TEST_VOICES = ("f4", "m6", "klatt3", "robosoft5", "iven3", "steph2", "whisperf", "RicishayMax2",
               "edward2", "Gene2", "mike2", "aunty", "norbert", "Annie", "david")
VALID_VOICES = ("f2", "m3", "klatt5", "robosoft3", "iven2", "steph3", "boris", "linda")
TRAIN_VOICES = tuple(v for v in VOICES if v not in TEST_VOICES + VALID_VOICES)
SPLIT_VOICES = {"train": TRAIN_VOICES, "valid": VALID_VOICES, "test": TEST_VOICES}


def _job(rng: random.Random, text: str, voices: Sequence[str], path: str) -> dict:
    """Everything one utterance's rendering draws at random, drawn here (so the corpus does not
    depend on how many processes render it)."""
    return {"path": path, "text": text, "voice": rng.choice(voices), "accent": rng.choice(ACCENTS),
            "rate": rng.randint(135, 215), "pitch": rng.randint(25, 75), "range": rng.randint(20, 85),
            "gap": rng.choice((0, 0, 0, 1, 2)), "lead": rng.uniform(0.05, 0.35), "tail": rng.uniform(0.05, 0.3),
            "snr": rng.uniform(10.0, 40.0), "colour": rng.choice((0.0, 1.0, 2.0)),
            "rt60": rng.uniform(0.15, 0.6) if rng.random() < 0.6 else 0.0, "drr": rng.uniform(-2.0, 12.0),
            "peak": rng.uniform(0.15, 0.95), "seed": rng.getrandbits(32)}


_ENGINE = None  # one eSpeak NG per process


def _render(job: dict) -> tuple[float, list[list[float]], int]:
    """Speak, resample to 16 kHz, reverberate, pad with silence, add noise, write 16-bit WAV.

    Returns (seconds, word spans, how many words had no word event of their own: their
    span is a share of the group eSpeak spoke them in, see ``corpora.espeak.word_spans``)."""
    import wave

    import av

    from mmdesc.corpora.espeak import ESpeak

    global _ENGINE
    if _ENGINE is None:
        _ENGINE = ESpeak()
    spoken = _ENGINE.speak(job["text"], f"{job['accent']}+{job['voice']}", job["rate"], job["pitch"],
                           job["range"], job["gap"])
    rng = np.random.default_rng(job["seed"])
    frame = av.AudioFrame.from_ndarray(spoken.samples[None], format="s16", layout="mono")  # (n,) -> (1, n)
    frame.sample_rate = spoken.rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    x = np.concatenate([f.to_ndarray().reshape(-1) for f in resampler.resample(frame) + resampler.resample(None)])
    x = x.astype(np.float64)
    speech_s = x.size / RATE
    if job["rt60"] > 0:  # exponentially decaying noise tail after the direct sound
        t = np.arange(int(job["rt60"] * RATE)) / RATE
        tail = rng.standard_normal(t.size) * np.exp(-6.9 * t / job["rt60"])
        tail *= 10 ** (-job["drr"] / 20) / max(np.sqrt((tail ** 2).sum()), 1e-9)
        ir = np.concatenate([[1.0], tail[1:]])
        size = 1 << int(np.ceil(np.log2(x.size + ir.size)))
        x = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: x.size + ir.size // 3]
    lead, tail_n = int(job["lead"] * RATE), int(job["tail"] * RATE)
    x = np.concatenate([np.zeros(lead), x, np.zeros(tail_n)])
    level = np.sqrt(np.mean(x[lead:lead + int(speech_s * RATE)] ** 2)) if speech_s > 0 else 1.0
    size = 1 << int(np.ceil(np.log2(x.size)))  # a power of two: FFTs of odd lengths are slow
    spectrum = np.fft.rfft(rng.standard_normal(size))  # white, pink (1/f) or brown (1/f^2) noise
    spectrum /= np.maximum(np.arange(spectrum.size), 1) ** (job["colour"] / 2)
    noise = np.fft.irfft(spectrum, size)[: x.size]
    noise *= level * 10 ** (-job["snr"] / 20) / max(np.sqrt(np.mean(noise ** 2)), 1e-12)
    x = x + noise
    x *= job["peak"] / max(np.abs(x).max(), 1e-9)
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(job["path"], "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    offset = lead / RATE
    spans = [[round(a + offset, 3), round(b + offset, 3)] for a, b in spoken.words]
    return x.size / RATE, spans, sum(not t for t in spoken.timed)


def _run(jobs: list[dict], workers: int = 0) -> list[tuple[float, list[list[float]], int]]:
    """Render every job, in a pool of processes when there are many (eSpeak is process-global)."""
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < 64:
        return [_render(j) for j in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_render, jobs, chunksize=16))


def synthesize(root: Path, train: int, valid: int, test: int, seed: int) -> None:
    """Write the speech part of the synthetic corpus under ``root``.

    ``speech/{scene id}_{r}.wav`` (16 kHz, 16-bit mono) and ``speech_{split}.tsv`` (path,
    transcript, word spans, voice): every reference of a training scene is spoken once (by a
    training voice), valid and test scenes have their canonical caption spoken once, by the
    split's own voices. The scene manifest gets each scene's canonical utterance.
    """
    from mmdesc.corpora import librispeech, synth

    root = Path(root)
    synth.start_part(root, NAME)
    (root / NAME).mkdir(parents=True, exist_ok=True)
    counts = {"train": train, "valid": valid, "test": test}
    estimated = words = 0
    for split, n in counts.items():
        scenes = synth.split_scenes(seed, split, n)
        rng = random.Random(f"{seed}:{split}:{NAME}")
        jobs, owners = [], []
        for k, scene in enumerate(scenes):
            refs = synth.captions(scene)
            for r, text in enumerate(refs if split == "train" else refs[:1]):
                rel = f"{NAME}/{synth.scene_id(split, k)}_{r}.wav"
                jobs.append(_job(rng, text, SPLIT_VOICES[split], str(root / rel)))
                owners.append((synth.scene_id(split, k), r, rel))
        rendered = _run(jobs)
        rows, entries = [], {}
        for job, (sid, r, rel), (seconds, spans, shared) in zip(jobs, owners, rendered):
            estimated, words = estimated + shared, words + len(spans)
            rows.append((rel, job["text"], spans, f"{job['accent']}+{job['voice']}"))
            if r == 0:
                entries[sid] = {"file": rel, "caption": job["text"], "spans": spans,
                                "voice": rows[-1][3], "seconds": round(seconds, 3)}
        librispeech.write_manifest(root / f"{NAME}_{split}.tsv", rows)
        synth.add_to_manifest(root, split, NAME, entries, scenes)
    synth.mark_complete(root, NAME, {"seed": seed, **counts, "words": words, "words_in_shared_events": estimated})
