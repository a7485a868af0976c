"""The HTML report in a real headless browser (Chromium driven by Selenium), written by the real CLI.

Each test writes a report with ``mmdesc describe --html`` or ``mmdesc compare --html``,
opens the file, and checks what a user sees: the sentence, that clicking a word changes the
attention drawn, that linked views follow, that the page made no network request. A
screenshot of every modality's view is saved under the test's tmp_path.
"""
import base64
import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import mmdesc

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and DRIVER.exists()):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {DRIVER}): "
                    "apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,1800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    yield driver
    driver.quit()


def open_report(driver, path: Path) -> dict:
    """Load the report, wait until every view has drawn, and return the page's embedded data."""
    driver.get_log("performance")  # forget what earlier pages requested
    driver.get(path.resolve().as_uri())
    deadline = time.time() + 20
    while time.time() < deadline:
        if driver.execute_script(
                "return document.body.dataset.loaded === '1' && "
                "[...document.querySelectorAll('.view')].every(v => v.dataset.ready === '1')"):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the report's views did not finish drawing")
    return json.loads(driver.execute_script("return document.getElementById('mmdesc-data').textContent"))


def requests(driver) -> list[str]:
    """URLs the page asked for since it was opened (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def assert_offline(driver, path: Path) -> None:
    urls = requests(driver)
    assert path.resolve().as_uri() in urls  # the log works: it saw the page itself
    assert all(u.startswith(("file:", "data:")) for u in urls), [u[:80] for u in urls]
    csp = driver.execute_script(
        "return document.querySelector('meta[http-equiv=Content-Security-Policy]').content")
    assert "default-src 'none'" in csp


def drawn(driver, view) -> str:
    """What the view shows of the attention: its canvas pixels, or its source tokens' colours."""
    return driver.execute_script(
        "const v = arguments[0], c = v.querySelector('canvas.display');"
        "return c ? c.toDataURL()"
        "  : [...v.querySelectorAll('.token')].map(t => t.style.background).join('|')", view)


def rows(view_data: dict) -> np.ndarray:
    q = np.frombuffer(base64.b64decode(view_data["att"]), dtype=np.uint8)
    return q.reshape(len(view_data["words"]), view_data["n"])  # (W, N)


def most_different_word(view_data: dict, selected: int, unique: bool = False) -> int:
    """The word whose stored attention differs most from the selected word's (``unique``: among
    the words said once, so that a view linked by the word itself selects the same one)."""
    q = rows(view_data).astype(int)
    diff = np.abs(q - q[selected]).sum(axis=1)
    if unique:
        words = view_data["words"]
        diff = np.where([words.count(w) == 1 for w in words], diff, -1)
    t = int(np.argmax(diff))
    assert t != selected, f"all words of {view_data['words']} attend alike: nothing to tell apart"
    return t


def screenshot(driver, view, path: Path) -> Path:
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", view)
    view.screenshot(str(path))
    log.warning("screenshot of the %s view: %s", path.stem, path)
    with Image.open(path) as im:
        assert im.width > 200 and im.height > 100
    return path


