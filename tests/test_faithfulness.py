"""Faithfulness scores (Explainer.faithfulness): hand-checked curves on a tiny model, and on the
demo a real CAM ranked above a random map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cam_core import Explainer, InputError, Modality
from cam_core.faithfulness import area_under_curve, relevance_order


class PixelSum(nn.Module):
    """Two inputs of 2x2 pixels; logits ``[sum(a) + sum(b), 0]``: the first class's probability
    is ``sigmoid(sum(a) + sum(b))``."""

    def __init__(self) -> None:
        super().__init__()
        self.tap = nn.Identity()  # a layer to explain

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        score = self.tap(a).flatten(1).sum(1) + b.flatten(1).sum(1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def trapezoid(values: list[float]) -> float:
    """Area under points evenly spaced on [0, 1], summed interval by interval."""
    width = 1.0 / (len(values) - 1)
    return sum((lo + hi) / 2 * width for lo, hi in zip(values, values[1:]))


@pytest.fixture
def pixel_sum() -> tuple[Explainer, dict[str, torch.Tensor]]:
    explainer = Explainer(
        PixelSum(), [Modality("a", channels=1), Modality("b", channels=1)], device="cpu"
    )
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    b = torch.tensor([[[[0.5, -0.5], [0.0, 0.0]]]])  # sums to 0: the class depends on a only
    return explainer, {"a": a, "b": b}


def test_deletion_is_the_area_under_the_probability_as_top_pixels_become_zero(pixel_sum):
    explainer, inputs = pixel_sum
    cam = np.array([[[0.1, 0.2], [0.3, 0.4]]], np.float32)  # order: 4, 3, 2, 1
    scores = explainer.faithfulness(inputs, {"a": cam}, target=0, metric="deletion", steps=4)
    # remaining sums after removing 0..4 pixels: 10, 6, 3, 1, 0
    expected = trapezoid([sigmoid(v) for v in (10, 6, 3, 1, 0)])
    assert set(scores) == {"a"}
    assert scores["a"].dtype == np.float32 and scores["a"].shape == (1,)
    assert scores["a"][0] == pytest.approx(expected, abs=1e-6)


def test_insertion_puts_the_top_pixels_back_onto_the_baseline_first(pixel_sum):
    explainer, inputs = pixel_sum
    cam = np.array([[[0.1, 0.2], [0.3, 0.4]]], np.float32)
    scores = explainer.faithfulness(inputs, {"a": cam}, target=0, metric="insertion", steps=4)
    expected = trapezoid([sigmoid(v) for v in (0, 4, 7, 9, 10)])
    assert scores["a"][0] == pytest.approx(expected, abs=1e-6)
    # a map ranking the pixels the other way round inserts the smallest values first
    reverse = explainer.faithfulness(inputs, {"a": cam[:, ::-1, ::-1]}, 0, "insertion", 4)
    assert reverse["a"][0] == pytest.approx(trapezoid([sigmoid(v) for v in (0, 1, 3, 6, 10)]))
    assert scores["a"][0] > reverse["a"][0]


def test_steps_split_the_pixels_in_equal_shares_and_target_other_class(pixel_sum):
    explainer, inputs = pixel_sum
    cam = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)  # one (H, W) map for N = 1
    scores = explainer.faithfulness(inputs, {"a": cam}, target=1, metric="deletion", steps=2)
    # class 1 has probability 1 - sigmoid(sum); sums after 0, 2, 4 pixels removed: 10, 3, 0
    expected = trapezoid([1 - sigmoid(v) for v in (10, 3, 0)])
    assert scores["a"][0] == pytest.approx(expected, abs=1e-6)


def test_faithfulness_uses_the_modality_baseline_when_it_has_one():
    explainer = Explainer(
        PixelSum(),
        [Modality("a", channels=1, baseline=-1.0), Modality("b", channels=1)],
        device="cpu",
    )
    inputs = {"a": torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), "b": torch.zeros(1, 1, 2, 2)}
    cam = np.array([[[0.1, 0.2], [0.3, 0.4]]], np.float32)
    scores = explainer.faithfulness(inputs, {"a": cam}, target=0, metric="deletion", steps=4)
    # removed pixels become -1: sums 10, 6 - 1, 3 - 2, 1 - 3, -4
    expected = trapezoid([sigmoid(v) for v in (10, 5, 1, -2, -4)])
    assert scores["a"][0] == pytest.approx(expected, abs=1e-6)


def test_faithfulness_of_a_cam_result_defaults_to_its_explained_classes(pixel_sum):
    explainer, inputs = pixel_sum
    result = explainer.explain(inputs, layer="tap", method="gradcam", target=1)
    from_result = explainer.faithfulness(inputs, result, metric="deletion", steps=4)
    explicit = explainer.faithfulness(inputs, result.cams, target=1, metric="deletion", steps=4)
    assert set(from_result) == {"a", "b"}
    for name in from_result:
        np.testing.assert_array_equal(from_result[name], explicit[name])


def test_confidence_drop_is_grad_cams_drop_in_confidence(pixel_sum):
    explainer, inputs = pixel_sum
    cam = np.array([[[0.0, 0.0], [0.0, 1.0]]], np.float32)  # keeps only the 4
    scores = explainer.faithfulness(inputs, {"a": cam}, target=0, metric="confidence-drop")
    assert scores["a"][0] == pytest.approx(sigmoid(10) - sigmoid(4), abs=1e-6)


def test_road_equals_grad_cams_road_on_the_one_input_model():
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(2, 3, 8, 8)
    net(x)
    explainer = Explainer(net, [Modality("rgb")], device="cpu")
    cam = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    ours = explainer.faithfulness({"rgb": x}, {"rgb": cam}, target=[0, 2], metric="road")
    torch.manual_seed(0)
    targets = [ClassifierOutputSoftmaxTarget(0), ClassifierOutputSoftmaxTarget(2)]
    with torch.no_grad():
        reference = ROADCombined(percentiles=[20, 40, 60, 80])(x, cam, targets, net.eval())
    np.testing.assert_allclose(ours["rgb"], reference, atol=1e-5)


def test_relevance_order_is_most_relevant_first_and_stable_on_ties():
    cam = np.array([[[0.5, 0.9], [0.5, 0.1]]])
    assert relevance_order(cam).tolist() == [[1, 0, 2, 3]]
    np.testing.assert_allclose(area_under_curve(np.array([[1.0, 1.0, 0.0]])), [0.75])


def test_faithfulness_refuses_unknown_metrics_and_maps_of_the_wrong_batch(pixel_sum):
    explainer, inputs = pixel_sum
    with pytest.raises(InputError, match="unknown faithfulness metric 'auc'"):
        explainer.faithfulness(inputs, {"a": np.zeros((1, 2, 2))}, metric="auc")
    with pytest.raises(InputError, match="expected \\(N, H, W\\) with N = 1"):
        explainer.faithfulness(inputs, {"a": np.zeros((3, 2, 2))})
    with pytest.raises(InputError, match="no modality 'depth'"):
        explainer.faithfulness(inputs, {"depth": np.zeros((1, 2, 2))})
    with pytest.raises(InputError, match="steps must be a positive int"):
        explainer.faithfulness(inputs, {"a": np.zeros((1, 2, 2))}, steps=0)


def test_on_the_demo_a_real_cam_beats_a_random_map_on_most_edited_samples():
    from cam_core.demo import DEFAULT_LAYER, generate, load_explainer

    explainer = load_explainer(device="cpu")
    data = generate(16, seed=4242)
    edited = data.masks.reshape(len(data.labels), -1).any(axis=1)
    inputs = {name: images[edited] for name, images in data.inputs.items()}
    result = explainer.explain(inputs, DEFAULT_LAYER, "gradcam", target=list(data.labels[edited]))
    random_map = np.random.default_rng(0).random(result.cams["texture"].shape, np.float32)
    for metric, better in (("deletion", np.less), ("insertion", np.greater)):
        real = explainer.faithfulness(
            inputs, {"texture": result.cams["texture"]}, result.targets, metric=metric
        )["texture"]
        chance = explainer.faithfulness(
            inputs, {"texture": random_map}, result.targets, metric=metric
        )["texture"]
        assert ((real >= 0) & (real <= 1)).all()
        assert better(real, chance).mean() >= 0.75, (metric, real, chance)
