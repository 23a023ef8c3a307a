"""overlay / blend / colorize / to_png, checked against grad-cam's show_cam_on_image."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image

from cam_core.errors import InputError
from cam_core.images import to_display
from cam_core.overlay import COLORMAPS, blend, colorize, overlay, to_png

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _image(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    return _rng(seed).random((h, w, 3), dtype=np.float32)


def _cam(h: int = 24, w: int = 32, seed: int = 1) -> np.ndarray:
    return _rng(seed).random((h, w), dtype=np.float32)


def _reference(img: np.ndarray, cam: np.ndarray, colormap: int = cv2.COLORMAP_JET, w=0.5):
    return show_cam_on_image(img, cam, use_rgb=True, colormap=colormap, image_weight=w)


# ------------------------------------------------------------------------------------------
# pixel contract
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [0.0, 0.25, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("name", ["jet", "turbo", "viridis", "inferno"])
def test_overlay_float_hwc_equals_show_cam_on_image_exactly(name, weight):
    img, cam = _image(), _cam()
    out = overlay(img, cam, colormap=name, image_weight=weight)
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, _reference(img, cam, COLORMAPS[name], weight))


def test_overlay_uint8_hwc_equals_show_cam_on_image_of_img_over_255():
    img8 = _rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    cam = _cam()
    for weight in (0.3, 0.5, 0.7):
        out = overlay(img8, cam, image_weight=weight)
        # exact against the float32 conversion; float64 img / 255 may differ by 1 at most
        np.testing.assert_array_equal(out, _reference(np.float32(img8) / 255, cam, w=weight))
        diff = out.astype(int) - _reference(img8 / 255, cam, w=weight)
        assert np.abs(diff).max() <= 1


def test_overlay_accepts_normalized_nhwc_tensor():
    pixels = torch.rand(2, 20, 28, 3, generator=torch.Generator().manual_seed(3))
    normalized = (pixels - torch.tensor(MEAN)) / torch.tensor(STD)
    cams = torch.rand(2, 20, 28, generator=torch.Generator().manual_seed(4))
    out = overlay(normalized, cams, mean=MEAN, std=STD)
    assert out.shape == (2, 20, 28, 3)
    for i in range(2):
        expected = _reference(pixels[i].numpy(), cams[i].numpy())
        assert np.abs(out[i].astype(int) - expected).max() <= 2


def test_overlay_accepts_normalized_nchw_tensor_requiring_grad():
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    normalized = (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    cams = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(6))
    out = overlay(normalized.requires_grad_(), cams, mean=MEAN, std=STD)
    for i in range(2):
        expected = _reference(pixels[i].permute(1, 2, 0).numpy(), cams[i].numpy())
        assert np.abs(out[i].astype(int) - expected).max() <= 2


def test_overlay_chw_input_equals_hwc_input():
    img, cam = _image(), _cam()
    np.testing.assert_array_equal(overlay(img.transpose(2, 0, 1), cam), _reference(img, cam))
    np.testing.assert_array_equal(
        overlay(torch.from_numpy(img).permute(2, 0, 1), cam), overlay(img, cam)
    )


def test_overlay_grayscale_input_is_drawn_as_gray_rgb():
    gray8 = _rng(7).integers(0, 256, (24, 32), dtype=np.uint8)
    cam = _cam()
    expected = _reference(np.float32(np.repeat(gray8[..., None], 3, axis=2)) / 255, cam)
    for gray in (gray8, gray8[..., None], gray8[None]):
        np.testing.assert_array_equal(overlay(gray, cam), expected)


def test_overlay_resizes_small_cam_bilinearly():
    img, small = _image(64, 64), _cam(7, 7)
    resized = cv2.resize(small, (64, 64), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(overlay(img, small), _reference(img, resized))


def test_overlay_resizes_non_square_cam_to_image_width_and_height():
    img, small = _image(40, 60), _cam(5, 9)
    resized = cv2.resize(small, (60, 40), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(overlay(img, small), _reference(img, resized))


def test_every_colormap_name_and_code_works():
    img, cam = _image(8, 8), _cam(8, 8)
    assert {"jet", "turbo", "viridis", "inferno", "magma", "plasma", "hot", "bone"} <= set(
        COLORMAPS
    )
    for name, code in COLORMAPS.items():
        expected = _reference(img, cam, code)
        np.testing.assert_array_equal(overlay(img, cam, colormap=name), expected)
        np.testing.assert_array_equal(overlay(img, cam, colormap=name.upper()), expected)
        np.testing.assert_array_equal(overlay(img, cam, colormap=code), expected)


# ------------------------------------------------------------------------------------------
# batches and CAM values
# ------------------------------------------------------------------------------------------


def test_overlay_one_image_many_cams_and_many_images_one_cam():
    img, cams = _image(), np.stack([_cam(seed=s) for s in range(3)])
    out = overlay(img, cams)
    assert out.shape == (3, 24, 32, 3)
    for i in range(3):
        np.testing.assert_array_equal(out[i], _reference(img, cams[i]))
    imgs = np.stack([_image(seed=s) for s in range(3)])
    out = overlay(imgs, cams[0])
    assert out.shape == (3, 24, 32, 3)
    for i in range(3):
        np.testing.assert_array_equal(out[i], _reference(imgs[i], cams[0]))


def test_overlay_is_batched_when_either_input_is():
    img, cam = _image(), _cam()
    assert overlay(img, cam).shape == (24, 32, 3)
    assert overlay(img, cam[None]).shape == (1, 24, 32, 3)
    assert overlay(img[None], cam).shape == (1, 24, 32, 3)
    assert overlay(img[None], cam[None, None]).shape == (1, 24, 32, 3)  # (N, 1, H, W) CAM


def test_overlay_refuses_mismatched_batch_counts():
    imgs = np.stack([_image(seed=s) for s in range(2)])
    cams = np.stack([_cam(seed=s) for s in range(3)])
    with pytest.raises(InputError, match="2 images and 3 CAMs"):
        overlay(imgs, cams)


def test_overlay_nan_cam_is_zero_and_values_are_clipped():
    img, cam = _image(), _cam()
    dirty = cam.copy()
    dirty[0, :5] = np.nan
    dirty[1, :5] = 7.0
    dirty[2, :5] = -3.0
    clean = dirty.copy()
    clean[0, :5] = 0.0
    clean[1, :5] = 1.0
    clean[2, :5] = 0.0
    np.testing.assert_array_equal(overlay(img, dirty), _reference(img, clean))


def test_overlay_of_black_image_with_full_weight_is_black_not_nan():
    out = overlay(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4)), image_weight=1.0)
    np.testing.assert_array_equal(out, 0)


def test_blend_equals_overlay_on_display_pixels():
    imgs8 = _rng(8).integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)
    cams = np.stack([_cam(seed=s) for s in range(3)])
    out = blend(imgs8, cams, "magma", 0.4)
    np.testing.assert_array_equal(out, overlay(imgs8, cams, colormap="magma", image_weight=0.4))
    display, _ = to_display(imgs8)
    np.testing.assert_array_equal(blend(display, cams, COLORMAPS["magma"], 0.4), out)


# ------------------------------------------------------------------------------------------
# bad input: InputError, never cv2.error or a bare Exception
# ------------------------------------------------------------------------------------------


def test_overlay_refuses_bad_arguments_with_input_error():
    img, cam = _image(), _cam()
    with pytest.raises(InputError, match=r"image_weight must be in \[0, 1\], got 1.5"):
        overlay(img, cam, image_weight=1.5)
    with pytest.raises(InputError, match=r"image_weight must be in \[0, 1\], got nan"):
        overlay(img, cam, image_weight=float("nan"))
    with pytest.raises(InputError, match="unknown colormap 'jetty'; choose one of .*viridis"):
        overlay(img, cam, colormap="jetty")
    with pytest.raises(InputError, match="unknown colormap 999"):
        overlay(img, cam, colormap=999)
    with pytest.raises(InputError, match=r"cam has shape \(2, 3, 24, 32\)"):
        overlay(img, np.zeros((2, 3, 24, 32)))
    with pytest.raises(InputError, match=r"cam has shape \(0, 5\)"):
        overlay(img, np.zeros((0, 5)))
    with pytest.raises(InputError, match=r"image has shape \(24, 32, 2\)"):
        overlay(np.zeros((24, 32, 2)), cam)
    with pytest.raises(InputError, match="looks normalized"):
        overlay(img * 4 - 2, cam)
    with pytest.raises(InputError, match="cam has dtype"):
        overlay(img, np.array([["a", "b"]]))


# ------------------------------------------------------------------------------------------
# colorize and PNG
# ------------------------------------------------------------------------------------------


def test_colorize_equals_opencv_applycolormap_in_rgb():
    cam = _cam()
    for name in ("jet", "viridis", "twilight_shifted"):
        expected = cv2.applyColorMap(np.uint8(255 * cam), COLORMAPS[name])[..., ::-1]
        np.testing.assert_array_equal(colorize(cam, name), expected)
    assert colorize(np.stack([cam, cam]), "hot").shape == (2, 24, 32, 3)
    np.testing.assert_array_equal(
        colorize(np.full((2, 2), np.nan))[0, 0], colorize(np.zeros((1, 1)))[0, 0]
    )


def test_to_png_round_trips_rgb_gray_and_rgba():
    rng = _rng(9)
    for arr in (
        rng.integers(0, 256, (9, 11, 3), dtype=np.uint8),
        rng.integers(0, 256, (9, 11), dtype=np.uint8),
        rng.integers(0, 256, (9, 11, 4), dtype=np.uint8),
    ):
        decoded = Image.open(io.BytesIO(to_png(arr)))
        assert decoded.format == "PNG"
        np.testing.assert_array_equal(np.asarray(decoded), arr)
    out = overlay(_image(), _cam())
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(to_png(out)))), out)


def test_to_png_refuses_float_and_batches():
    with pytest.raises(InputError, match="needs uint8 pixels, got dtype float32"):
        to_png(_image())
    with pytest.raises(InputError, match=r"shape \(2, 4, 4, 3\).*to_png\(images\[i\]\)"):
        to_png(np.zeros((2, 4, 4, 3), np.uint8))
