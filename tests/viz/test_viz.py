"""mmdesc.viz: each layout kind writes a PNG of plausible size; bad input is a clear error."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmdesc.contexts import GridLayout, TimeLayout, TokenLayout
from mmdesc.errors import MediaError
from mmdesc.viz import colormap, draw_attention
from mmdesc.viz.grid import heatmap

WORDS = ["a", "red", "circle", "antidisestablishmentarianism", "carré"]


def _attention(t, n, seed=0):
    a = np.random.default_rng(seed).random((t, n)) ** 3
    return a / a.sum(1, keepdims=True)


@pytest.fixture
def image_path(tmp_path):
    img = Image.new("RGB", (64, 48), (210, 220, 200))
    ImageDraw.Draw(img).ellipse((4, 4, 24, 24), fill=(220, 30, 30))
    path = tmp_path / "scene.png"
    img.save(path)
    return path


def test_grid_picture(image_path, tmp_path):
    layout = GridLayout.regular((3, 5), (64, 48))
    alpha = _attention(len(WORDS) + 1, len(layout) + 2)  # an end-of-sentence row, padding columns
    out = draw_attention(layout, str(image_path), WORDS, alpha, tmp_path / "pics" / "grid.png")
    assert out.exists()
    with Image.open(out) as im:
        w, h = im.size
    assert w >= 6 * 128 and 128 < h < 600  # 6 panels of >= 128 px in one row, long label fits


def test_grid_picture_wraps_rows(image_path, tmp_path):
    layout = GridLayout.regular((2, 2), (64, 48))
    words = [f"w{k}" for k in range(13)]
    out = draw_attention(layout, str(image_path), words, _attention(13, 4), tmp_path / "g.png")
    with Image.open(out) as im:
        w, h = im.size
    assert w < 6 * 128 + 6 * 10 + 40 and h > 3 * 96  # 14 panels: 3 rows of at most 6


def test_heatmap_peaks_in_the_argmax_cell_of_an_uneven_grid():
    boxes = ((0, 0, 10, 30), (10, 0, 60, 30), (0, 30, 10, 40), (10, 30, 60, 40))
    layout = GridLayout(grid=(2, 2), size=(60, 40), boxes=boxes)
    heat = heatmap(layout, np.array([0.0, 0.0, 1.0, 0.0]), (120, 80))  # (80, 120)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert x < 20 and y >= 60  # inside cell 2's box, scaled x2
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)


def test_tokens_picture_with_torch_alpha(tmp_path):
    torch = pytest.importorskip("torch")
    layout = TokenLayout(tokens=("\u2581un", "\u2581cercle", "\u2581rou", "ge", "\u2581à"),
                         words=(0, 1, 2, 2, 3))
    alpha = torch.tensor(_attention(len(WORDS), len(layout)), dtype=torch.float32)
    out = draw_attention(layout, "un cercle rouge à", WORDS, alpha, tmp_path / "tokens.png")
    with Image.open(out) as im:
        w, h = im.size
    assert w > 5 * 26 + 200 and h > len(WORDS) * 26 + 40


def test_tokens_picture_over_source_words(tmp_path):
    layout = TokenLayout(tokens=("\u2581un", "\u2581rou", "ge"), words=(0, 1, 1))
    out = draw_attention(layout, "un rouge", ["a", "red"], _attention(2, 2), tmp_path / "w.png")
    assert Image.open(out).size[0] > 2 * 26
    with pytest.raises(ValueError):
        draw_attention(layout, "un rouge", ["a", "red"], _attention(2, 1), tmp_path / "x.png")


def test_time_picture(tmp_path):
    layout = TimeLayout(spans=tuple((k * 0.1, (k + 1) * 0.1) for k in range(23)), duration=2.3)
    out = draw_attention(layout, "clip.mp4", WORDS, _attention(len(WORDS), 23), tmp_path / "time.png")
    with Image.open(out) as im:
        w, h = im.size
    assert w > 640 and h > len(WORDS) * 22


def test_unknown_kind_lists_the_valid_ones(tmp_path):
    class Odd:
        kind = "smell"

    with pytest.raises(ValueError, match="grid.*tokens.*time"):
        draw_attention(Odd(), "x", ["a"], np.ones((1, 1)), tmp_path / "o.png")


def test_unreadable_image_is_a_media_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    layout = GridLayout.regular((2, 2), (8, 8))
    with pytest.raises(MediaError):
        draw_attention(layout, str(bad), ["a"], np.ones((1, 4)) / 4, tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()


def test_too_small_alpha_is_a_value_error(image_path, tmp_path):
    layout = GridLayout.regular((2, 2), (64, 48))
    with pytest.raises(ValueError):
        draw_attention(layout, str(image_path), ["a", "b"], np.ones((1, 4)), tmp_path / "o.png")


def test_colormap_ends():
    lo, hi = colormap([0.0, 1.0])
    assert sum(lo) < 30 and sum(hi) > 600
    assert colormap([0.0, 1.0], "blues")[0] == (255, 255, 255)
    with pytest.raises(ValueError, match="inferno"):
        colormap([0.5], "jet")


def test_a_modalitys_backdrop_is_what_the_attention_is_drawn_over(tmp_path, monkeypatch):
    import sys
    import types

    from mmdesc import modalities
    from mmdesc.viz import backdrop_for

    seen = []
    fake = types.ModuleType("fake_modality")
    fake.backdrop = lambda source, layout: seen.append(source) or Image.new("RGB", (40, 10), (0, 200, 0))
    monkeypatch.setitem(sys.modules, "fake_modality", fake)
    monkeypatch.setitem(modalities._MODULES, "fake", "fake_modality")
    layout = TimeLayout(spans=((0.0, 0.5), (0.5, 1.0)), duration=1.0)
    picture = backdrop_for("fake", "clip.mp4", layout)
    assert seen == ["clip.mp4"] and picture.size == (40, 10)
    alpha = np.array([[0.3, 0.7]])
    plain = draw_attention(layout, "clip.mp4", ["a"], alpha, tmp_path / "plain.png")
    over = draw_attention(layout, "clip.mp4", ["a"], alpha, tmp_path / "over.png", backdrop=picture)
    with Image.open(plain) as a, Image.open(over) as b:
        assert b.height > a.height
        assert (0, 200, 0) in {px for _, px in b.getcolors(1 << 16)}  # the backdrop's green is drawn
    assert backdrop_for("text", "a line", layout) is None and backdrop_for(None, "x", layout) is None
    grid = GridLayout.regular((1, 2), (40, 10))
    out = draw_attention(grid, "no such file", ["a"], alpha, tmp_path / "g.png", backdrop=picture)
    assert out.exists()  # a backdrop means the source file is not read
