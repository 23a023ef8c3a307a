"""The Compare page in a real browser: Debian's Chromium (Playwright) against `streamlit run`.

Opens the grid on the demo sample, reads the map's value at a clicked point of an inspected
cell, and opens that cell in the explorer. Waits on Streamlit's own signals, never on sleeps.
Screenshots land in results/browser/ (or $CAM_EXPLORER_SCREENSHOT_DIR).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests import test_browser
from tests.app_server import ROOT

pytestmark = pytest.mark.browser
# The explorer's browser test's fixtures: `streamlit run app.py` (one per module) and Chromium.
server, browser = test_browser.server, test_browser.browser

WAIT_MS = 300_000  # 16 cells and their scores on two shared CPU cores: generous, never sleep
SETTLED = """(buttons) => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    if (document.querySelector('[data-testid="stSkeleton"], [data-stale="true"]')) return false;
    const open = [...document.querySelectorAll('button')]
        .filter(b => b.innerText.includes('Open in explorer'));
    return open.length === buttons;
}"""


def _settled(page, buttons: int) -> None:
    page.wait_for_function(SETTLED, arg=buttons, timeout=WAIT_MS)


def test_compare_grid_inspect_a_point_and_open_a_cell_in_the_explorer(server, browser) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server, timeout=WAIT_MS)
    page.get_by_role("link", name="Compare layers and methods").click(timeout=WAIT_MS)
    page.get_by_text("Scores", exact=True).wait_for(timeout=WAIT_MS)
    _settled(page, 16)  # 4 layers x 4 methods, one button per cell
    assert page.locator('[data-testid="stException"]').count() == 0
    shots = Path(os.environ.get("CAM_EXPLORER_SCREENSHOT_DIR", ROOT / "results" / "browser"))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "compare.png"))

    # Inspect one cell and click the middle of its texture image: the value there is shown.
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Inspect a cell")
    box.click(timeout=WAIT_MS)
    page.keyboard.type("layercam at head")  # filters the (virtualized) list to one option
    page.get_by_role("option", name="layercam at head.features").click(timeout=WAIT_MS)
    frames = page.locator('iframe[title*="streamlit_image_coordinates"]')
    frames.nth(2).wait_for(timeout=WAIT_MS)
    _settled(page, 17)  # and the inspected cell's own button
    frame = frames.nth(2)  # rgb, frequency, texture
    frame.scroll_into_view_if_needed()
    image = frame.content_frame.locator("img")
    image.wait_for(timeout=WAIT_MS)
    size = image.bounding_box()
    image.click(position={"x": size["width"] / 2, "y": size["height"] / 2}, timeout=WAIT_MS)
    caption = page.locator('[data-testid="stCaptionContainer"]', has_text="texture at (")
    caption.wait_for(timeout=WAIT_MS)
    match = re.search(r"texture at \((\d+), (\d+)\): map ([0-9.]+)", caption.inner_text())
    assert match, caption.inner_text()
    assert abs(int(match[1]) - 32) <= 2 and abs(int(match[2]) - 32) <= 2  # 64 px input
    assert 0.0 <= float(match[3]) <= 1.0
    _settled(page, 17)

    height = page.evaluate(
        """() => Math.max(900, ...Array.from(document.querySelectorAll(
            '[data-testid="stMain"], [data-testid="stAppViewContainer"]'), e => e.scrollHeight))"""
    )
    page.set_viewport_size({"width": 1440, "height": min(int(height) + 120, 6000)})
    _settled(page, 17)
    page.screenshot(path=str(shots / "compare-full.png"), full_page=True)
    page.set_viewport_size({"width": 1440, "height": 900})

    # Open it in the explorer: the explorer shows that layer and method.
    page.locator(".st-key-open_inspected button").click(timeout=WAIT_MS)
    page.locator('[data-testid="stCaptionContainer"]', has_text="layer head.features").filter(
        has_text="layercam"
    ).first.wait_for(timeout=WAIT_MS)
    assert page.locator('[data-testid="stException"]').count() == 0
