"""Video: a clip becomes T sampled frames, and a (2+1)-D CNN turns them into T' clip vectors
on a time axis (Yao et al. 2015, "Describing Videos by Exploiting Temporal Structure").

Reading is PyAV (FFmpeg): any container and codec FFmpeg decodes. Frames are sampled as a
fixed number spread over the clip (``frames``) or at a rate (``fps``), at the real
timestamps of the frames nearest to the targets; the reader seeks over gaps longer than the
key-frame interval it has seen, so a long file costs about its sampled frames, not its
length. Frames are scaled (and converted to RGB) by FFmpeg's scaler, one frame at a time,
to ``size`` x ``size``; a display rotation in the container is applied. ``max_duration``
caps how much of a file is read (with a warning), ``max_frames`` how many frames a rate
asks for.

Every sampled frame stands for the time span between the midpoints to its neighbours, so
the spans tile ``[0, duration]``; an encoder position that pools several frames covers
their spans. The layout is a :class:`TimeLayout` (start/end seconds per position), or with
``grid > 1`` a :class:`TimeGridLayout` (time segments x a grid of cells per segment).

Backbones: ``small`` (a (2+1)-D CNN from scratch, cheap on CPU), torchvision's
``r3d_18``/``mc3_18``/``r2plus1d_18`` (Kinetics weights from a local file only; use them
with ``mean: [0.43216, 0.394666, 0.37645]``, ``std: [0.22803, 0.22145, 0.216989]``), or
``frames``: an image backbone of the image modality applied per frame (``frame_backbone``,
e.g. the pretrained EfficientNet-Lite0); each followed by the same temporal layers and clip
summary. Frozen (``finetune: none``), top stage only, or fine-tuned. Nothing is ever downloaded.

The synthetic part (``synthesize``) puts the shared scenes in motion: each object appears,
disappears or moves (up, down, left, right) in turn, about a second each; the captions say
what happens in that order ("a red circle moves left , then a blue square appears") and each
event's time span is the ground truth of the words that name its object and its motion.
"""
from __future__ import annotations

import math
import os
import random
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdesc.config import EncoderTransfer
from mmdesc.contexts import ContextSet, GridLayout, TimeGridLayout, TimeLayout
from mmdesc.corpora import Example
from mmdesc.errors import ConfigError, MediaError, MmdescWarning
from mmdesc.media import check_file

NAME = "video"  # this modality's key in MODALITIES, its corpus part and manifest forms
SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".ogv", ".3gp",
            ".wmv")

BACKBONES = ("small", "r3d_18", "mc3_18", "r2plus1d_18", "frames")
VIDEO_NETS = ("r3d_18", "mc3_18", "r2plus1d_18")  # torchvision.models.video
FINETUNES = ("all", "top", "none")
TEMPORALS = ("gru", "conv", "none")
MIN_SEEK_GAP = 1.0  # seconds: closer targets are reached by decoding on, not by seeking


@dataclass(frozen=True)
class ReaderConfig:
    frames: int = 16  # frames spread evenly over the clip (when fps is 0)
    fps: float = 0.0  # > 0: sample at this rate instead, at most max_frames
    size: int = 64  # frames are scaled to size x size by the decoder's scaler
    max_frames: int = 64
    max_duration: float = 600.0  # seconds read from the start of a longer file (with a warning)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    threads: int = 0  # decoder threads; 0 = FFmpeg's choice
    max_pixels: int = 40_000_000  # larger frames are refused

    def problems(self) -> list[str]:
        found = [f"{n}: must be > 0, got {getattr(self, n)}"
                 for n in ("frames", "size", "max_frames", "max_duration", "max_pixels") if not getattr(self, n) > 0]
        found += [f"{n}: must be >= 0, got {getattr(self, n)}" for n in ("fps", "threads") if getattr(self, n) < 0]
        return found


@dataclass(frozen=True)
class EncoderConfig(EncoderTransfer):  # + init_from, unfreeze_at, backbone_lr (mmdesc/transfer.py)
    backbone: Literal["small", "r3d_18", "mc3_18", "r2plus1d_18", "frames"] = "small"
    frame_backbone: Literal["small", "resnet18", "resnet34", "resnet50", "efficientnet_lite0"] = "small"
    channels: int = 64  # width of the small backbones
    time_stride: int = 2  # small backbone: frames per position (1, 2 or 4)
    grid: int = 1  # grid x grid spatial positions per time step (1: positions on the time axis only)
    pool: int = 4  # each position's vector projects a pool x pool map of its cell
    dim: int = 128
    temporal: Literal["gru", "conv", "none"] = "none"  # what relates the positions in time (residual)
    temporal_layers: int = 1
    summary: bool = True  # add a summary of the whole clip to every position (see Encoder)
    motion: bool = False  # small backbone: also give it each frame's difference to the previous one
    pretrained: bool = False
    weights: str = ""
    finetune: Literal["all", "top", "none"] = "all"
    dropout: float = 0.0

    def problems(self) -> list[str]:
        found = [f"{n}: must be > 0, got {getattr(self, n)}" for n in ("channels", "grid", "pool", "dim")
                 if not getattr(self, n) > 0]
        if self.time_stride not in (1, 2, 4):
            found.append(f"time_stride: must be 1, 2 or 4, got {self.time_stride}")
        if self.motion and self.backbone != "small":
            found.append(f"motion: only the small backbone takes frame differences, not {self.backbone}")
        if self.temporal_layers < 0:
            found.append(f"temporal_layers: must be >= 0, got {self.temporal_layers}")
        if not 0 <= self.dropout < 1:
            found.append(f"dropout: must be in [0, 1), got {self.dropout}")
        return found


@dataclass(frozen=True)
class SplitConfig:
    annotations: str  # MSR-VTT JSON (train_val_videodatainfo.json style), MSVD CSV or descriptions .txt
    videos: str  # folder of the clips
    split: tuple[str, ...] = ()  # MSR-VTT: the videos' "split" values to keep (train, validate, test); () = all
    ids: str = ""  # a file of video ids, one a line, to keep (MSVD splits); "" = all


