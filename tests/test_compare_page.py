"""The Compare page, headless (AppTest): the grid on the demo sample, its scores against a
reference computed with cam_core directly, the shared scale, ranking, and opening a cell in the
explorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cam_core import metrics
from cam_core.demo import SAMPLES_DIR, load_explainer
from cam_core.images import load_image

APP = str(Path(__file__).absolute().parents[1] / "app.py")
TIMEOUT = 300  # two shared CPU cores: 16 cells and their faithfulness scores


@pytest.fixture(scope="module")
def page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _table(at: AppTest):
    return at.dataframe[0].value.set_index(["layer", "method"])


def test_compare_page_shows_the_grid_with_scores_equal_to_cam_core(page):
    layers = page.multiselect(key="compare_layers:demo").value
    methods = page.multiselect(key="compare_methods:demo").value
    assert "head.features" in layers and len(layers) == 4
    assert methods == ["gradcam", "gradcam++", "hirescam", "layercam"]
    table = _table(page)
    assert len(table) == 16
    assert [b.label for b in page.button].count("Open in explorer") == 16

    # reference: the same cell computed and scored with cam_core, outside the app
    explainer = load_explainer(device="cpu")
    folder = SAMPLES_DIR / "1-spliced"
    inputs = {
        m.name: [load_image(folder / f"{m.name}.png", m.channels)] for m in explainer.modalities
    }
    mask = metrics.load_mask(folder / "mask.png")
    result = explainer.explain(inputs, "texture_branch", "layercam")
    deletion = explainer.faithfulness(inputs, result, metric="deletion")
    row = table.loc[("texture_branch", "layercam")]
    for name in ("rgb", "frequency", "texture"):
        assert row[f"{name} deletion"] == pytest.approx(float(deletion[name][0]), abs=1e-5)
        assert 0.0 <= row[f"{name} deletion"] <= 1.0
    assert row["texture energy"] == pytest.approx(
        float(metrics.energy_in_mask(result.cams["texture"], mask)[0]), abs=1e-5
    )
    assert row["texture pointing"] == bool(metrics.pointing_game(result.cams["texture"], mask)[0])
    assert "frequency pointing" not in table.columns  # a spectrum is not scored against a mask
    captions = " ".join(c.value for c in page.caption)
    assert "each map to its max" in captions and "Deletion AUC, lower is more faithful" in captions


def test_shared_scale_and_ranking_change_the_view_not_the_scores(page):
    before = _table(page)
    page.radio(key="compare_scale").set_value("shared").run()
    assert not page.exception, [e.message for e in page.exception]
    captions = " ".join(c.value for c in page.caption)
    assert "raw value, shared across the grid" in captions
    page.toggle(key="compare_ranked:demo").set_value(True).run()
    labels = [m.value for m in page.markdown if m.value.startswith("**#")]
    assert len(labels) == 16 and labels[0].startswith("**#1**")
    # the first ranked cell has the lowest texture deletion score of the table
    best = before["texture deletion"].idxmin()
    assert labels[0] == f"**#1** · {best[1]} · `{best[0]}`"
    np.testing.assert_allclose(_table(page)["texture deletion"], before["texture deletion"])
    page.toggle(key="compare_ranked:demo").set_value(False).run()
    page.radio(key="compare_scale").set_value("each map").run()


def test_open_in_explorer_shows_that_layer_and_method(page):
    page.selectbox(key="compare_inspect:demo").set_value(15).run()  # head.features · layercam
    assert not page.exception, [e.message for e in page.exception]
    assert any("layercam at `head.features`" in s.value for s in page.subheader)
    page.button(key="open:texture_branch:hirescam").click().run()
    assert not page.exception, [e.message for e in page.exception]
    captions = " ".join(c.value for c in page.caption)
    assert "layer `texture_branch` · hirescam" in captions
