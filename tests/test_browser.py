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