# ---------------------------------------------------------------------------------------------
# Decoding


def _short(e: BaseException) -> str:
    """An FFmpeg error without its errno prefix and file name, on one line."""
    msg = getattr(e, "strerror", None) or str(e).strip() or type(e).__name__
    return str(msg).splitlines()[0][:120]


def _open(path: str | os.PathLike):
    """(container, its first video stream); raises MediaError for anything without one."""
    import av

    check_file(path, "a video")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError:
        raise MediaError(path, "not a video, or truncated (FFmpeg finds no valid media data)") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(path, f"cannot open as a video ({_short(e)})") from None
    streams = [s for s in container.streams.video if not _is_cover_art(s)]
    if not streams:
        kinds = sorted({s.type for s in container.streams if s.type != "video"})
        container.close()
        what = f"only {'/'.join(kinds)}" if kinds else "no streams"
        raise MediaError(path, f"no video stream ({what})")
    return container, streams[0]


def _is_cover_art(stream) -> bool:
    import av

    return bool(stream.disposition & av.stream.Disposition.attached_pic)


@dataclass(frozen=True)
class _Header:
    start: float  # seconds, stream time of the first frame
    duration: float | None  # seconds, or None when the container does not say
    rate: float  # frames per second (a guess for variable frame rate)
    width: int
    height: int


def _header(stream, container) -> _Header:
    tb = float(stream.time_base) if stream.time_base else 0.0
    start = stream.start_time * tb if stream.start_time is not None and tb else 0.0
    if stream.duration and tb:
        duration = stream.duration * tb
    elif container.duration:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    else:
        duration = None
    rate = stream.guessed_rate or stream.average_rate or 25
    return _Header(start, duration if duration and duration > 0 else None, float(rate),
                   int(stream.codec_context.width or 0), int(stream.codec_context.height or 0))


def targets_for(duration: float, frames: int, fps: float, max_frames: int) -> list[float]:
    """Sample times in [0, duration): ``frames`` centres of equal parts, or every 1/fps s (at most max_frames)."""
    if fps > 0:
        n = max(1, min(max_frames, math.ceil(duration * fps - 1e-9)))
        return [(k + 0.5) / fps for k in range(n)]
    return [(k + 0.5) * duration / frames for k in range(frames)]


def _frame_time(frame, prev: float | None, rate: float) -> float:
    t = frame.time
    if t is not None:
        return float(t)
    return 0.0 if prev is None else prev + 1.0 / rate


class _Decoded:
    """What sampling found: one (time, array) per target, where decoding ended, how it ended."""

    def __init__(self):
        self.times: list[float] = []
        self.arrays: list[np.ndarray] = []
        self.last: float | None = None  # time of the last frame decoded
        self.short = False  # the stream ended well before the last target
        self.broken: str = ""  # the decoder's complaint, when it stopped on bad data


def sample_frames(container, stream, targets: Sequence[float], convert: Callable, rate: float) -> _Decoded:
    """The frames nearest to each of the increasing ``targets`` (stream seconds), converted.

    Decodes on from frame to frame, and seeks (to the key frame before the target) when the
    next target lies further ahead than the longest key-frame interval seen so far, so a
    sparse sample of a long file decodes about one group of pictures per sample. Targets past
    the end get the last frame. Stops early, keeping what it has, on undecodable data.
    """
    import av

    out, k = _Decoded(), 0
    tb = float(stream.time_base)
    prev: tuple[float, object] | None = None
    converted: tuple[object, np.ndarray] | None = None
    keyint = MIN_SEEK_GAP

    def take(item: tuple[float, object]) -> None:
        nonlocal converted
        t, frame = item
        if converted is None or converted[0] is not frame:
            converted = (frame, convert(frame))
        out.times.append(t)
        out.arrays.append(converted[1])

    seek_to = targets[0] if targets and targets[0] - _start(stream) > keyint else None
    while k < len(targets):
        landed, ahead = None, False
        if seek_to is not None:
            container.seek(int(seek_to / tb), stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                t = _frame_time(frame, prev[0] if prev else None, rate)
                if seek_to is not None and landed is None:
                    landed = t
                    keyint = max(keyint, seek_to - t)
                while k < len(targets) and t >= targets[k]:
                    near_prev = prev is not None and targets[k] - prev[0] < t - targets[k]
                    take(prev if near_prev else (t, frame))
                    k += 1
                prev = (t, frame)
                out.last = t
                if k < len(targets) and targets[k] - t > keyint:
                    seek_to, ahead = targets[k], True
                    break
                if k == len(targets):
                    break
        except av.error.FFmpegError as e:
            out.broken = _short(e)
        if not ahead:
            break
    if k < len(targets) and prev is not None:  # the stream ended (or broke) before these targets
        out.short = targets[-1] - prev[0] > 1.5 / rate
        while k < len(targets):
            take(prev)
            k += 1
    return out


def _start(stream) -> float:
    return stream.start_time * float(stream.time_base) if stream.start_time is not None else 0.0


def sample_spread(container, stream, n: int, limit: float, convert: Callable, rate: float) -> tuple[_Decoded, float]:
    """For a file whose duration is unknown: decode it all (up to ``limit`` s), keep n frames spread over it.

    Keeps at most 4n converted frames, halving them (and doubling the stride) when full.
    Returns the sample and the duration found.
    """
    import av

    out, kept, stride, i = _Decoded(), [], 1, 0
    start = None
    try:
        for frame in container.decode(stream):
            t = _frame_time(frame, out.last, rate)
            start = t if start is None else start
            if t - start >= limit:
                break
            if i % stride == 0:
                kept.append((t, convert(frame)))
                if len(kept) > 4 * n:
                    kept, stride = kept[::2], stride * 2
            out.last, i = t, i + 1
    except av.error.FFmpegError as e:
        out.broken = _short(e)
    if not kept:
        return out, 0.0
    duration = kept[-1][0] - start + 1.0 / rate if out.last is None else out.last - start + 1.0 / rate
    times = np.array([t for t, _ in kept])
    for target in targets_for(duration, n, 0.0, n):
        j = int(np.argmin(np.abs(times - (start + target))))
        out.times.append(float(times[j]))
        out.arrays.append(kept[j][1])
    return out, duration


def frame_spans(times: Sequence[float], duration: float) -> list[tuple[float, float]]:
    """The span each sampled frame stands for: from the midpoint to its predecessor to the one to
    its successor, the first from 0 and the last to ``duration``; the spans tile [0, duration]."""
    t = list(times)
    mids = [(a + b) / 2 for a, b in zip(t, t[1:])]
    starts, ends = [0.0] + mids, mids + [max(duration, t[-1] if t else 0.0)]
    return list(zip(starts, ends))


def _rotation(frame) -> int:
    """Quarter turns counter-clockwise that display the frame upright (container rotation)."""
    try:
        degrees = float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):
        return 0
    return int(round(degrees / 90)) % 4


