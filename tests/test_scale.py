"""A shared scale across maps (cam_core.scale) and the colorbar (cam_core.overlay.colorbar)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cam_core import InputError
from cam_core.overlay import colorbar, colorize
from cam_core.scale import shared_scale, value_at


def test_shared_scale_keeps_the_ratio_between_two_samples_raw_maps():
    rng = np.random.default_rng(0)
    weak = rng.random((1, 6, 6)).astype(np.float32)
    strong = 3.0 * weak
    (a, b), high = shared_scale([weak, strong])
    assert high == pytest.approx(float(strong.max()))
    assert b.max() == pytest.approx(1.0)
    np.testing.assert_allclose(b, 3.0 * a, rtol=1e-5)
    # per-image min-max scaling (grad-cam's) would have made them look alike
    assert a.max() == pytest.approx(1 / 3, rel=1e-5)


def test_shared_scale_keeps_ratios_after_resizing_and_zeroes_negative_values():
    raw = np.array([[[-1.0, 2.0], [4.0, 0.0]], [[1.0, 1.0], [8.0, -3.0]]], np.float32)
    (scaled,), high = shared_scale([raw], sizes=(8, 8))
    assert high == 8.0 and scaled.shape == (2, 8, 8) and scaled.dtype == np.float32
    reference = np.stack(
        [cv2.resize(np.maximum(m, 0) / 8.0, (8, 8), interpolation=cv2.INTER_LINEAR) for m in raw]
    )
    np.testing.assert_allclose(scaled, reference, atol=1e-6)


def test_shared_scale_across_layers_of_different_resolution():
    coarse = np.full((1, 2, 2), 2.0, np.float32)
    fine = np.full((1, 4, 4), 0.5, np.float32)
    (c, f), high = shared_scale([coarse, fine], sizes=[(4, 4), (4, 4)])
    assert high == 2.0
    np.testing.assert_allclose(c, 1.0)
    np.testing.assert_allclose(f, 0.25)


def test_shared_scale_of_maps_without_positive_values_is_zero():
    (scaled,), high = shared_scale([np.full((2, 3, 3), -1.0)])
    assert high == 0.0 and not scaled.any()


def test_shared_scale_refuses_a_bare_array_and_mismatched_sizes():
    with pytest.raises(InputError, match="list of maps"):
        shared_scale(np.zeros((2, 4, 4)))
    with pytest.raises(InputError, match="2 sizes for 1 maps"):
        shared_scale([np.zeros((4, 4))], sizes=[(4, 4), (8, 8)])


def test_value_at_reads_the_map_as_the_overlay_draws_it():
    cam = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    drawn = cv2.resize(cam, (8, 6), interpolation=cv2.INTER_LINEAR)  # (H, W) = (6, 8)
    for x in range(8):
        for y in range(6):
            assert value_at(cam, (x, y), size=(6, 8)) == pytest.approx(drawn[y, x], abs=1e-6)
    assert value_at(cam, (1, 0)) == 1.0  # at the map's own size: the pixel itself


def test_colorbar_runs_from_the_colormaps_low_to_high_color_with_labels():
    bar = colorbar("viridis", 0.0, 0.5, width=128, height=10, ticks=3)
    assert bar.dtype == np.uint8 and bar.shape[1:] == (128, 3) and bar.shape[0] > 10
    np.testing.assert_array_equal(bar[0, 0], colorize(np.zeros((1, 1)), "viridis")[0, 0])
    np.testing.assert_array_equal(bar[5, -1], colorize(np.ones((1, 1)), "viridis")[0, 0])
    labels = bar[10:]
    assert (labels < 128).any()  # dark text on the white label strip
    plain = colorbar("jet", ticks=0, width=64, height=4)
    assert plain.shape == (4, 64, 3)


def test_outline_draws_the_masks_border_only():
    from cam_core.overlay import outline

    images = np.zeros((1, 8, 8, 3), np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    drawn = outline(images, mask, color=(255, 0, 0))
    red = drawn[0, ..., 0] == 255
    expected = mask.copy()
    expected[3:5, 3:5] = False  # the 4x4 square's 1 px border: 12 pixels
    assert red.tolist() == expected.tolist()
    assert not images.any()  # a copy: the input is untouched
    assert not outline(images, np.zeros((8, 8), bool)).any()


def test_montage_puts_images_side_by_side_on_white():
    from cam_core.overlay import montage

    a = np.zeros((4, 3, 3), np.uint8)
    b = np.full((2, 2, 3), 7, np.uint8)  # resized to height 4: 4x4
    out = montage([a, b], gap=2)
    assert out.shape == (4, 3 + 2 + 4, 3)
    assert not out[:, :3].any() and (out[:, 3:5] == 255).all() and (out[:, 5:] == 7).all()