def test_describe_report_shows_the_sentence_and_each_words_attention(browser, tiny_image_run, tiny_data,
                                                                      tmp_path):
    from selenium.webdriver.common.by import By

    images = [tiny_data / "images" / f"test_00000{k}.png" for k in range(3)]
    report = tmp_path / "report.html"
    r = mmdesc("describe", *images, "-c", tiny_image_run, "--n-best", 2, "--html", report)
    assert r.code == 0, r.err
    captions = [line.split("\t")[2] for line in r.out.splitlines()][::2]  # the best of each 2-best
    data = open_report(browser, report)
    views = browser.find_elements(By.CSS_SELECTOR, ".view")
    assert len(views) == 3
    for view, caption, path in zip(views, captions, images):
        assert view.find_element(By.CSS_SELECTOR, ".sentence").text == " ".join(caption.split())  # as a page shows it
        assert path.name in view.find_element(By.CSS_SELECTOR, ".head").text
        assert browser.execute_script("return arguments[0].querySelectorAll('.nbest li').length", view) == 2
    first, v0 = views[0], data["groups"][0]["views"][0]
    assert len(first.find_elements(By.CSS_SELECTOR, "table.words tbody tr")) == len(v0["words"])

    t = most_different_word(v0, int(first.get_attribute("data-word")))
    before = drawn(browser, first)
    first.find_elements(By.CSS_SELECTOR, ".sentence .word")[t].click()
    assert first.get_attribute("data-word") == str(t)
    assert drawn(browser, first) != before
    assert v0["words"][t] in first.find_element(By.CSS_SELECTOR, ".where").text

    first.find_element(By.CSS_SELECTOR, ".play").click()  # steps from the first word to the last
    assert first.get_attribute("data-word") == "0"
    last = str(len(v0["words"]) - 1)
    deadline = time.time() + 10
    while first.get_attribute("data-word") != last and time.time() < deadline:
        time.sleep(0.05)
    assert first.get_attribute("data-word") == last
    assert_offline(browser, report)
    screenshot(browser, first, tmp_path / "image.png")


def test_compare_report_links_the_views_of_one_scene(browser, tiny_image_run, tiny_text_run, tmp_path):
    from selenium.webdriver.common.by import By

    report, out = tmp_path / "compare.html", tmp_path / "cmp"
    # the image model twice: two views that say the same words, so a click must move the other
    r = mmdesc("compare", "-c", tiny_image_run, "-c", tiny_image_run, "-c", tiny_text_run,
               "--scenes", 2, "--beam", 2, "--out", out, "--html", report)
    assert r.code == 0, r.err
    data = open_report(browser, report)
    assert browser.find_element(By.CSS_SELECTOR, "table.stats").text.count("text") >= 1
    doc = json.loads((out / "compare.json").read_text())
    assert len(browser.find_elements(By.CSS_SELECTOR, ".summary figure img")) == len(doc["figures"])
    assert len({row["label"] for row in doc["rows"]}) == 3  # one name per model, also for a model given twice
    groups = browser.find_elements(By.CSS_SELECTOR, ".group")
    assert [g.get_attribute("data-id") for g in groups] == ["test_000000", "test_000001"]
    views = groups[0].find_elements(By.CSS_SELECTOR, ".view")
    assert [v.get_attribute("data-kind") for v in views] == ["grid", "grid", "tokens"]
    info = data["groups"][0]["views"]
    assert info[0]["label"] == "test_000000.png"
    scene = data["groups"][0]["caption"]  # the English caption: the translation's source
    shown = views[2].find_element(By.CSS_SELECTOR, ".source").text
    assert scene.split()[0] in shown
    assert len(views[2].find_elements(By.CSS_SELECTOR, ".token")) >= len(scene.split())

    t = most_different_word(info[0], 0, unique=True)
    before = [drawn(browser, v) for v in views]
    views[0].find_elements(By.CSS_SELECTOR, ".sentence .word")[t].click()
    assert views[0].get_attribute("data-word") == views[1].get_attribute("data-word") == str(t)
    assert drawn(browser, views[0]) != before[0] and drawn(browser, views[1]) != before[1]
    key = info[0]["link"][t]
    assert views[2].get_attribute("data-linked") == ("yes" if key in info[2]["link"] else "no")

    # a word of the translation: its attention is drawn over the source sentence's tokens
    u = most_different_word(info[2], int(views[2].get_attribute("data-word")))
    views[2].find_elements(By.CSS_SELECTOR, ".sentence .word")[u].click()
    assert drawn(browser, views[2]) != before[2]
    assert views[0].get_attribute("data-linked") == ("yes" if info[2]["link"][u] in info[0]["link"] else "no")
    assert_offline(browser, report)
    screenshot(browser, views[0], tmp_path / "image.png")
    screenshot(browser, views[2], tmp_path / "text.png")