# ---------------------------------------------------------------------------------------------
# Reading


class Reader:
    """Video file -> ``{"frames": uint8 (T, 3, S, S), "times": float (T,) s, "spans": float (T, 2) s,
    "duration": s, "size": (width, height)}`` (display size, after rotation).

    Raises :class:`MediaError` for a file without a decodable video stream (missing, empty,
    not media, audio only, truncated before the first frame, frames over ``max_pixels``).
    Warns (:class:`MmdescWarning`) when a file is longer than ``max_duration``, when a rate
    asks for more than ``max_frames`` frames, and when decoding stops before the end.
    """

    def __init__(self, frames: int = 16, fps: float = 0.0, size: int = 64, max_frames: int = 64,
                 max_duration: float = 600.0, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), threads: int = 0, max_pixels: int = 40_000_000):
        if frames < 1 or size < 1 or max_frames < 1 or max_duration <= 0:
            raise ValueError("frames, size, max_frames and max_duration must be positive")
        self.frames = frames
        self.fps = float(fps)
        self.size = size
        self.max_frames = max_frames
        self.max_duration = float(max_duration)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.threads = threads
        self.max_pixels = max_pixels

    def fit(self, examples: Sequence[Example]) -> None:
        """Nothing to learn from data."""

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        """Nothing to restore."""

    def encoder_kwargs(self) -> dict:
        return {"max_frames": self.max_frames if self.fps > 0 else self.frames}

    def length(self, item: dict) -> int:
        return int(item["frames"].shape[0])

    def probe(self, source: str | os.PathLike) -> int:
        """The number of frames ``load`` will sample, from the container's header (no decoding)."""
        container, stream = _open(source)
        with container:
            head = _header(stream, container)
        if self.fps <= 0:
            return self.frames
        if head.duration is None:
            return self.max_frames
        return len(targets_for(min(head.duration, self.max_duration), self.frames, self.fps, self.max_frames))

    def load(self, path: str | os.PathLike) -> dict:
        container, stream = _open(path)
        with container:
            return self._read(str(path), container, stream)

    def _read(self, path: str, container, stream) -> dict:
        import av
        from av.video.reformatter import VideoReformatter

        head = _header(stream, container)
        if head.width * head.height > self.max_pixels:
            raise MediaError(path, f"frames of {head.width}×{head.height} pixels exceed max_pixels={self.max_pixels}")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        s, turns, scaler = self.size, [None], VideoReformatter()  # one scaler: FFmpeg sets it up once

        def convert(frame) -> np.ndarray:
            if turns[0] is None:
                turns[0] = _rotation(frame)
            a = scaler.reformat(frame, width=s, height=s, format="rgb24", interpolation="AREA")
            a = a.to_ndarray()  # (S, S, 3)
            return np.rot90(a, turns[0]) if turns[0] else a

        try:
            if head.duration is None and self.fps <= 0:
                got, duration = sample_spread(container, stream, self.frames, self.max_duration, convert, head.rate)
            else:
                duration = head.duration if head.duration is not None else self.max_duration
                duration = self._capped(path, duration)
                targets = targets_for(duration, self.frames, self.fps, self.max_frames)
                got = sample_frames(container, stream, [head.start + t for t in targets], convert, head.rate)
        except av.error.FFmpegError as e:
            raise MediaError(path, f"cannot decode the video ({_short(e)})") from None
        if not got.arrays:
            why = f" ({got.broken})" if got.broken else ""
            raise MediaError(path, f"no decodable video frames{why}")
        times = [t - head.start for t in got.times]
        end = (got.last - head.start + 1.0 / head.rate) if got.last is not None else duration
        if got.broken or got.short:
            what = f"decoding stopped ({got.broken})" if got.broken else "the frames end"
            warnings.warn(f"{path}: {what} at {end:.2f} s of {duration:.2f} s; the rest repeats the last frame",
                          MmdescWarning, stacklevel=2)
            duration = max(min(duration, end), times[-1])
        frames = torch.from_numpy(np.ascontiguousarray(np.stack(got.arrays)))  # (T, S, S, 3)
        frames = frames.permute(0, 3, 1, 2).contiguous()  # (T, S, S, 3) -> (T, 3, S, S)
        w, h = head.width, head.height
        if turns[0] in (1, 3):
            w, h = h, w
        return {"frames": frames, "times": torch.tensor(times, dtype=torch.float32),
                "spans": torch.tensor(frame_spans(times, duration), dtype=torch.float32),
                "duration": float(duration), "size": (w, h)}

    def _capped(self, path: str, duration: float) -> float:
        if duration > self.max_duration:
            warnings.warn(f"{path}: {duration:.0f} s long; only the first {self.max_duration:g} s are read "
                          f"(input.max_duration)", MmdescWarning, stacklevel=3)
            duration = self.max_duration
        if self.fps > 0 and duration * self.fps > self.max_frames + 1e-6:
            warnings.warn(f"{path}: {self.fps:g} frames/s over {duration:.1f} s would be "
                          f"{math.ceil(duration * self.fps)} frames; sampling the first {self.max_frames} "
                          f"(input.max_frames)", MmdescWarning, stacklevel=3)
        return duration

    def collate(self, items: Sequence[dict]) -> dict[str, Tensor]:
        """Items -> ``pixels`` float (B, 3, T, S, S) normalised, zero past each clip's frames;
        ``lengths`` long (B,); ``spans`` float (B, T, 2); ``durations`` float (B,); ``sizes`` long (B, 2)."""
        lengths = torch.tensor([it["frames"].shape[0] for it in items], dtype=torch.long)
        t, s = int(lengths.max()), items[0]["frames"].shape[-1]
        frames = torch.zeros(len(items), t, 3, s, s, dtype=torch.uint8)
        spans = torch.zeros(len(items), t, 2)
        for b, it in enumerate(items):
            frames[b, : it["frames"].shape[0]] = it["frames"]
            spans[b, : it["spans"].shape[0]] = it["spans"]
        x = frames.permute(0, 2, 1, 3, 4).float().div_(255.0)  # (B, T, 3, S, S) -> (B, 3, T, S, S)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1, 1)  # (3,) -> (1, 3, 1, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1, 1)  # (3,) -> (1, 3, 1, 1, 1)
        x.sub_(mean).div_(std)
        real = torch.arange(t)[None, :] < lengths[:, None]  # (B, T)
        x.mul_(real[:, None, :, None, None])
        return {"pixels": x, "lengths": lengths, "spans": spans,
                "durations": torch.tensor([it["duration"] for it in items], dtype=torch.float32),
                "sizes": torch.tensor([it["size"] for it in items], dtype=torch.long)}


