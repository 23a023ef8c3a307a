"""The app in a real browser: Debian's Chromium (Playwright) against `streamlit run`.

Waits on Streamlit's own signals (script state, images, skeletons), never on sleeps. Needs
/usr/bin/chromium (`scripts/test.sh` installs it); without it the test fails, unless
CAM_EXPLORER_SKIP_BROWSER=1. The screenshot lands in results/browser/ (or
$CAM_EXPLORER_SCREENSHOT_DIR).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app_server import CHROMIUM, CHROMIUM_ARGS, ROOT, streamlit_server

pytestmark = pytest.mark.browser

START_TIMEOUT_S = 120
WAIT_MS = 180_000  # two CPU cores shared with other test runs: be generous, never sleep
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
MAIN_UPLOADERS = '[data-testid="stMain"] [data-testid="stFileUploader"]'


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`streamlit run app.py` on a free port; its URL once it serves. Always stopped."""
    with streamlit_server(START_TIMEOUT_S) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CAM_EXPLORER_SKIP_BROWSER") == "1":
            pytest.skip(f"CAM_EXPLORER_SKIP_BROWSER=1 and {CHROMIUM} is missing")
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's Chromium (`apt-get install -y chromium`, as "
            "scripts/test.sh does), or set CAM_EXPLORER_SKIP_BROWSER=1 to skip the browser tests."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# True once a run is over: the script is idle, nothing is loading or stale (Streamlit keeps the
# previous run's elements, marked stale, until the new run replaces them), and the overlays
# are the expected ones. A wait on "not running" alone can pass before a rerun even starts.
SETTLED = """([images, text]) => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    if (document.querySelector('[data-testid="stSkeleton"], [data-stale="true"]')) return false;
    const shown = [...document.querySelectorAll('[data-testid="stImage"]')];
    return shown.length === images && shown.every(e => e.innerText.includes(text));
}"""


def _settled(page, images: int, caption: str = "") -> None:
    """Wait until the app settled with ``images`` overlays, each caption containing ``caption``."""
    page.wait_for_selector(IDLE, timeout=WAIT_MS)
    page.wait_for_function(SETTLED, arg=[images, caption], timeout=WAIT_MS)


def _open_inputs(page) -> None:
    """Open the inputs panel (closed once inputs are chosen) and wait for its uploaders."""
    page.locator('[data-testid="stExpander"] summary', has_text="Inputs").click()
    page.locator(MAIN_UPLOADERS).first.wait_for(timeout=WAIT_MS)
    page.wait_for_selector(IDLE, timeout=WAIT_MS)


def _overlay_sources(page) -> list[str]:
    return page.eval_on_selector_all('[data-testid="stImage"] img', "els => els.map(e => e.src)")


def _shown_layer(page) -> str:
    """The layer named in the overlays' caption ("layer fusion · gradcam · ...")."""
    caption = page.locator('[data-testid="stCaptionContainer"]', has_text="Overlays").last
    (part,) = [p for p in caption.inner_text().split(" · ") if p.startswith("layer ")]
    return part.removeprefix("layer ").strip()


