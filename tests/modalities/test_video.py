"""Video modality: decoding real files of every common container, sampling by timestamps,
failing cleanly, encoding onto a time axis, the synthetic clips, and the CLI end to end."""
from __future__ import annotations

import json
import statistics
import struct
import time
import warnings
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from conftest import RECIPES, mmdesc
from mmdesc.contexts import TimeGridLayout, TimeLayout
from mmdesc.errors import ConfigError, MediaError, MmdescWarning
from mmdesc.modalities import video
from mmdesc.modalities.video import Encoder, Reader

FPS = 8
STEP = 10  # grey level step between consecutive frames of a test clip: frame i has level 10 * i


def write_clip(path, codec="libx264", n=24, w=48, h=32, fps=FPS, fmt=None, pix="yuv420p", pts_ms=None,
               options=None, frame=None):
    """A real clip: frame i is grey level STEP * i with a white top-left quadrant (or ``frame(i)``).
    ``pts_ms``: the frames' timestamps in milliseconds (variable frame rate)."""
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, pix
        s.options = {"threads": "1", **(options or {})}
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        for i in range(n if pts_ms is None else len(pts_ms)):
            if frame is None:
                a = np.full((h, w, 3), STEP * i, np.uint8)
                a[: h // 2, : w // 2] = 255
            else:
                a = frame(i)
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            if pts_ms is not None:
                f.pts, f.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(s.encode(f))
        out.mux(s.encode())
    return path


CONTAINERS = {  # name -> (codec, format)
    "a.mp4": ("libx264", "mp4"), "b.webm": ("libvpx-vp9", "webm"), "c.mkv": ("libx264", "matroska"),
    "d.avi": ("mpeg4", "avi"), "e.webm": ("libvpx", "webm"), "f.ts": ("libx264", "mpegts"),
}


def level(frames: torch.Tensor) -> list[int]:
    """The frame index each sampled frame shows, from its mean grey level (bottom half)."""
    h = frames.shape[-2]
    return [round(float(f[:, h // 2:].float().mean()) / STEP) for f in frames]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {name: write_clip(root / name, codec, fmt=fmt) for name, (codec, fmt) in CONTAINERS.items()}


# ---------------------------------------------------------------------------------------------
# Reading


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_every_container_samples_the_frames_nearest_to_evenly_spread_times(clips, name):
    item = Reader(frames=5, size=20).load(clips[name])
    assert item["frames"].shape == (5, 3, 20, 20) and item["frames"].dtype == torch.uint8
    # 24 frames at 8 fps over 3 s; targets (k + 0.5) * 3 / 5 s fall nearest to frames 2, 7, 12, 17, 22
    assert level(item["frames"]) == [2, 7, 12, 17, 22]
    assert item["times"].tolist() == pytest.approx([2 / FPS, 7 / FPS, 12 / FPS, 17 / FPS, 22 / FPS])
    assert item["duration"] == pytest.approx(3.0) and item["size"] == (48, 32)
    spans = item["spans"].tolist()
    assert spans[0][0] == 0 and spans[-1][1] == pytest.approx(3.0)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # they tile the clip


def test_rate_sampling_and_probe_agree(clips):
    reader = Reader(fps=2, size=16)
    item = reader.load(clips["a.mp4"])
    assert level(item["frames"]) == [2, 6, 10, 14, 18, 22]  # every 0.5 s from 0.25 s
    assert reader.probe(clips["a.mp4"]) == reader.length(item) == 6
    assert Reader(frames=7).probe(clips["b.webm"]) == 7


def test_a_stream_without_a_duration_is_spread_over_what_decodes(tmp_path):
    path = write_clip(tmp_path / "raw.h264", fmt="h264")  # an elementary stream: no header, no duration
    item = Reader(frames=5, size=16).load(path)
    idx = level(item["frames"])
    assert item["duration"] == pytest.approx(3.0) and idx == sorted(idx) and len(set(idx)) == 5
    assert all(abs(i - j) <= 1 for i, j in zip(idx, [2, 7, 12, 17, 22]))


def test_variable_frame_rate_keeps_the_real_timestamps(tmp_path):
    pts = [0, 100, 150, 600, 650, 1500, 2000, 2050, 2900, 3000]
    path = write_clip(tmp_path / "vfr.mkv", fmt="matroska", pts_ms=pts, fps=20)
    item = Reader(frames=4, size=16).load(path)
    times = [round(t * 1000) for t in item["times"].tolist()]
    assert set(times) <= set(pts)
    targets = [(k + 0.5) * item["duration"] / 4 * 1000 for k in range(4)]
    assert times == [min(pts, key=lambda p: abs(p - t)) for t in targets]
    assert level(item["frames"]) == [pts.index(t) for t in times]


def test_rotation_and_odd_sizes(tmp_path):
    path = write_clip(tmp_path / "turned.mp4", w=48, h=32)
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")  # version-0 track header: its display matrix starts 44 bytes on
    data[i + 44:i + 80] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)  # 90° clockwise
    path.write_bytes(bytes(data))
    item = Reader(frames=2, size=16).load(path)
    assert item["size"] == (32, 48)
    top_right, top_left = item["frames"][0, :, :8, 8:], item["frames"][0, :, :8, :8]
    assert top_right.float().mean() > 240 and top_left.float().mean() < 100  # the white corner turned with it
    odd = write_clip(tmp_path / "odd.avi", "mpeg4", w=33, h=17, fmt="avi")
    item = Reader(frames=3, size=16).load(odd)
    assert item["size"] == (33, 17) and item["frames"].shape == (3, 3, 16, 16)


def test_a_long_file_costs_its_sampled_frames_not_its_length(tmp_path):
    w, h, n = 320, 240, 600  # 60 s at 10 fps, a key frame every second
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 64, (h + n, w, 3), dtype=np.uint8)
    path = write_clip(tmp_path / "long.mp4", n=n, w=w, h=h, fps=10, options={"g": "10", "preset": "ultrafast"},
                      frame=lambda i: noise[i:i + h])

    def full():
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            return sum(1 for _ in c.decode(s))

    reader = Reader(frames=8, size=32)

    def sampled():
        return reader.load(path)

    assert full() == n and sampled()["frames"].shape[0] == 8  # warm both up
    t_full = statistics.median(_seconds(full) for _ in range(3))
    t_sampled = statistics.median(_seconds(sampled) for _ in range(3))
    assert t_sampled < 0.4 * t_full, (t_sampled, t_full)


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_a_two_hour_file_is_capped_with_a_warning(tmp_path):
    pts = [0, 1000, 2000, 3000, 7_199_000]  # ms: a few frames, then one two hours in
    path = write_clip(tmp_path / "film.mkv", fmt="matroska", pts_ms=pts, fps=1)
    with pytest.warns(MmdescWarning, match=r"film\.mkv: 7200 s long; only the first 600 s"):
        item = Reader(frames=4, size=16).load(path)
    assert item["duration"] == 600 and max(item["times"].tolist()) <= 600
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Reader(frames=4, size=16, max_duration=8000).load(path)  # under the cap: no warning


def write_audio(path, codec="aac", fmt="mp4"):
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=48000 if codec == "libopus" else 16000)
        s.layout = "mono"
        for _ in range(20):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
            f.sample_rate = s.rate
            out.mux(s.encode(f))
        out.mux(s.encode())
    return path


def bad_files(root, good):
    data = good.read_bytes()
    files = {
        "audio only": (write_audio(root / "voice.mp4"), "no video stream (only audio)"),
        "zero bytes": (root / "empty.mp4", "empty file (0 bytes)"),
        "truncated": (root / "cut.mp4", "truncated"),
        "text named .mp4": (root / "notes.mp4", "not a video"),
        "missing": (root / "gone.mkv", "no such file"),
    }
    (root / "empty.mp4").write_bytes(b"")
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end
    (root / "notes.mp4").write_text("not a film, just some words\n" * 20)
    return files


def test_bad_inputs_are_one_line_media_errors(clips, tmp_path):
    reader = Reader(frames=4, size=16)
    for kind, (path, reason) in bad_files(tmp_path, clips["a.mp4"]).items():
        for call in (reader.load, reader.probe):
            with pytest.raises(MediaError) as e:
                call(path)
            msg = str(e.value)
            assert msg.startswith(f"{path}: ") and reason in msg and "\n" not in msg, (kind, msg)
        assert not video.claims(path)
    assert all(video.claims(p) for p in clips.values())


def test_zero_decodable_frames_is_an_error_and_4k_is_read(clips, tmp_path):
    data = bytearray(clips["a.mp4"].read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    data[start:end] = bytes(end - start)  # the header is intact, every frame is zeros
    (tmp_path / "zeroed.mp4").write_bytes(bytes(data))
    reader = Reader(frames=4, size=16)
    assert reader.probe(tmp_path / "zeroed.mp4") == 4  # the header alone looks fine
    with pytest.raises(MediaError, match=r"zeroed\.mp4: no decodable video frames"):
        reader.load(tmp_path / "zeroed.mp4")
    uhd = write_clip(tmp_path / "uhd.avi", "mpeg4", n=3, w=3840, h=2160, fmt="avi")
    item = reader.load(uhd)  # scaled by FFmpeg's scaler, frame by frame
    assert item["size"] == (3840, 2160) and item["frames"].shape == (4, 3, 16, 16)
    assert level(item["frames"])[0] == 0 and level(item["frames"])[-1] == 2


def test_a_truncated_stream_keeps_its_decodable_frames(clips, tmp_path):
    data = clips["b.webm"].read_bytes()
    path = tmp_path / "half.webm"
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.warns(MmdescWarning, match="half.webm: the frames end at"):
        item = Reader(frames=6, size=16).load(path)
    idx = level(item["frames"])
    assert idx[:2] == [2, 6] and idx == sorted(idx) and idx[-1] < 20


def test_collate_pads_and_normalises(clips):
    reader = Reader(fps=4, size=12, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    short = write_clip(clips["a.mp4"].with_name("short.mp4"), n=8)  # 1 s -> 4 frames
    items = [reader.load(clips["a.mp4"]), reader.load(short)]
    batch = reader.collate(items)
    assert batch["pixels"].shape == (2, 3, 12, 12, 12) and batch["lengths"].tolist() == [12, 4]
    assert batch["pixels"][1, :, 4:].abs().max() == 0  # padding frames are zero
    assert batch["pixels"][0].min() >= -1 and batch["pixels"][0].max() <= 1
    assert batch["durations"].tolist() == [3.0, 1.0] and batch["sizes"].tolist() == [[48, 32], [48, 32]]


# ---------------------------------------------------------------------------------------------
# Encoding


def test_encoder_positions_cover_the_clip_on_a_time_axis(clips):
    reader = Reader(frames=6, size=20)
    batch = reader.collate([reader.load(clips[n]) for n in ("a.mp4", "d.avi")])
    enc = Encoder(**reader.encoder_kwargs(), channels=12, time_stride=2, pool=3, dim=7).eval()
    ctx = enc(batch)
    assert ctx.vectors.shape == (2, 3, 7) and ctx.mask.all()
    for layout in ctx.layouts:
        assert isinstance(layout, TimeLayout) and len(layout) == 3 and layout.duration == pytest.approx(3.0)
        assert layout.spans[0][0] == 0 and layout.spans[-1][1] == pytest.approx(3.0)
        assert all(a[1] == b[0] for a, b in zip(layout.spans, layout.spans[1:]))
        assert layout.contains(0, (0.0, 1.0)) and not layout.contains(2, (0.0, 1.0))


@pytest.mark.parametrize("temporal,summary,motion", [("gru", False, False), ("conv", True, False),
                                                     ("none", False, True), ("gru", True, True)])
def test_encoder_variants_keep_shapes_and_masks(clips, temporal, summary, motion):
    reader = Reader(fps=4, size=16)
    short = write_clip(clips["a.mp4"].with_name(f"short_{temporal}{summary}{motion}.mp4"), n=8)
    batch = reader.collate([reader.load(clips["b.webm"]), reader.load(short)])  # 12 and 4 frames
    enc = Encoder(**reader.encoder_kwargs(), channels=8, time_stride=2, pool=2, dim=5, temporal=temporal,
                  temporal_layers=2, summary=summary, motion=motion)
    ctx = enc(batch)
    assert ctx.vectors.shape == (2, 6, 5) and ctx.mask.sum(1).tolist() == [6, 2]
    assert [len(lay) for lay in ctx.layouts] == [6, 2] and torch.isfinite(ctx.vectors).all()
    ctx.vectors[ctx.mask].sum().backward()
    assert enc.backbone.stage1[0].weight.grad.abs().sum() > 0
    if motion:
        assert enc.backbone.stage1[0].weight.shape[1] == 6  # frames and their differences


def test_encoder_grid_positions_and_padded_clips(clips):
    reader = Reader(fps=4, size=16)
    short = write_clip(clips["a.mp4"].with_name("short2.mp4"), n=8)
    batch = reader.collate([reader.load(clips["c.mkv"]), reader.load(short)])  # 12 and 4 frames
    ctx = Encoder(**reader.encoder_kwargs(), channels=8, time_stride=4, grid=2, pool=1, dim=5)(batch)
    assert ctx.vectors.shape == (2, 3 * 4, 5)
    assert ctx.mask.sum(1).tolist() == [12, 4] and not ctx.mask[1, 4:].any()
    layout = ctx.layouts[0]
    assert isinstance(layout, TimeGridLayout) and len(layout) == 12 and layout.split(5) == (1, 1)
    assert layout.contains(5, (1.0, 2.0)) and layout.contains(5, (1.0, 2.0, 24, 0, 48, 16))  # top right
    assert not layout.contains(5, (1.0, 2.0, 0, 16, 24, 32)) and not layout.contains(5, (0.0, 1.0))


def test_frame_backbone_keeps_every_frame_and_can_be_frozen(clips):
    reader = Reader(frames=5, size=16)
    batch = reader.collate([reader.load(clips["a.mp4"])])
    enc = Encoder(**reader.encoder_kwargs(), backbone="frames", channels=8, pool=2, dim=6, temporal="conv",
                  temporal_layers=2, finetune="none")
    ctx = enc(batch)
    assert ctx.vectors.shape == (1, 5, 6)
    ctx.vectors.sum().backward()
    assert all(p.grad is None for p in enc.backbone.parameters())
    assert enc.proj.weight.grad is not None


def test_torchvision_video_weights_come_from_a_local_file_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match="never downloads"):
        Encoder(max_frames=8, backbone="mc3_18", pretrained=True)
    trunk = video.VideoResNetTrunk("mc3_18")
    torch.save({k: v.clone().fill_(0.5) for k, v in trunk.state_dict().items()}, tmp_path / "mc3.pt")
    enc = Encoder(max_frames=8, backbone="mc3_18", weights=str(tmp_path / "mc3.pt"), finetune="top", dim=9)
    assert float(enc.backbone.stem[0].weight[0, 0, 0, 0, 0]) == 0.5
    assert not enc.backbone.layer3[0].conv1[0].weight.requires_grad
    assert enc.backbone.layer4[0].conv1[0].weight.requires_grad
    x = {"pixels": torch.randn(1, 3, 8, 32, 32), "lengths": torch.tensor([8]), "durations": torch.tensor([2.0]),
         "spans": torch.tensor([[[k / 4, (k + 1) / 4] for k in range(8)]]), "sizes": torch.tensor([[32, 32]])}
    ctx = enc.eval()(x)  # mc3 keeps the frame rate: one position per frame
    assert ctx.vectors.shape == (1, 8, 9) and ctx.layouts[0].spans[-1] == (1.75, 2.0)


# ---------------------------------------------------------------------------------------------
# The synthetic clips


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    video.synthesize(root, 16, 3, 3, seed=4)
    return root


def test_synthetic_clips_are_h264_with_captions_in_event_order(synth_root):
    from mmdesc.corpora import synth

    split = video.SplitConfig(annotations="videodatainfo.json", videos="videos", split=("train",))
    examples = video.read_split(split, synth_root)
    assert len(examples) == 16 and synth.is_complete(synth_root, "video")
    manifest = {r["id"]: r for r in synth.read_manifest(synth_root, "train")}
    for ex in examples:
        with av.open(ex.source) as c:
            assert c.streams.video[0].codec_context.name == "h264"
        assert 3 <= len(ex.references) <= 5 and len(set(ex.references)) == len(ex.references)
        form = manifest[ex.id]["forms"]["video"]
        assert form["caption"] == ex.references[0] and form["file"] == f"videos/{ex.id}.mp4"
        events = form["events"]
        assert ex.references[0].count(" , then ") == len(events) - 1
        for part, e in zip(ex.references[0].split(" , then "), events):
            obj = manifest[ex.id]["objects"][e["object"]]
            noun = f"{obj['colour']} {obj['shape']}"
            assert part == f"{synth.article(noun)} {noun} {e['action']}"
            for word in (obj["colour"], obj["shape"], *e["action"].split()):
                assert e["span"] in ex.meta["regions"][word]
        assert set(ex.meta["regions"]) <= set(ex.references[0].split())
        assert all(0 < s < t <= form["duration"] for spans in ex.meta["regions"].values() for s, t in spans)
    again = video.read_split(split, synth_root)
    assert [e.references for e in again] == [e.references for e in examples]


def test_synthetic_events_happen_where_the_ground_truth_says(synth_root):
    """Each object's pixels move, appear or vanish inside its event's span, as the caption says."""
    from mmdesc.corpora import synth

    checked = 0
    for split in ("train", "valid"):
        for rec in synth.read_manifest(synth_root, split):
            form, objs = rec["forms"]["video"], rec["objects"]
            item = Reader(fps=FPS, size=64, max_frames=64).load(synth_root / form["file"])
            frames, times = item["frames"].float(), item["times"].tolist()
            for e in form["events"]:
                obj = objs[e["object"]]
                if sum(o["colour"] == obj["colour"] for o in objs) > 1:
                    continue
                rgb = torch.tensor(synth.COLOUR_RGB[obj["colour"]], dtype=torch.float32)
                x0, y0, x1, y1 = video._swept(obj["box"], *e["shift"])  # where the object can be
                window = frames[:, :, int(y0):int(y1) + 1, int(x0):int(x1) + 1]
                mask = ((window - rgb[None, :, None, None]).abs().amax(1) < 60).float()  # (T, h, w)
                start, end = e["span"]
                before = min(range(len(times)), key=lambda k: abs(times[k] - start))
                after = min(range(len(times)), key=lambda k: abs(times[k] - end))
                area = mask.sum((1, 2))
                if e["action"] == "appears":
                    assert area[before] < 3 and area[after] > 6
                elif e["action"] == "disappears":
                    assert area[before] > 6 and area[after] < 3
                else:
                    ys, xs = torch.meshgrid(torch.arange(mask.shape[1] + 0.0), torch.arange(mask.shape[2] + 0.0),
                                            indexing="ij")
                    cx = [(mask[k] * xs).sum() / area[k] for k in (before, after)]
                    cy = [(mask[k] * ys).sum() / area[k] for k in (before, after)]
                    dx, dy = video.MOVES[e["action"]]
                    assert dx * (cx[1] - cx[0]) + dy * (cy[1] - cy[0]) > 10
                checked += 1
    assert checked >= 15


# ---------------------------------------------------------------------------------------------
# Through the CLI


@pytest.fixture(scope="module")
def tiny_video_run(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("runs") / "video"
    r = mmdesc("train", RECIPES / "tiny" / "video.yaml", f"data.root={tiny_data}", f"out={out}")
    assert r.code == 0, r.err
    return out


def test_describe_every_container_and_fail_cleanly_on_the_bad(tiny_video_run, clips, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("these are words, not frames\n")
    films = [clips[n] for n in ("a.mp4", "b.webm", "c.mkv", "d.avi")]
    r = mmdesc("describe", *films, bad, "--checkpoint", tiny_video_run, "--attention", tmp_path / "att")
    assert r.code == 2 and "Traceback" not in r.err
    lines = r.out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(p) for p in films]
    assert all(line.split("\t")[1].strip() for line in lines)
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: not a video, or truncated (FFmpeg finds no valid media data)"]
    from PIL import Image

    pictures = {q.stem: q for q in (tmp_path / "att").rglob("*.png")}  # named by the inputs' paths
    assert set(pictures) == {p.stem for p in films}
    for q in pictures.values():
        pic = Image.open(q)
        assert pic.width > 400 and pic.height > 100


def test_describe_warns_in_one_line_about_a_capped_file(tiny_video_run, tmp_path):
    film = write_clip(tmp_path / "film.mkv", fmt="matroska", pts_ms=[0, 1000, 2000, 7_199_000], fps=1)
    r = mmdesc("describe", film, "-c", tiny_video_run)
    assert r.code == 0, r.err
    assert f"warning: {film}: 7200 s long; only the first 600 s are read (input.max_duration)" in r.err.splitlines()


def test_evaluate_reports_temporal_grounding(tiny_video_run):
    r = mmdesc("evaluate", "-c", tiny_video_run, "--json")
    assert r.code == 0, r.err
    scores = json.loads(r.out)
    assert scores["n"] == 6 and 0 <= scores["grounding"] <= 100 and scores["grounding_n"] >= 0


def test_grounding_scores_the_attention_peak_against_the_event_spans(synth_root):
    """The encoder's time layout and the corpus's event spans meet in metrics.grounding."""
    from mmdesc.metrics import grounding

    split = video.SplitConfig(annotations="videodatainfo.json", videos="videos", split=("test",))
    reader = Reader(frames=16, size=32)
    items, hits, misses = [], [], []
    for ex in video.read_split(split, synth_root):
        ctx = Encoder(**reader.encoder_kwargs(), channels=4, dim=3)(reader.collate([reader.load(ex.source)]))
        layout, words = ctx.layouts[0], ex.references[0].split()
        inside = [[float(any(layout.contains(n, r) for r in ex.meta["regions"].get(w, [[-2, -1]])))
                   for n in range(len(layout))] for w in words]
        hits.append((words, inside, layout, ex.meta["regions"]))
        misses.append((words, [[1.0 - a for a in row] for row in inside], layout, ex.meta["regions"]))
    assert grounding(hits)["grounding"] == 100 and grounding(misses)["grounding"] == 0
    assert grounding(hits)["grounding_n"] >= 3 * 4  # colour, shape and motion words of every clip
