"""Ground-truth scores (cam_core.metrics) against cases computed by hand."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cam_core import InputError, metrics


def _mask(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    return mask


def test_pointing_game_is_true_when_the_maximum_lies_inside_the_mask():
    cam = np.zeros((4, 4), np.float32)
    cam[1, 2] = 1.0  # inside the 2x2 block at rows 0-1, cols 2-3
    cam[3, 0] = 0.9  # outside, lower
    mask = _mask((4, 4), slice(0, 2), slice(2, 4))
    assert metrics.pointing_game(cam, mask).tolist() == [True]
    cam[3, 0] = 1.5  # now the maximum is outside
    assert metrics.pointing_game(cam, mask).tolist() == [False]


def test_pointing_game_scores_each_sample_of_a_batch_with_its_own_mask():
    cams = np.zeros((3, 4, 4), np.float32)
    cams[0, 0, 0] = cams[1, 3, 3] = cams[2, 0, 3] = 1.0
    masks = np.stack([_mask((4, 4), slice(0, 1), slice(0, 1))] * 3)
    assert metrics.pointing_game(cams, masks).tolist() == [True, False, False]
    # one mask for the whole batch gives the same answer
    assert metrics.pointing_game(cams, masks[0]).tolist() == [True, False, False]


def test_pointing_game_counts_the_first_of_tied_maxima_and_never_a_flat_map():
    cam = np.array([[1.0, 0.0], [0.0, 1.0]])  # two maxima: (0, 0) first in row-major order
    assert metrics.pointing_game(cam, [[0, 0], [0, 1]]).tolist() == [False]
    assert metrics.pointing_game(cam, [[1, 0], [0, 0]]).tolist() == [True]
    flat = np.full((2, 2), 0.5)
    nan = np.full((2, 2), np.nan)
    everywhere = np.ones((2, 2), bool)
    assert metrics.pointing_game(np.stack([flat, nan]), everywhere).tolist() == [False, False]


def test_pointing_game_ignores_nan_pixels_when_finding_the_maximum():
    cam = np.array([[np.nan, 0.2], [0.9, 0.1]])
    assert metrics.pointing_game(cam, [[0, 0], [1, 0]]).tolist() == [True]


def test_energy_in_mask_is_the_share_of_the_sum_inside():
    cam = np.array([[1.0, 2.0], [3.0, 4.0]])
    mask = np.array([[True, False], [False, True]])
    # (1 + 4) / (1 + 2 + 3 + 4) = 0.5
    np.testing.assert_allclose(metrics.energy_in_mask(cam, mask), [0.5])
    np.testing.assert_allclose(metrics.energy_in_mask(cam, ~mask), [0.5])
    np.testing.assert_allclose(metrics.energy_in_mask(cam, [[0, 0], [1, 1]]), [0.7])


def test_energy_in_mask_of_a_uniform_map_is_the_mask_area():
    cam = np.ones((2, 10, 10), np.float32)
    masks = np.stack([_mask((10, 10), slice(0, 3), slice(0, 3)), np.zeros((10, 10), bool)])
    result = metrics.energy_in_mask(cam, masks)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, [0.09, 0.0], rtol=1e-6)


def test_energy_in_mask_counts_negative_values_as_zero_and_an_empty_map_as_zero():
    raw = np.array([[-5.0, 1.0], [3.0, -1.0]])  # positive part: 1 + 3; inside: 3
    np.testing.assert_allclose(metrics.energy_in_mask(raw, [[0, 0], [1, 1]]), [0.75])
    zero = np.zeros((2, 2))
    np.testing.assert_allclose(metrics.energy_in_mask(zero, np.ones((2, 2))), [0.0])


def test_a_mask_of_another_size_is_resized_to_the_map_by_nearest_neighbour():
    cam = np.zeros((4, 4))
    cam[3, 3] = 1.0
    cam[0, 0] = 0.5
    mask = _mask((2, 2), slice(1, 2), slice(1, 2))  # bottom-right quarter at 2x2
    assert metrics.pointing_game(cam, mask).tolist() == [True]
    # bottom-right quarter of the 4x4 map holds 1.0 of the 1.5 total
    np.testing.assert_allclose(metrics.energy_in_mask(cam, mask), [1.0 / 1.5], rtol=1e-6)


def test_load_mask_reads_white_on_black_png_and_resizes():
    pixels = np.zeros((8, 8), np.uint8)
    pixels[:4, 4:] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    mask = metrics.load_mask(buffer.getvalue())
    assert mask.dtype == bool and mask.sum() == 16 and mask[0, 7] and not mask[7, 0]
    small = metrics.load_mask(buffer.getvalue(), size=(4, 4))
    assert small.tolist() == _mask((4, 4), slice(0, 2), slice(2, 4)).tolist()


def test_metrics_refuse_mismatched_batches_with_a_clear_error():
    with pytest.raises(InputError, match="3 masks for 2 maps"):
        metrics.pointing_game(np.zeros((2, 4, 4)), np.zeros((3, 4, 4), bool))
    with pytest.raises(InputError, match="cam must be"):
        metrics.energy_in_mask(np.zeros(5), np.zeros((5, 5), bool))


def test_score_masks_scores_aligned_modalities_and_skips_missing_or_empty_masks():
    from cam_core import CamResult, Modality

    cams = np.zeros((3, 4, 4), np.float32)
    cams[:, 0, 0] = 1.0
    cams[:, 3, 3] = 1.0  # each map: 2 of 2 units, half at the top-left corner
    result = CamResult(
        cams={"rgb": cams, "spectrum": cams},
        raw={},
        display={},
        probabilities=np.zeros((3, 2), np.float32),
        targets=[0, 0, 0],
        layer="x",
        method="gradcam",
        modalities=(Modality("rgb"), Modality("spectrum", aligned=False)),
    )
    corner = _mask((4, 4), slice(0, 1), slice(0, 1))
    scores = metrics.score_masks(result, [corner, None, np.zeros((4, 4), bool)])
    assert list(scores) == ["rgb"]  # a spectrum's pixel is not a place: not scored
    assert scores["rgb"]["pointing_game"] == [True, None, None]
    assert scores["rgb"]["energy_in_mask"] == [pytest.approx(0.5), None, None]
    assert metrics.score_masks(result, [None, None, None]) == {}


def test_cli_masks_write_pointing_game_and_energy_to_summary(tmp_path, capsys):
    from cam_core.cli import main
    from cam_core.demo import SAMPLES_DIR

    out = tmp_path / "out"
    code = main(["explain", "--samples", str(SAMPLES_DIR), "--masks", str(SAMPLES_DIR),
                 "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = __import__("json").loads((out / "summary.json").read_text())
    hits, shares = [], []
    for sample in summary["samples"]:
        mask = metrics.load_mask(SAMPLES_DIR / sample["name"] / "mask.png")
        if not mask.any():  # the authentic sample: no region, no score
            assert sample["ground_truth"] is None
            continue
        cam = np.load(out / sample["files"]["texture"]["cam"])
        # reference: the maximum's position and the sums, computed here without cam_core
        row, col = np.unravel_index(np.argmax(cam), cam.shape)
        expected_share = cam[mask].sum() / cam.sum()
        truth = sample["ground_truth"]["texture"]
        assert truth["pointing_game"] == bool(mask[row, col])
        assert truth["energy_in_mask"] == pytest.approx(expected_share, rel=1e-5)
        assert "frequency" not in sample["ground_truth"]
        hits.append(truth["pointing_game"])
        shares.append(truth["energy_in_mask"])
    overall = summary["ground_truth"]["texture"]
    assert overall["samples"] == len(hits) == 3
    assert overall["pointing_game"] == pytest.approx(np.mean(hits))
    assert overall["energy_in_mask"] == pytest.approx(np.mean(shares), rel=1e-5)