def test_upload_pick_layer_move_slider_download_zip(server: str, browser, tmp_path: Path) -> None:
    from cam_core import demo

    modalities = list(demo.MODALITIES)
    count = len(modalities)
    page = browser.new_page(viewport={"width": 1500, "height": 1400}, accept_downloads=True)
    page.goto(server, timeout=WAIT_MS)
    _settled(page, count)  # the demo opens with a sample explained
    assert page.locator('[data-testid="stException"]').count() == 0

    shots = Path(os.environ.get("CAM_EXPLORER_SCREENSHOT_DIR", ROOT / "results" / "browser"))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "explorer-start.png"))

    # Upload one file per modality: the demo's last sample, under new names.
    _open_inputs(page)
    sample = sorted(p for p in Path(demo.SAMPLES_DIR).iterdir() if p.is_dir())[-1]
    for m in modalities:
        path = tmp_path / f"mine_{m.name}.png"
        path.write_bytes((sample / f"{m.name}.png").read_bytes())
        box = page.locator(MAIN_UPLOADERS).filter(has_text=m.name).first
        box.locator('input[type="file"]').set_input_files(str(path))
        box.get_by_text(path.name).wait_for(state="attached", timeout=WAIT_MS)
    _settled(page, count, "mine_")  # every overlay now comes from the uploads

    # Pick a layer: open the tree, filter it, click the first row's selection box.
    page.locator('[data-testid="stExpander"] summary', has_text="Layer").click()
    search = page.get_by_label("Filter layers")
    search.fill("down2")
    search.press("Enter")
    table = page.locator('[data-testid="stDataFrame"]').first
    page.wait_for_function(  # the table lists fewer rows than the model has layers
        """() => [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
            .map(e => e.innerText.match(/^(\\d+) of (\\d+) layers/))
            .some(m => m && Number(m[1]) < Number(m[2]))""",
        timeout=WAIT_MS,
    )
    _settled(page, count, "mine_")
    canvas = table.locator("canvas").first
    canvas.wait_for(state="visible", timeout=WAIT_MS)
    grid = canvas.bounding_box()
    assert grid is not None
    page.mouse.click(grid["x"] + 16, grid["y"] + 35 + 35 // 2)  # header row, then row 0
    page.locator('[data-testid="stCaptionContainer"]', has_text="layer ").filter(
        has_text="down2"
    ).first.wait_for(timeout=WAIT_MS)
    _settled(page, count, "mine_")
    layer = _shown_layer(page)
    assert "down2" in layer

    # Move the image_weight slider: the overlays change (re-blended, no recompute).
    before = _overlay_sources(page)
    thumb = page.get_by_role("slider", name="image_weight")
    thumb.focus()
    thumb.press("ArrowLeft")  # one key press, one rerun
    page.wait_for_function(
        "(before) => { const now = [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".map(e => e.src); return now.length && now.join() !== before.join(); }",
        arg=before,
        timeout=WAIT_MS,
    )
    _settled(page, count, "mine_")
    weight = float(thumb.input_value())
    assert weight == pytest.approx(0.45)

    # Download everything as one ZIP and check it.
    with page.expect_download(timeout=WAIT_MS) as download:
        page.get_by_role("button", name="Download everything (ZIP)").click()
    data = Path(download.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        settings = json.loads(archive.read("settings.json"))
        for m in modalities:
            with Image.open(io.BytesIO(archive.read(f"overlays/00_{m.name}.png"))) as image:
                assert image.size[::-1] == tuple(m.size)
            assert f"cams/00_{m.name}.npy" in archive.namelist()
            assert f"originals/00_{m.name}.png" in archive.namelist()
    assert settings["image_weight"] == pytest.approx(weight)
    assert settings["layer"] == layer
    assert settings["inputs"][modalities[-1].name] == [f"mine_{modalities[-1].name}.png"]

    # The app scrolls inside its own container: grow the window to the content, then shoot.
    height = page.evaluate(
        """() => Math.max(900, ...Array.from(document.querySelectorAll(
            '[data-testid="stMain"], [data-testid="stAppViewContainer"]'), e => e.scrollHeight))"""
    )
    page.set_viewport_size({"width": 1500, "height": min(int(height) + 120, 4000)})
    _settled(page, count, "mine_")
    page.screenshot(path=str(shots / "explorer.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_attention_page_click_moves_the_query(server: str, browser) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    page.goto(server, timeout=WAIT_MS)  # a first visit by URL would meet the legacy pages mode
    page.wait_for_selector('[data-testid="stImage"]', timeout=WAIT_MS)  # the explorer is up
    page.wait_for_selector(IDLE, timeout=WAIT_MS)
    page.locator('[data-testid="stSidebarNav"] a', has_text="Attention").click(timeout=WAIT_MS)
    page.wait_for_url("**/attend*", timeout=WAIT_MS)
    heads = 4  # the demo's fusion.attn: texture and frequency maps, then all 4 heads of each
    images = 2 + 2 * heads
    _settled(page, images)
    assert page.locator('[data-testid="stException"]').count() == 0
    query = page.locator('[data-testid="stCaptionContainer"]', has_text="query (")
    assert "query (8, 8)" in query.first.inner_text()  # the centre of the 16x16 grid
    before = _overlay_sources(page)

    # Click the query image (a component in its own iframe) in its lower-left quarter.
    picture = page.frame_locator("iframe[title*='streamlit_image_coordinates']").locator("img")
    picture.wait_for(timeout=WAIT_MS)
    box = picture.bounding_box()
    assert box is not None
    x, y = 0.1 * box["width"], 0.8 * box["height"]
    picture.click(position={"x": x, "y": y})
    row, col = int(0.8 * 16), int(0.1 * 16)
    page.locator(
        '[data-testid="stCaptionContainer"]', has_text=f"query ({row}, {col})"
    ).first.wait_for(timeout=WAIT_MS)
    _settled(page, images)
    assert _overlay_sources(page)[:2] != before[:2]  # the key maps follow the query

    height = page.evaluate(
        """() => Math.max(900, ...Array.from(document.querySelectorAll(
            '[data-testid="stMain"], [data-testid="stAppViewContainer"]'), e => e.scrollHeight))"""
    )
    page.set_viewport_size({"width": 1500, "height": min(int(height) + 120, 4000)})
    _settled(page, images)
    shots = Path(os.environ.get("CAM_EXPLORER_SCREENSHOT_DIR", ROOT / "results" / "browser"))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "attention.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0


# ------------------------------------------------------------------------------ issue 11: the view
def _upload(page, files: dict[str, Path]) -> None:
    """Open the inputs panel and give each modality its file; wait until all are attached."""
    _open_inputs(page)
    for name, path in files.items():
        box = page.locator(MAIN_UPLOADERS).filter(has_text=name).first
        box.locator('input[type="file"]').set_input_files(str(path))
        box.get_by_text(path.name).wait_for(state="attached", timeout=WAIT_MS)


def _sample_files(tmp_path: Path, prefix: str = "mine_") -> dict[str, Path]:
    from cam_core import demo

    sample = sorted(p for p in Path(demo.SAMPLES_DIR).iterdir() if p.is_dir())[-1]
    files = {}
    for m in demo.MODALITIES:
        files[m.name] = tmp_path / f"{prefix}{m.name}.png"
        files[m.name].write_bytes((sample / f"{m.name}.png").read_bytes())
    return files


def test_uploads_survive_a_visit_to_another_page_and_nothing_is_fetched_from_outside(
    server: str, browser, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    outside: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server) else None)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server, timeout=WAIT_MS)
    count = len(_sample_files(tmp_path))
    _settled(page, count)
    _upload(page, _sample_files(tmp_path))
    _settled(page, count, "mine_")
    page.get_by_role("link", name="About").click()
    page.get_by_text("spec").first.wait_for(timeout=WAIT_MS)
    page.wait_for_selector(IDLE, timeout=WAIT_MS)
    page.get_by_role("link", name="Explorer").click()
    _settled(page, count, "mine_")  # the uploads are explained again
    assert page.get_by_text("Kept from before").count() == count
    assert [u for u in outside if not u.startswith("data:")] == []
    assert errors == []


def test_the_first_overlay_is_in_view_at_1440x900_without_scrolling(server: str, browser) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server, timeout=WAIT_MS)
    from cam_core import demo

    _settled(page, len(demo.MODALITIES))
    box = page.locator('[data-testid="stImage"] img').first.bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 900, box
    # The image_weight slider is above the sidebar's fold too.
    slider = page.get_by_role("slider", name="image_weight").bounding_box()
    assert slider is not None and slider["y"] + slider["height"] <= 900, slider