def test_a_report_of_100_photos_is_one_small_file(browser, tiny_image_run, tmp_path):
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(5):  # camera-sized, noisy: ~0.5 MB each as JPEG
        pixels = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"p{k}.jpg", quality=90)
    for k in range(100):
        shutil.copy(photos / f"p{k % 5}.jpg", photos / f"photo_{k:03d}.jpg")
    for k in range(5):
        (photos / f"p{k}.jpg").unlink()
    report = tmp_path / "out" / "report.html"
    r = mmdesc("describe", photos, "-c", tiny_image_run, "--html", report)
    assert r.code == 0, r.err
    assert len(r.out.splitlines()) == 100
    assert [p.name for p in report.parent.iterdir()] == ["report.html"]  # one file, nothing beside it
    size = report.stat().st_size
    log.warning("report of 100 inputs: %.2f MB (the photos: %.1f MB)", size / 1e6,
                sum(p.stat().st_size for p in photos.iterdir()) / 1e6)
    assert size < 20 * 1024 * 1024
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", report.read_text())
    open_report(browser, report)
    assert browser.execute_script("return document.querySelectorAll('.view[data-ready=\"1\"]').length") == 100
    assert_offline(browser, report)


def test_the_browser_draws_the_heatmap_the_png_draws(browser, tmp_path):
    """Same colour map, same cell centres, same blend: the page's canvas is the PNG panel."""
    torch = pytest.importorskip("torch")
    from selenium.webdriver.common.by import By

    from mmdesc.contexts import GridLayout
    from mmdesc.predict import Described
    from mmdesc.viz import grid, html

    boxes = ((0, 0, 10, 30), (10, 0, 60, 30), (0, 30, 10, 40), (10, 30, 60, 40))  # an uneven 2 x 2 grid
    layout = GridLayout(grid=(2, 2), size=(60, 40), boxes=boxes)
    alpha = torch.tensor([[0.05, 0.05, 0.85, 0.05], [0.1, 0.7, 0.1, 0.1]])  # "left": cell 2, "right": cell 1
    flat = Image.new("RGB", (60, 40), (128, 128, 128))
    flat.save(tmp_path / "flat.png")
    described = [Described("left right", ["left", "right"], -1.0, alpha, [5, 6], layout)]
    view = html.view(described, str(tmp_path / "flat.png"), modality="m")
    report = html.write_report(tmp_path / "r.html", "heatmap", [html.group("0", "flat", [view])])
    open_report(browser, report)
    page = browser.find_element(By.CSS_SELECTOR, ".view")
    for t in (0, 1):
        page.find_elements(By.CSS_SELECTOR, ".sentence .word")[t].click()
        w, h, pixels = browser.execute_script(
            "const c = document.querySelector('canvas.display');"
            "const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "return [c.width, c.height, Array.from(px)]")
        shown = np.array(pixels, dtype=np.uint8).reshape(h, w, 4)[..., :3].astype(int)  # (h, w, 3)
        panel = grid._overlay(flat.resize((w, h)), layout, alpha[t].numpy().astype(np.float64))
        expected = np.asarray(panel, dtype=int)
        x0, y0, x1, y1 = (np.array(boxes[int(alpha[t].argmax())]) * w / 60).astype(int)
        away = np.ones((h, w), bool)  # not the frame around the peak cell (drawn alike, not to the pixel)
        away[max(y0 - 5, 0):y1 + 5, max(x0 - 5, 0):x1 + 5] = False
        away[y0 + 5:y1 - 5, x0 + 5:x1 - 5] = True
        diff = np.abs(shown - expected)[away]
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 6, (t, diff.mean())
        heat = shown.sum(axis=2)
        y, x = np.unravel_index(np.argmax(np.where(away, heat, 0)), heat.shape)
        assert x0 <= x < x1 and y0 <= y < y1  # brightest where the word looks


def test_time_views_with_and_without_a_backdrop(browser, tmp_path):
    """A time layout (video clips, speech frames) as the modalities to come will give it."""
    torch = pytest.importorskip("torch")
    from selenium.webdriver.common.by import By

    from mmdesc.contexts import TimeLayout
    from mmdesc.predict import Described
    from mmdesc.viz import html

    layout = TimeLayout(spans=tuple((k * 0.25, (k + 1) * 0.25) for k in range(12)), duration=3.0)
    alpha = torch.softmax(torch.tensor([[4.0 - abs(k - c) for k in range(12)] for c in (1, 6, 10)]), dim=1)
    strip = Image.fromarray(np.tile(np.linspace(0, 255, 400, dtype=np.uint8)[None, :, None], (80, 1, 3)))
    described = [Described("a moving star", ["a", "moving", "star"], -0.5, alpha, [4, 5, 6], layout)]
    views = [html.view(described, "clip.mp4", modality="m", label="clip.mp4", backdrop=strip),
             html.view(described, "clip.mp4", modality="m", label="no picture")]
    report = html.write_report(tmp_path / "t.html", "time", [html.group("0", "clip", views)])
    open_report(browser, report)
    shown = browser.find_elements(By.CSS_SELECTOR, ".view")
    assert [v.get_attribute("data-kind") for v in shown] == ["time", "time"]
    heights = [browser.execute_script("return arguments[0].querySelector('canvas').height", v) for v in shown]
    assert heights[0] > heights[1]  # the backdrop sits above the curve
    before = [drawn(browser, v) for v in shown]
    shown[0].find_elements(By.CSS_SELECTOR, ".sentence .word")[2].click()
    assert all(shown[k].get_attribute("data-word") == "2" for k in (0, 1))  # linked: the same word
    assert [drawn(browser, v) for v in shown] != before
    assert "2.50\u20132.75 s" in shown[0].find_element(By.CSS_SELECTOR, ".where").text
    screenshot(browser, shown[0], tmp_path / "time.png")


def test_a_time_grid_view_is_drawn_on_the_time_axis(browser, tmp_path):
    """A video model with a spatial grid (time segments x cells): the report sums each
    segment's cells onto the time axis and names the segment and the cell of the peak."""
    torch = pytest.importorskip("torch")
    from selenium.webdriver.common.by import By

    from mmdesc.contexts import GridLayout, TimeGridLayout, TimeLayout
    from mmdesc.predict import Described
    from mmdesc.viz import html

    time = TimeLayout(spans=tuple((k * 0.5, (k + 1) * 0.5) for k in range(6)), duration=3.0)
    layout = TimeGridLayout(time, GridLayout.regular((2, 2), (64, 64)))  # 24 positions
    logits = torch.full((2, 24), -4.0)
    logits[0, 1 * 4 + 3] = 4.0  # word 0: segment 1, cell (2, 2)
    logits[1, 4 * 4 + 0] = 4.0  # word 1: segment 4, cell (1, 1)
    described = [Described("a star", ["a", "star"], -0.5, torch.softmax(logits, dim=1), [4, 5], layout)]
    report = html.write_report(tmp_path / "g.html", "time grid",
                               [html.group("0", "clip", [html.view(described, "clip.mp4", modality="m")])])
    data = open_report(browser, report)
    assert data["groups"][0]["views"][0]["layout_kind"] == "time_grid"
    shown = browser.find_element(By.CSS_SELECTOR, ".view")
    assert shown.get_attribute("data-kind") == "time"
    assert "0.50\u20131.00 s, cell 2,2" in shown.find_element(By.CSS_SELECTOR, ".where").text
    shown.find_elements(By.CSS_SELECTOR, ".sentence .word")[1].click()
    assert "2.00\u20132.50 s, cell 1,1" in shown.find_element(By.CSS_SELECTOR, ".where").text
    screenshot(browser, shown, tmp_path / "time_grid.png")