def claims(path: str | os.PathLike) -> bool:
    """Whether the file holds a video stream (cover art of an audio file does not count)."""
    try:
        container, _ = _open(path)
    except MediaError:
        return False
    container.close()
    return True


def backdrop(source: str, layout, height: int = 72):
    """A strip of key frames under the time axis: for each position, the frame at its centre
    time, as wide as its span (centre-cropped). None when the file cannot be read."""
    from av.video.reformatter import VideoReformatter
    from PIL import Image

    times = layout.time if isinstance(layout, TimeGridLayout) else layout
    spans = list(times.spans)
    if not spans:
        return None
    try:
        container, stream = _open(source)
    except MediaError:
        return None
    with container:
        head = _header(stream, container)
        w, h = max(head.width, 1), max(head.height, 1)
        thumb_h = height
        thumb_w = max(1, round(height * w / h))
        turns, scaler = [None], VideoReformatter()

        def convert(frame) -> np.ndarray:
            if turns[0] is None:
                turns[0] = _rotation(frame)
            tw, th = (thumb_h, thumb_w) if turns[0] in (1, 3) else (thumb_w, thumb_h)
            a = scaler.reformat(frame, width=tw, height=th, format="rgb24", interpolation="AREA").to_ndarray()
            return np.rot90(a, turns[0]) if turns[0] else a

        stream.thread_type = "AUTO"
        centres = [head.start + (a + b) / 2 for a, b in spans]
        try:
            got = sample_frames(container, stream, centres, convert, head.rate)
        except Exception:  # noqa: BLE001 - a picture without its backdrop is still a picture
            return None
    if not got.arrays:
        return None
    duration = float(times.duration) or spans[-1][1]
    thumb_w = got.arrays[0].shape[1]
    total = max(len(spans) * thumb_w, 1)
    strip = Image.new("RGB", (total, thumb_h), (0, 0, 0))
    for (a, b), arr in zip(spans, got.arrays):
        x0, x1 = round(a / duration * total), round(b / duration * total)
        if x1 <= x0:
            continue
        img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
        cut = max(0, (img.width - (x1 - x0)) // 2)
        if img.width > x1 - x0:
            tile = img.crop((cut, 0, cut + (x1 - x0), img.height))
        else:
            tile = img.resize((x1 - x0, thumb_h))
        strip.paste(tile, (x0, 0))
    return strip


# ---------------------------------------------------------------------------------------------
# Backbones: each maps (B, 3, T, S, S) -> (B, C, T', h, w), with attributes ``channels`` (C),
# ``stages`` (submodule names in order) and ``top`` (how many trailing stages train with
# finetune="top").


class Conv2Plus1D(nn.Sequential):
    """A 3 x 3 spatial convolution, then (with ``time_kernel`` 3 or a temporal stride) a temporal
    one across frames, each with BN and ReLU (Tran et al. 2018, "A Closer Look at Spatiotemporal
    Convolutions")."""

    def __init__(self, cin: int, cout: int, stride: int = 1, time_stride: int = 1, time_kernel: int = 3):
        layers = [nn.Conv3d(cin, cout, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
                  nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
        if time_kernel > 1 or time_stride > 1:
            k = max(time_kernel, 3)
            layers += [nn.Conv3d(cout, cout, (k, 1, 1), (time_stride, 1, 1), (k // 2, 0, 0), bias=False,
                                 padding_mode="replicate"),  # the first and last frames are not special
                       nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class SmallR2Plus1D(nn.Module):
    """Three stages, spatial stride 8, temporal stride ``time_stride``, widths c/4, c/2, c:
    a 2-D stage, then two stages whose first block also convolves 3 frames. Cheap enough to
    train from scratch on CPU (16 x 64 x 64 -> 8 x 8 x 8), and each output position sees
    7 frames around its own (5 with time_stride 1): enough to see motion, local enough for
    attention to find when something happens."""

    def __init__(self, channels: int = 64, time_stride: int = 2, motion: bool = False):
        super().__init__()
        c1, c2, c3 = max(1, channels // 4), max(1, channels // 2), channels
        t2, t3 = (1, 1) if time_stride == 1 else (2, 1) if time_stride == 2 else (2, 2)
        self.motion = motion
        self.stage1 = Conv2Plus1D(6 if motion else 3, c1, 2, time_kernel=1)
        self.stage2 = nn.Sequential(Conv2Plus1D(c1, c2, 2, t2), Conv2Plus1D(c2, c2, time_kernel=1))
        self.stage3 = nn.Sequential(Conv2Plus1D(c2, c3, 2, t3), Conv2Plus1D(c3, c3, time_kernel=1))
        self.channels = c3
        self.stages = ("stage1", "stage2", "stage3")
        self.top = 1
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        if self.motion:  # what changed since the previous frame (nothing, for the first)
            diff = torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:] - x[:, :, :-1]], dim=2)  # (B, 3, T, S, S)
            x = torch.cat([x, diff], dim=1)  # (B, 6, T, S, S)
        return self.stage3(self.stage2(self.stage1(x)))


class VideoResNetTrunk(nn.Sequential):
    """A torchvision video ResNet without avgpool/fc; parameter names match torchvision's."""

    def __init__(self, name: str):
        import torchvision

        net = getattr(torchvision.models.video, name)(weights=None)
        names = ("stem", "layer1", "layer2", "layer3", "layer4")
        super().__init__(OrderedDict((n, getattr(net, n)) for n in names))
        self.channels = net.fc.in_features
        self.stages = names
        self.top = 1


class FrameTrunk(nn.Module):
    """An image backbone applied to every frame: (B, 3, T, S, S) -> (B, C, T, h, w)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.net = backbone
        self.channels = backbone.channels
        self.stages = tuple(f"net.{s}" for s in backbone.stages)
        self.top = backbone.top

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B, 3, T, S, S) -> (B*T, 3, S, S)
        f = self.net(frames)  # (B*T, C, h', w')
        f = f.reshape(b, t, *f.shape[1:])  # (B*T, C, h', w') -> (B, T, C, h', w')
        return f.transpose(1, 2)  # (B, T, C, h', w') -> (B, C, T, h', w')


def build_backbone(backbone: str, frame_backbone: str, channels: int, time_stride: int, pretrained: bool,
                   weights: str, motion: bool = False) -> nn.Module:
    from mmdesc.modalities import image

    if backbone not in BACKBONES:
        raise ValueError(f"backbone: {backbone!r} is not one of {{{', '.join(BACKBONES)}}}")
    if backbone == "frames":
        return FrameTrunk(image.build_backbone(frame_backbone, channels, pretrained, weights))
    if backbone == "small":
        if pretrained or weights:
            raise ConfigError("encoder.pretrained: the small video backbone has no pretrained weights (train it "
                              "from scratch, or use backbone: frames with a pretrained frame_backbone)")
        return SmallR2Plus1D(channels, time_stride, motion)
    path = weights or (image._torchvision_cached(backbone) if pretrained else "")  # never downloads
    trunk = VideoResNetTrunk(backbone)
    if path:
        image.load_trunk_weights(trunk, path)
    return trunk


# ---------------------------------------------------------------------------------------------
# Encoder


def position_spans(spans: Tensor, length: int, t_out: int, t_in: int) -> tuple[tuple[float, float], ...]:
    """Spans of the positions a clip of ``length`` real frames (of ``t_in`` in the batch) gets
    after a backbone that turns ``t_in`` frames into ``t_out`` positions: each covers its frames.
    spans: (T_in, 2). Returns ceil(length * t_out / t_in) spans."""
    n = max(1, math.ceil(length * t_out / t_in - 1e-9))
    s = spans[:length].tolist()
    out = []
    for j in range(n):
        a = min(length - 1, math.floor(j * t_in / t_out))
        b = min(length, max(a + 1, math.ceil((j + 1) * t_in / t_out)))
        out.append((s[a][0], s[b - 1][1]))
    return tuple(out)


class Encoder(nn.Module):
    """Clip batch -> ContextSet of T' (x grid²) position vectors, each ``out_dim = dim`` wide.

    The backbone's map (B, C, T', h, w) is average-pooled to (grid·pool) x (grid·pool) cells;
    each of the grid x grid cells becomes one position per time step, its pool x pool map
    projected to ``dim`` (so a position still knows where in its cell things are, which is
    what tells "moves left" from "moves right"). Then, per cell, ``temporal_layers`` residual
    layers relate the time steps: a bidirectional GRU (``gru``: every position learns what
    happens before and after it, e.g. whether more events follow) or a 3-step convolution
    (``conv``: positions stay local). ``summary`` adds one vector to every position: what a
    bidirectional GRU read over the whole clip (how many things happen, in which order), which
    reaches the decoder through every attended context and its initial (mean) state while the
    positions' differences stay local. A learned embedding of the time step (and cell) is added
    and the vectors are layer-normalised. Positions are time-major: n = t * grid² + cell.
    """

    def __init__(self, max_frames: int, backbone: str = "small", frame_backbone: str = "small", channels: int = 64,
                 time_stride: int = 2, grid: int = 1, pool: int = 4, dim: int = 128, temporal: str = "none",
                 temporal_layers: int = 1, summary: bool = True, motion: bool = False, pretrained: bool = False,
                 weights: str = "", finetune: str = "all", dropout: float = 0.0):
        super().__init__()
        if finetune not in FINETUNES:
            raise ValueError(f"finetune: {finetune!r} is not one of {{{', '.join(FINETUNES)}}}")
        if temporal not in TEMPORALS:
            raise ValueError(f"temporal: {temporal!r} is not one of {{{', '.join(TEMPORALS)}}}")
        if motion and backbone != "small":
            raise ValueError(f"motion: only the small backbone takes frame differences, not {backbone}")
        self.backbone = build_backbone(backbone, frame_backbone, channels, time_stride, pretrained, weights, motion)
        self.grid, self.pool = grid, pool
        c = self.backbone.channels
        self.proj = nn.Linear(c * pool * pool, dim)
        self.temporal = temporal if temporal_layers else "none"
        if self.temporal == "gru":
            self.rnn = nn.GRU(dim, dim, num_layers=temporal_layers, batch_first=True, bidirectional=True)
            self.merge = nn.Linear(2 * dim, dim)
        elif self.temporal == "conv":
            self.convs = nn.ModuleList(nn.Conv1d(dim, dim, 3, padding=1) for _ in range(temporal_layers))
        self.summary = nn.GRU(dim, dim, batch_first=True, bidirectional=True) if summary else None
        self.summary_proj = nn.Linear(2 * dim, dim) if summary else None
        self.norm = nn.LayerNorm(dim)
        self.time = nn.Parameter(torch.randn(max(1, max_frames), dim) * 0.02)
        self.cell = nn.Parameter(torch.randn(grid * grid, dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = dim
        from mmdesc.modalities.image import freeze_stages

        self._frozen = freeze_stages(self.backbone, finetune)
        self.finetune = finetune
        self.train()

    def train(self, mode: bool = True) -> "Encoder":
        super().train(mode)
        for name in self._frozen:  # frozen stages keep their BatchNorm statistics
            self.backbone.get_submodule(name).eval()
        return self

    def forward(self, batch: dict) -> ContextSet:
        return self.head(self.features(batch))

    def features(self, batch: dict) -> ContextSet:
        """What the backbone alone computes: per time step and cell, its pool x pool map as one
        vector (B, T'*g*g, C*p*p), time-major, with the mask of the real steps and the layouts
        (what mmdesc/features.py caches when the backbone is frozen)."""
        x = batch["pixels"]  # (B, 3, T, S, S)
        f = self.backbone(x)  # (B, C, T', h, w)
        b, c, t_out = f.shape[:3]
        g, p = self.grid, self.pool
        layouts, real = self._layouts(batch, t_out, x.shape[2])
        f = F.adaptive_avg_pool3d(f, (t_out, g * p, g * p))  # (B, C, T', g*p, g*p)
        f = f.reshape(b, c, t_out, g, p, g, p)  # (B, C, T', g*p, g*p) -> (B, C, T', g, p, g, p)
        f = f.permute(0, 2, 3, 5, 1, 4, 6).reshape(b, t_out * g * g, c * p * p)  # -> (B, T'*g*g, C*p*p)
        steps = torch.arange(t_out, device=f.device)[None, :] < real.to(f.device)[:, None]  # (B, T')
        mask = steps[:, :, None].expand(b, t_out, g * g).reshape(b, t_out * g * g)  # (B, T', g*g) -> (B, N)
        return ContextSet(f, mask, layouts)

    def head(self, ctx: ContextSet) -> ContextSet:
        """The rest of the encoder over ``features``: projection, temporal layers, clip summary,
        time and cell embeddings, layer norm, dropout."""
        g = self.grid
        b, n, cpp = ctx.vectors.shape
        t_out = n // (g * g)
        real = ctx.mask.reshape(b, t_out, g * g)[:, :, 0].sum(1)  # (B, N) -> (B, T', g*g) -> (B,)
        f = ctx.vectors.reshape(b, t_out, g * g, cpp).transpose(1, 2)  # (B, N, C*p*p) -> (B, g*g, T', C*p*p)
        f = f.reshape(b * g * g, t_out, cpp)  # (B, g*g, T', C*p*p) -> (B*g*g, T', C*p*p)
        v = self._relate(self.proj(f), real.repeat_interleave(g * g))  # (B*g*g, T', D)
        if self.summary is not None:
            v = v + self._summary(v, real.repeat_interleave(g * g))[:, None, :]  # (B*g*g, T', D)
        v = v.reshape(b, g * g, t_out, -1).transpose(1, 2)  # (B*g*g, T', D) -> (B, T', g*g, D)
        time = self.time[torch.arange(t_out, device=v.device).clamp(max=self.time.shape[0] - 1)]  # (T', D)
        v = self.norm(v + time[:, None, :] + self.cell[None, :, :])  # (B, T', g*g, D)
        v = self.dropout(v.reshape(b, t_out * g * g, -1))  # (B, T', g*g, D) -> (B, T'*g*g, D)
        return ContextSet(v, ctx.mask, ctx.layouts)

    def _relate(self, v: Tensor, lengths: Tensor) -> Tensor:
        """Residual temporal layers over (N, T', D) sequences of ``lengths`` real steps."""
        if self.temporal == "gru":
            from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

            packed = pack_padded_sequence(v, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=v.shape[1])  # (N, T', 2D)
            return v + self.merge(out)
        if self.temporal == "conv":
            u = v.transpose(1, 2)  # (N, T', D) -> (N, D, T')
            for conv in self.convs:
                u = u + F.relu(conv(u))
            return u.transpose(1, 2)  # (N, D, T') -> (N, T', D)
        return v

    def _summary(self, v: Tensor, lengths: Tensor) -> Tensor:
        """(N, T', D) sequences of ``lengths`` real steps -> (N, D): the last states of a
        bidirectional GRU that read each of them forwards and backwards."""
        from torch.nn.utils.rnn import pack_padded_sequence

        packed = pack_padded_sequence(v, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.summary(packed)  # (2, N, D): forwards, backwards
        return self.summary_proj(last.transpose(0, 1).reshape(v.shape[0], -1))  # (N, 2, D) -> (N, 2*D) -> (N, D)

    def _layouts(self, batch: dict, t_out: int, t_in: int) -> tuple[list, Tensor]:
        """Each clip's layout and (B,) number of real time steps."""
        g = self.grid
        lengths, durations = batch["lengths"].tolist(), batch["durations"].tolist()
        spans, sizes = batch["spans"].cpu(), batch["sizes"].tolist()
        layouts, real = [], []
        for i in range(len(lengths)):
            time_layout = TimeLayout(position_spans(spans[i], lengths[i], t_out, t_in), durations[i])
            real.append(len(time_layout))
            layouts.append(time_layout if g == 1 else
                           TimeGridLayout(time_layout, GridLayout.regular((g, g), tuple(sizes[i]))))
        return layouts, torch.tensor(real, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# Corpora


def read_split(split: SplitConfig, root: Path) -> list[Example]:
    """An MSR-VTT-style JSON or an MSVD CSV/descriptions file with a folder of clips."""
    from mmdesc.corpora.msrvtt import read_video_captions

    root = Path(root)
    return read_video_captions(root / split.annotations, root / split.videos, split=split.split,
                               ids=root / split.ids if split.ids else None)


# ---------------------------------------------------------------------------------------------
# The synthetic corpus: the shared scenes, their objects appearing, disappearing and moving


ACTIONS = ("appears", "disappears", "moves left", "moves right", "moves up", "moves down")
MOVES = {"moves left": (-1, 0), "moves right": (1, 0), "moves up": (0, -1), "moves down": (0, 1)}
SYNTH_FPS = 8
SYNTH_SPLITS = {"train": "train", "valid": "validate", "test": "test"}  # ours -> MSR-VTT's split names


@dataclass(frozen=True)
class Event:
    """Object ``obj`` (an index into the scene's objects) does ``action`` during [start, end] s;
    a move shifts it by (dx, dy) pixels, an appearance or disappearance happens at the middle."""

    obj: int
    action: str
    start: float
    end: float
    dx: float = 0.0
    dy: float = 0.0


@dataclass(frozen=True)
class Clip:
    """A scene in motion: its events in time order, one per object."""

    scene: object  # corpora.synth.Scene
    events: tuple[Event, ...]
    duration: float


def _moved_box(box: tuple, dx: float, dy: float) -> tuple:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def _swept(box: tuple, dx: float, dy: float) -> tuple:
    moved = _moved_box(box, dx, dy)
    return (min(box[0], moved[0]), min(box[1], moved[1]), max(box[2], moved[2]), max(box[3], moved[3]))


def _apart(a: tuple, b: tuple, gap: float = 1.0) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def plan_clip(scene, rng: random.Random) -> Clip:
    """Events for the scene's objects, in a random order: each appears, disappears, or moves
    (by 14-22 px on a 64 px canvas) in a direction where it stays inside and clear of the others."""
    w, h = scene.width, scene.height
    scale = min(w, h) / 64
    order = list(range(len(scene.objects)))
    rng.shuffle(order)
    t = rng.uniform(0.05, 0.15)  # the first event starts at once: its start state is part of it
    events, boxes = [], {i: [o.box] for i, o in enumerate(scene.objects)}  # every box an object takes
    for i in order:
        box, length = scene.objects[i].box, rng.uniform(0.9, 1.1)
        moves = []
        for action, (ux, uy) in MOVES.items():
            d = rng.uniform(14, 22) * scale
            swept = _swept(box, ux * d, uy * d)
            inside = swept[0] >= 1 and swept[1] >= 1 and swept[2] <= w - 1 and swept[3] <= h - 1
            if inside and all(_apart(swept, b) for j, bs in boxes.items() if j != i for b in bs):
                moves.append((action, ux * d, uy * d))
        kind = rng.random()
        if moves and kind < 0.5:
            action, dx, dy = rng.choice(moves)
            boxes[i].append(_swept(box, dx, dy))
            events.append(Event(i, action, t, t + length, dx, dy))
        else:
            events.append(Event(i, "appears" if kind < 0.75 else "disappears", t, t + length))
        t += length
    frames = math.ceil((t + rng.uniform(0.05, 0.15)) * SYNTH_FPS)
    return Clip(scene, tuple(events), frames / SYNTH_FPS)


def clip_captions(clip: Clip) -> list[str]:
    """3-5 distinct references saying what happens, in order; the first is canonical:
    "a red circle moves left , then a blue square appears"."""
    objs = clip.scene.objects
    plain = [f"{objs[e.obj].phrase(False)} {e.action}" for e in clip.events]
    sized = [f"{objs[e.obj].phrase()} {e.action}" for e in clip.events]
    wordy = [p.replace("moves left", "moves to the left").replace("moves right", "moves to the right")
             for p in plain]
    canon = " , then ".join(plain)
    extra = [" , then ".join(sized), " and then ".join(plain), " , then ".join(wordy)]
    if len(plain) > 1:
        extra += ["first " + canon, " and then ".join(sized), " , and then ".join(plain)]
    else:
        (e,) = clip.events
        noun = objs[e.obj].phrase(False)
        extra += [f"the {noun[2:]} {e.action}", f"there is {noun} that {e.action}"]
    extra = [e for e in dict.fromkeys(extra) if e != canon]
    rng = random.Random(clip.scene.variant)
    k = min(rng.randint(3, 5), 1 + len(extra))
    return [canon] + rng.sample(extra, k - 1)


def clip_regions(clip: Clip) -> dict[str, list[list[float]]]:
    """Ground truth for the canonical caption: each word naming an event's object (colour, shape)
    or its motion (moves, left, appears ...) -> the time spans [start_s, end_s] of its events."""
    regions: dict[str, list[list[float]]] = {}
    for e in clip.events:
        o = clip.scene.objects[e.obj]
        for word in (o.colour, o.shape, *e.action.split()):
            span = [round(e.start, 3), round(e.end, 3)]
            if span not in regions.setdefault(word, []):
                regions[word].append(span)
    return regions


def _sprite(obj, rng: random.Random) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The object drawn antialiased on its own: premultiplied colour (h, w, 3), alpha (h, w, 1),
    and the canvas position of its top-left pixel."""
    from PIL import Image, ImageDraw

    from mmdesc.corpora import synth

    ss = synth.SUPERSAMPLE
    x0, y0 = obj.box[0] - 1, obj.box[1] - 1
    w, h = obj.box[2] - obj.box[0] + 2, obj.box[3] - obj.box[1] + 2
    mask = Image.new("L", (w * ss, h * ss))
    pts = [((x - x0) * ss, (y - y0) * ss) for x, y in synth._outline(obj.shape, obj.cx, obj.cy, obj.across, obj.angle)]
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    alpha = np.asarray(mask.resize((w, h), Image.BOX), np.float32)[..., None] / 255  # (h, w, 1)
    gain = rng.uniform(0.85, 1.08)
    rgb = np.array([min(255, max(0, v * gain + rng.uniform(-12, 12))) for v in synth.COLOUR_RGB[obj.colour]],
                   np.float32)
    return rgb * alpha, alpha, x0, y0


def _position(e: Event, t: float) -> tuple[float, float, bool]:
    """(dx, dy, visible) of the event's object at time t."""
    mid = (e.start + e.end) / 2
    if e.action == "appears":
        return 0.0, 0.0, t >= mid
    if e.action == "disappears":
        return 0.0, 0.0, t < mid
    a, b = e.start + 0.1 * (e.end - e.start), e.end - 0.1 * (e.end - e.start)
    p = min(1.0, max(0.0, (t - a) / (b - a)))
    return e.dx * p, e.dy * p, True


def render_clip(clip: Clip, rng: random.Random) -> np.ndarray:
    """The clip's frames at SYNTH_FPS: uint8 (F, H, W, 3). The background and every object are
    drawn once (as the image part draws them); each frame places the objects and adds sensor noise."""
    from mmdesc.corpora import synth

    scene = clip.scene
    bg = np.asarray(synth.render(replace(scene, objects=()), rng), np.float32)  # (H, W, 3)
    sprites = [_sprite(o, rng) for o in scene.objects]
    nrng = np.random.default_rng(rng.getrandbits(64))
    n = round(clip.duration * SYNTH_FPS)
    frames = np.repeat(bg[None], n, axis=0)  # (F, H, W, 3)
    for f in range(n):
        t = (f + 0.5) / SYNTH_FPS
        for e in clip.events:
            dx, dy, visible = _position(e, t)
            if visible:
                _paste(frames[f], *sprites[e.obj], round(dx), round(dy))
    frames += nrng.standard_normal(frames.shape, dtype=np.float32) * 1.5
    return frames.round().clip(0, 255).astype(np.uint8)


def _paste(img: np.ndarray, fg: np.ndarray, alpha: np.ndarray, x0: int, y0: int, dx: int, dy: int) -> None:
    h, w = alpha.shape[:2]
    x, y = x0 + dx, y0 + dy
    cx0, cy0 = max(0, -x), max(0, -y)
    cx1, cy1 = min(w, img.shape[1] - x), min(h, img.shape[0] - y)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    region = img[y + cy0:y + cy1, x + cx0:x + cx1]
    region *= 1 - alpha[cy0:cy1, cx0:cx1]
    region += fg[cy0:cy1, cx0:cx1]


def write_mp4(path: Path, frames: np.ndarray, fps: int = SYNTH_FPS) -> None:
    """Frames uint8 (F, H, W, 3) -> an H.264 mp4 (yuv420p) through PyAV, via a temporary name."""
    import av

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "16", "threads": "1"}
        for a in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        out.mux(stream.encode())
    os.replace(tmp, path)


def synthesize(root: Path, train: int, valid: int, test: int, seed: int, size: int = 64) -> None:
    """The video part of the synthetic corpus: ``videos/{scene id}.mp4`` (H.264, 8 fps, 1-4 s:
    one event of about 1 s per object), ``videodatainfo.json`` (MSR-VTT style: every split, with
    each video's event spans and the canonical caption's ``regions``), the scene-manifest
    entries, then the completion marker."""
    from mmdesc.corpora import synth
    from mmdesc.corpora.msrvtt import write_msrvtt

    root = Path(root)
    synth.start_part(root, NAME)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    counts = {"train": train, "valid": valid, "test": test}
    videos, sentences = [], []
    for split, n in counts.items():
        scenes = synth.split_scenes(seed, split, n, size)
        motion = random.Random(f"{seed}:{split}:{NAME}")
        entries = {}
        for k, scene in enumerate(scenes):
            sid = synth.scene_id(split, k)
            clip = plan_clip(scene, motion)
            write_mp4(root / "videos" / f"{sid}.mp4", render_clip(clip, motion))
            refs, regions = clip_captions(clip), clip_regions(clip)
            events = [{"object": e.obj, "action": e.action, "span": [round(e.start, 3), round(e.end, 3)],
                       "shift": [round(e.dx, 2), round(e.dy, 2)]} for e in clip.events]
            videos.append({"video_id": sid, "id": len(videos), "split": SYNTH_SPLITS[split], "category": 0,
                           "url": "", "start time": 0.0, "end time": clip.duration, "events": events,
                           "regions": regions})
            sentences += [{"caption": c, "video_id": sid, "sen_id": len(sentences) + j} for j, c in enumerate(refs)]
            entries[sid] = {"file": f"videos/{sid}.mp4", "caption": refs[0], "duration": clip.duration,
                            "events": events, "regions": regions}
        synth.add_to_manifest(root, split, NAME, entries, scenes)
    write_msrvtt(root / "videodatainfo.json", videos, sentences)
    synth.mark_complete(root, NAME, {"seed": seed, "size": size, "fps": SYNTH_FPS, **counts})


def bench_inputs(root: Path, n: int) -> list[str]:
    """``n`` synthetic clips (64 x 64 H.264, 1-4 s at 8 fps) written under ``root``, for bench/."""
    from mmdesc.corpora import synth

    rng = random.Random(0)
    paths = []
    for k in range(n):
        path = Path(root) / f"clip_{k:05d}.mp4"
        write_mp4(path, render_clip(plan_clip(synth.sample_scene(rng, 64), rng), rng))
        paths.append(str(path))
    return paths


def bench_extra(root: Path, quick: bool = False) -> dict[str, list[str]]:
    """A long file for bench/encode.py: 640 x 480 H.264 at 30 fps, a key frame every 2 s (as phones
    and streaming sites write them), 60 s long (6 s with ``quick``); a textured, panning picture."""
    import av

    seconds, w, h, fps = (6 if quick else 60), 640, 480, 30
    path = Path(root) / f"pan_{w}x{h}_{seconds}s.mp4"
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (h // 8 + 2, (w + 2 * fps * seconds) // 8 + 2, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), np.uint8))  # (H', W', 3): 8 px blocks
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": str(2 * fps)}
        for i in range(seconds * fps):
            a = np.ascontiguousarray(texture[:h, 2 * i:2 * i + w])  # panning 2 px a frame
            out.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        out.mux(stream.encode())
    return {f"{w}x{h}_{seconds}s": [str(path)]}