def test_a_300x200_upload_is_shown_and_downloaded_at_300x200(
    server: str, browser, tmp_path: Path
) -> None:
    from cam_core import demo

    rng = np.random.default_rng(0)
    files = {}
    for m in demo.MODALITIES:
        files[m.name] = tmp_path / f"wide_{m.name}.png"
        shape = (200, 300, 3) if m.channels == 3 else (200, 300)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(files[m.name])
    page = browser.new_page(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page.goto(server, timeout=WAIT_MS)
    _settled(page, len(files))
    _upload(page, files)
    _settled(page, len(files), "wide_")
    sizes = page.eval_on_selector_all(
        '[data-testid="stImage"] img', "els => els.map(e => [e.naturalWidth, e.naturalHeight])"
    )
    assert sizes == [[300, 200]] * len(files)
    # (The downloaded bytes are the shown PNGs: tests/test_app.py checks the ZIP's sizes.)
    page.get_by_text("notes on this result").first.click()
    page.get_by_text("resized from 300×200").first.wait_for(timeout=WAIT_MS)


def test_a_file_over_the_limit_gets_a_visible_error_under_its_uploader(
    server: str, browser, tmp_path: Path
) -> None:
    from cam_core import demo

    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * (21 * 1024 * 1024))
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server, timeout=WAIT_MS)
    _settled(page, len(demo.MODALITIES))
    _open_inputs(page)
    box = page.locator(MAIN_UPLOADERS).filter(has_text=demo.MODALITIES[0].name).first
    box.locator('input[type="file"]').set_input_files(str(huge))
    error = page.locator('[data-testid="stAlertContentError"]', has_text="huge.png").first
    error.wait_for(state="visible", timeout=WAIT_MS)
    assert "limit is 20 MB" in error.inner_text()


SIZELESS_SPEC = """
import torch
from torch import nn
from cam_core import Modality

MODALITIES = [Modality("rgb"), Modality("depth", channels=1)]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rgb = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.depth = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(8, 4, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, rgb, depth):
        x = self.fuse(torch.cat([self.rgb(rgb), self.depth(depth)], 1))
        return self.head(x.mean(dim=(2, 3)))


def build_model():
    torch.manual_seed(0)
    return Net()
"""


def test_a_spec_without_sizes_shows_overlays_after_uploads(
    browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "mine.py"
    spec.write_text(SIZELESS_SPEC)
    monkeypatch.setenv("CAM_EXPLORER_SPEC", str(spec))  # the server inherits it
    files = {"rgb": tmp_path / "photo.png", "depth": tmp_path / "depth.png"}
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(files["rgb"])
    Image.fromarray(np.full((30, 40), 40, np.uint8)).save(files["depth"])
    with streamlit_server(START_TIMEOUT_S) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url, timeout=WAIT_MS)
        page.get_by_text("The layers are listed once every input has an image").wait_for(
            timeout=WAIT_MS
        )
        page.wait_for_selector(IDLE, timeout=WAIT_MS)
        for name, path in files.items():
            box = page.locator(MAIN_UPLOADERS).filter(has_text=name).first
            box.locator('input[type="file"]').set_input_files(str(path))
            box.get_by_text(path.name).wait_for(state="attached", timeout=WAIT_MS)
        _settled(page, 2)
        assert page.locator('[data-testid="stException"]').count() == 0
