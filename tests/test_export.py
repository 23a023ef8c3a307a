"""cam_core.export: the PNGs, ZIP and settings.json a user downloads from the app."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from cam_core.export import (
    original_pngs,
    overlay_png,
    overlay_pngs,
    result_zip,
    settings_dict,
    zip_names,
)
from cam_core.modality import Modality
from cam_core.result import CamResult


@pytest.fixture
def result() -> CamResult:
    """Two samples, two modalities of different sizes, a constant (no-signal) CAM."""
    rng = np.random.default_rng(0)
    sizes = {"rgb": (24, 40), "texture": (16, 16)}
    cams = {k: rng.random((2, *s), dtype=np.float32) for k, s in sizes.items()}
    cams["texture"][1] = 0.0
    return CamResult(
        cams=cams,
        raw={k: rng.normal(size=(2, 4, 4)).astype(np.float32) for k in sizes},
        display={k: rng.integers(0, 256, (2, *s, 3), dtype=np.uint8) for k, s in sizes.items()},
        probabilities=np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32),
        targets=[1, 0],
        layer="fusion",
        method="gradcam",
        modalities=(Modality("rgb"), Modality("texture", channels=1)),
        classes=["real", "fake"],
        empty={"rgb": np.array([False, False]), "texture": np.array([False, True])},
        notices=["texture: sample 2 carries no signal"],
        options={"aug_smooth": False, "eigen_smooth": True},
    )


def _png_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_overlay_png_decodes_to_the_overlay_pixels(result: CamResult) -> None:
    data = overlay_png(result, "rgb", 1, colormap="viridis", image_weight=0.3)
    np.testing.assert_array_equal(_png_pixels(data), result.overlay("rgb", "viridis", 0.3)[1])


def test_overlay_pngs_cover_every_sample_and_modality(result: CamResult) -> None:
    pngs = overlay_pngs(result, colormap="jet", image_weight=0.5)
    assert sorted(pngs) == ["rgb", "texture"]
    assert [len(v) for v in pngs.values()] == [2, 2]
    assert _png_pixels(pngs["texture"][0]).shape == (16, 16, 3)


def test_zip_holds_overlays_originals_cams_raw_and_settings(result: CamResult) -> None:
    settings = settings_dict(
        result,
        model="demo",
        target=None,
        colormap="turbo",
        image_weight=0.25,
        inputs={"rgb": ["a.png", "b.png"], "texture": ["a_t.png", "b_t.png"]},
    )
    data = result_zip(result, colormap="turbo", image_weight=0.25, settings=settings)
    shown = overlay_pngs(result, colormap="turbo", image_weight=0.25)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        members = set(archive.namelist())
        for name in ("rgb", "texture"):
            for i in range(2):
                files = zip_names(i, name)
                assert set(files.values()) <= members
                # Same bytes as the app shows, hence the same pixels.
                assert archive.read(files["overlay"]) == shown[name][i]
                np.testing.assert_array_equal(
                    _png_pixels(archive.read(files["original"])), result.display[name][i]
                )
                cam = np.load(io.BytesIO(archive.read(files["cam"])), allow_pickle=False)
                np.testing.assert_array_equal(cam, result.cams[name][i])
                assert cam.dtype == np.float32
                raw = np.load(io.BytesIO(archive.read(files["raw"])), allow_pickle=False)
                np.testing.assert_array_equal(raw, result.raw[name][i])
        saved = json.loads(archive.read("settings.json"))
    assert _png_pixels(shown["rgb"][0]).shape == (24, 40, 3)
    assert saved["model"] == "demo"
    assert saved["layer"] == "fusion" and saved["method"] == "gradcam"
    assert saved["target"] is None and saved["targets"] == [1, 0]
    assert saved["target_names"] == ["fake", "real"]
    assert saved["colormap"] == "turbo" and saved["image_weight"] == 0.25
    assert saved["options"] == {"aug_smooth": False, "eigen_smooth": True}
    np.testing.assert_allclose(saved["probabilities"], result.probabilities, atol=1e-6)
    assert saved["no_signal"]["texture"] == [False, True]
    assert saved["inputs"]["rgb"] == ["a.png", "b.png"]
    assert set(saved["files"]) == members


def test_zip_skips_raw_maps_a_method_does_not_have(result: CamResult) -> None:
    result.raw = {}
    settings = settings_dict(result, model="demo", target=1, colormap="jet", image_weight=0.5)
    with zipfile.ZipFile(
        io.BytesIO(result_zip(result, colormap="jet", image_weight=0.5, settings=settings))
    ) as archive:
        names = archive.namelist()
    assert not [n for n in names if n.startswith("raw/")]
    assert "overlays/00_rgb.png" in names


def test_settings_are_plain_json(result: CamResult) -> None:
    result.options = {"aug_smooth": np.bool_(True), "scales": (1.0, 2.0)}
    settings = settings_dict(result, model="demo", target=1, colormap="jet", image_weight=0.5)
    again = json.loads(json.dumps(settings))
    assert again["options"] == {"aug_smooth": True, "scales": [1.0, 2.0]}
    assert again["target"] == 1


def test_original_pngs_are_the_display_images(result: CamResult) -> None:
    pngs = original_pngs(result)
    np.testing.assert_array_equal(_png_pixels(pngs["texture"][1]), result.display["texture"][1])
