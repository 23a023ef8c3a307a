"""The attention page, headless (AppTest): a click on the query image sets the query, the key
maps follow; head choice; rollout on a self-attention stack."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from cam_core import AttentionResult, RolloutResult
from cam_core.explainer import Explainer

ROOT = Path(__file__).absolute().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 180  # generous: two CPU cores are shared with other test runs
CLICK = "attn_click:demo:fusion.attn:rgb"
QUERY = "attn_query:demo:fusion.attn:rgb"


@pytest.fixture
def heatmaps(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every key_heatmaps call the page makes: (query, keywords, maps)."""
    calls: list[tuple] = []
    original = AttentionResult.key_heatmaps

    def spy(self, query, **where):
        maps = original(self, query, **where)
        calls.append((query, where, maps))
        return maps

    monkeypatch.setattr(AttentionResult, "key_heatmaps", spy)
    return calls


@pytest.fixture
def page() -> Iterator[AppTest]:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/attention.py").run()
    assert not at.exception, [e.message for e in at.exception]
    yield at


def image_urls(at: AppTest) -> list[str]:
    return [image.proto.imgs[0].url for image in at.get("image")]


def test_attention_page_lists_the_demo_cross_attention_and_shows_its_key_maps(
    heatmaps: list[tuple], page: AppTest
) -> None:
    assert page.selectbox(key="attn_layer:demo").options == ["fusion.attn"]
    assert page.session_state[QUERY] == (8, 8)  # the centre of the 16x16 RGB query grid
    captions = [c.proto.imgs[0].caption for c in page.get("image")]
    assert "texture · keys · mean of the heads" in captions
    assert "frequency · keys · mean of the heads" in captions
    assert sum(c.startswith("head ") for c in captions) == 2 * 4  # 4 heads x 2 key modalities
    # The demo lets each RGB token see only the texture token at its own place.
    query, where, maps = heatmaps[-1 - 4]  # the mean map, before the four per-head maps
    assert query == (8, 8) and where["head"] == "mean"
    peak = np.unravel_index(maps["texture"].argmax(), maps["texture"].shape)
    assert (peak[0] // 4, peak[1] // 4) == (8, 8)  # 64 px image, 16x16 grid: 4 px per token
    assert any("no self-attention layer" in i.body for i in page.info)  # rollout: not a ViT
    assert not page.multiselect  # so no rollout controls


def test_a_click_on_the_query_image_moves_the_query_and_the_maps(
    page: AppTest, heatmaps: list[tuple]
) -> None:
    before = image_urls(page)
    # The component reports the click in the pixels it showed (256 px for the 64 px image).
    page.session_state[CLICK] = {"x": 10, "y": 200, "width": 256, "height": 256}
    page.run()
    assert not page.exception, [e.message for e in page.exception]
    expected = (int(200 / 256 * 16), int(10 / 256 * 16))  # (row, col) on the 16x16 grid
    assert page.session_state[QUERY] == expected == (12, 0)
    assert any(f"query ({expected[0]}, {expected[1]})" in c.value for c in page.caption)
    query, _, maps = heatmaps[-1 - 4]
    assert query == expected
    peak = np.unravel_index(maps["texture"].argmax(), maps["texture"].shape)
    assert (peak[0] // 4, peak[1] // 4) == expected
    after = image_urls(page)
    assert after[0] != before[0] and after[1] != before[1]  # texture and frequency maps changed
    page.run()  # the same click again (a rerun) does not move the query back or forth
    assert page.session_state[QUERY] == expected


def test_choosing_a_head_shows_that_heads_maps(page: AppTest, heatmaps: list[tuple]) -> None:
    control = page.get("button_group")[0]
    control.set_value(2).run()
    assert not page.exception, [e.message for e in page.exception]
    query, where, maps = heatmaps[-1 - 4]
    assert where["head"] == 2 and query == page.session_state[QUERY]
    head_2 = heatmaps[-1 - 4 + 1 + 2][2]  # the grid's own head-2 map
    np.testing.assert_array_equal(maps["frequency"], head_2["frequency"])
    captions = [c.proto.imgs[0].caption for c in page.get("image")]
    assert "frequency · keys · head 2" in captions


def test_a_broken_upload_is_named_under_its_uploader_and_the_others_stay(page: AppTest) -> None:
    png = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8), "L").save(png, "PNG")
    page.file_uploader(key="attn_upload:demo:texture").set_value(
        [("mine.png", png.getvalue(), "image/png")]
    )
    page.file_uploader(key="attn_upload:demo:rgb").set_value(
        [("broken.png", b"not an image at all", "image/png")]
    )
    page.run()
    assert not page.exception, [e.message for e in page.exception]
    assert any("broken.png" in e.value for e in page.error)
    assert page.file_uploader(key="attn_upload:demo:texture").value  # still there
    assert page.file_uploader(key="attn_upload:demo:frequency") is not None
    assert page.selectbox(key="attn_sample:demo").disabled  # uploads take over from samples


@pytest.fixture
def vit_spec(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The two-stream ViT example offered by the app (spec named by CAM_EXPLORER_SPEC)."""
    from pages.ui import common

    monkeypatch.setenv("CAM_EXPLORER_SPEC", str(ROOT / "examples" / "two_stream_vit_spec.py"))
    common._available_models.clear()
    yield "two_stream_vit_spec"
    common._available_models.clear()


def test_rollout_of_a_self_attention_stack_is_shown(
    vit_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    results: list[RolloutResult] = []
    original = Explainer.rollout

    def spy(self, *args, **kwargs):
        results.append(original(self, *args, **kwargs))
        return results[-1]

    monkeypatch.setattr(Explainer, "rollout", spy)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.sidebar.selectbox(key="model").set_value(vit_spec).run()
    at.switch_page("pages/attention.py").run()
    assert not at.exception, [e.message for e in at.exception]
    layers = at.selectbox(key=f"attn_layer:{vit_spec}").options
    assert "rgb_stream.block.attn" in layers and "rgb_from_depth.attn" in layers
    assert any("upload one image per modality" in i.body for i in at.info)  # no samples
    rng = np.random.default_rng(0)
    for name, mode in (("rgb", "RGB"), ("depth", "L")):
        shape = (64, 64, 3) if mode == "RGB" else (64, 64)
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, "PNG")
        at.file_uploader(key=f"attn_upload:{vit_spec}:{name}").set_value(
            [(f"{name}.png", buffer.getvalue(), "image/png")]
        )
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    rollout_layers = at.multiselect(key=f"attn_rollout_layers:{vit_spec}")
    assert rollout_layers.options == [
        "rgb_stream.block.attn",
        "depth_stream.block.attn",
        "joint.attn",
    ]
    # Every self-attention layer at once: the streams' 65 tokens and the joint 130 cannot chain.
    assert any("different token counts" in i.body for i in at.info)
    at.multiselect(key=f"attn_rollout_layers:{vit_spec}").set_value(["rgb_stream.block.attn"])
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    result = results[-1]
    assert result.layers == ["rgb_stream.block.attn"] and result.raw.shape == (1, 8, 8)
    captions = [c.proto.imgs[0].caption for c in at.get("image")]
    assert "rgb · rollout · mean" in captions and "depth · rollout · mean" in captions
    assert any("depth: no tokens of depth" in c.value for c in at.caption)
