"""Overlays at each input's own resolution and aspect ratio: the CAM is computed at the model's
input size and resized onto the original (API, export, CLI), and the resize is said."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch import nn

from cam_core import Explainer, Modality, export
from cam_core.cli import main


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rgb = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.gray = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, rgb: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.rgb(rgb), self.gray(gray)], 1)
        return self.head(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    torch.manual_seed(0)
    return Explainer(
        TwoInputs(), [Modality("rgb", size=32), Modality("gray", channels=1, size=32)], "cpu"
    )


def photo(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_overlay_of_a_300x200_upload_is_300x200_and_equals_grad_cams_blend(explainer) -> None:
    rgb, gray = photo(200, 300), photo(200, 300, 1, seed=1)
    result = explainer.explain({"rgb": rgb, "gray": gray}, "rgb.1")
    assert result.cams["rgb"].shape == (1, 32, 32)  # computed at the model's size
    (overlay,) = result.overlay("rgb", "jet", 0.4, full_size=True)
    assert overlay.shape == (200, 300, 3) and overlay.dtype == np.uint8
    # Reference: the model-size CAM resized with OpenCV, blended by grad-cam itself.
    cam = np.clip(cv2.resize(result.cams["rgb"][0], (300, 200)), 0, 1)
    expected = show_cam_on_image(rgb.astype(np.float32) / 255, cam, use_rgb=True, image_weight=0.4)
    np.testing.assert_array_equal(overlay, expected)
    (gray_overlay,) = result.overlay("gray", full_size=True)
    assert gray_overlay.shape == (200, 300, 3)
    # The model-size overlay is still there for who wants it.
    assert result.overlay("rgb").shape == (1, 32, 32, 3)
    resized = [n for n in result.notices if "resized from 300×200 to 32×32" in n]
    assert len(resized) == 2 and all("drawn at 300×200" in n for n in resized)


def test_images_of_different_sizes_each_keep_their_own(explainer) -> None:
    rgb = [photo(200, 300), photo(90, 40, seed=2)]
    gray = [photo(200, 300, 1), photo(90, 40, 1, seed=3)]
    result = explainer.explain({"rgb": rgb, "gray": gray}, "rgb.1")
    shapes = [o.shape for o in result.overlay("rgb", full_size=True)]
    assert shapes == [(200, 300, 3), (90, 40, 3)]
    np.testing.assert_array_equal(result.images("rgb")[1], rgb[1])


def test_inputs_at_the_model_size_are_not_copied_or_noted(explainer) -> None:
    result = explainer.explain({"rgb": photo(32, 32), "gray": photo(32, 32, 1)}, "rgb.1")
    assert result.originals == {}
    assert not [n for n in result.notices if "resized" in n]
    np.testing.assert_array_equal(
        result.overlay("rgb", full_size=True)[0], result.overlay("rgb")[0]
    )


def test_exported_overlays_and_originals_are_at_the_upload_size(explainer) -> None:
    result = explainer.explain({"rgb": photo(200, 300), "gray": photo(200, 300, 1)}, "rgb.1")
    pngs = export.overlay_pngs(result, colormap="jet", image_weight=0.5)
    settings = export.settings_dict(
        result, model="m", target=None, colormap="jet", image_weight=0.5
    )
    data = export.result_zip(
        result, colormap="jet", image_weight=0.5, settings=settings, overlays=pngs
    )
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for kind in ("overlays", "originals"):
            with Image.open(io.BytesIO(archive.read(f"{kind}/00_rgb.png"))) as image:
                assert image.size == (300, 200)
        assert np.load(io.BytesIO(archive.read("cams/00_rgb.npy"))).shape == (32, 32)


def test_cli_overlays_are_at_each_files_own_size(tmp_path, capsys) -> None:
    from cam_core.sources import demo_spec

    spec = demo_spec()
    args = []
    for m in spec.modalities:
        path = tmp_path / f"{m.name}.png"
        Image.fromarray(photo(200, 300, m.channels)).save(path)
        args += ["--input", f"{m.name}={path}"]
    code = main(["explain", *args, "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (sample,) = summary["samples"]
    for m in spec.modalities:
        with Image.open(tmp_path / "out" / sample["files"][m.name]["overlay"]) as png:
            assert png.size == (300, 200)
