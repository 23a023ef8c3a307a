"""Several browser sessions uploading at once: each keeps its own files and sees its own overlays.

Bounded and local: SESSIONS Chromium contexts (separate cookies and Streamlit sessions) against
one `streamlit run` on localhost. The uploads of all sessions are sent interleaved, before any
wait, so the server decodes and explains them concurrently; then every session must show one
chip per uploaded file and overlays captioned with its own file names.  Sessions 0, 2, ... upload
one demo sample and 1, 3, ... another (under different names): overlays of sessions with the
same sample must be equal pixel for pixel, and differ from the other sample's, so a session
shown another's result fails.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app_server import streamlit_server
from tests.test_browser import START_TIMEOUT_S, WAIT_MS, _settled, browser  # noqa: F401

pytestmark = pytest.mark.browser

#: Sessions at once; CAM_EXPLORER_LOAD_SESSIONS=6 reproduces the audit's setting.
SESSIONS = int(os.environ.get("CAM_EXPLORER_LOAD_SESSIONS", 4))


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with streamlit_server(START_TIMEOUT_S) as url:
        yield url


def _shown_overlays(page) -> dict[str, np.ndarray]:
    """The overlays on the page, decoded, by the modality named in their caption."""
    shown = {}
    for element in page.locator('[data-testid="stImage"]').all():
        caption = element.inner_text()
        src = element.locator("img").get_attribute("src")
        body = page.request.get(src).body()
        with Image.open(io.BytesIO(body)) as image:
            shown[caption.split(" · ")[0].strip()] = np.asarray(image.convert("RGB"))
    return shown


def test_concurrent_sessions_keep_their_own_uploads_and_overlays(
    server: str,
    browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    from cam_core import demo

    names = [m.name for m in demo.MODALITIES]
    samples = sorted(p for p in Path(demo.SAMPLES_DIR).iterdir() if p.is_dir())
    size = {"width": 1400, "height": 1200}
    contexts = [browser.new_context(viewport=size) for _ in range(SESSIONS)]
    try:
        pages = [context.new_page() for context in contexts]
        for page in pages:
            page.goto(server, timeout=WAIT_MS)
        for page in pages:
            _settled(page, len(names))  # each opens on the demo sample
        # Every session uploads its own sample, under its own names, all sessions interleaved.
        files = {}
        for i in range(len(pages)):
            sample = samples[i % 2]
            for m in names:
                path = tmp_path / f"s{i}_{names.index(m)}.png"
                path.write_bytes((sample / f"{m}.png").read_bytes())
                files[i, m] = path
        for m in names:
            for i, page in enumerate(pages):
                box = page.locator('[data-testid="stFileUploader"]').filter(has_text=m).first
                box.locator('input[type="file"]').set_input_files(str(files[i, m]))
        shown = []
        for i, page in enumerate(pages):
            try:
                _settled(page, len(names), f"s{i}_")  # every overlay from this session's files
            except Exception:  # what every session showed, for whoever debugs it
                for j, p in enumerate(pages):
                    p.screenshot(path=str(tmp_path / f"fail{j}.png"), full_page=True)
                raise
            for m in names:
                box = page.locator('[data-testid="stFileUploader"]').filter(has_text=m).first
                assert box.get_by_text(files[i, m].name).count() == 1, (i, m)
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.get_by_text("No image for modality").count() == 0
            shown.append(_shown_overlays(page))
            assert sorted(shown[i]) == sorted(names)
        for i in range(2, len(pages)):
            for m in names:
                assert np.array_equal(shown[i][m], shown[i % 2][m]), (i, m)
        assert any(not np.array_equal(shown[0][m], shown[1][m]) for m in names)
    finally:
        for context in contexts:
            context.close()
