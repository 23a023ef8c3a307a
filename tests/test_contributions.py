"""Modality contributions: the target's probability lost with one input at its baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cam_core import Explainer, InputError, Modality
from cam_core.demo import CLASSES, generate, load_explainer


class MeanLinear(nn.Module):
    """logits = W [mean(a), mean(b)] + bias: contributions computable by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[2.0, -1.0], [-1.0, 3.0], [0.5, 0.5]]))
            self.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.0]))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.stack([a.mean(dim=(1, 2, 3)), b.mean(dim=(1, 2, 3))], dim=1))


def by_hand(mean_a: np.ndarray, mean_b: np.ndarray) -> np.ndarray:
    """Softmax of MeanLinear's logits for per-sample input means."""
    weight = np.array([[2.0, -1.0], [-1.0, 3.0], [0.5, 0.5]])
    logits = np.stack([mean_a, mean_b], axis=1) @ weight.T + np.array([0.1, -0.2, 0.0])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def inputs(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(n, 1, 6, 6, generator=g), "b": torch.randn(n, 2, 6, 6, generator=g)}


def test_contributions_equal_a_hand_computation() -> None:
    x = inputs()
    explainer = Explainer(
        MeanLinear(),
        [
            Modality("a", channels=1),  # default baseline: zeros of the normalized tensor
            Modality("b", channels=2, baseline=0.5),
        ],
        device="cpu",
    )
    mean_a = x["a"].mean(dim=(1, 2, 3)).numpy().astype(np.float64)
    mean_b = x["b"].mean(dim=(1, 2, 3)).numpy().astype(np.float64)
    base = by_hand(mean_a, mean_b)
    targets = [0, 1, 2, 1]
    rows = np.arange(4)
    got = explainer.contributions(x, target=targets)
    expected_a = base[rows, targets] - by_hand(np.zeros(4), mean_b)[rows, targets]
    expected_b = base[rows, targets] - by_hand(mean_a, np.full(4, 0.5))[rows, targets]
    assert got["a"].dtype == np.float32 and got["a"].shape == (4,)
    np.testing.assert_allclose(got["a"], expected_a, atol=1e-6)
    np.testing.assert_allclose(got["b"], expected_b, atol=1e-6)
    # target=None: the predicted class of each sample.
    predicted = base.argmax(axis=1)
    drops = explainer.contributions(x)
    expected = base[rows, predicted] - by_hand(np.zeros(4), mean_b)[rows, predicted]
    np.testing.assert_allclose(drops["a"], expected, atol=1e-6)


def test_a_callable_or_tensor_baseline_replaces_the_input() -> None:
    x = inputs(seed=1)
    explainer = Explainer(
        MeanLinear(),
        [
            Modality("a", channels=1, baseline=lambda t: t * 0.25),
            Modality("b", channels=2, baseline=torch.tensor([1.0, -1.0]).view(2, 1, 1)),
        ],
        device="cpu",
    )
    mean_a = x["a"].mean(dim=(1, 2, 3)).numpy().astype(np.float64)
    mean_b = x["b"].mean(dim=(1, 2, 3)).numpy().astype(np.float64)
    base = by_hand(mean_a, mean_b)
    rows, targets = np.arange(4), [2, 2, 0, 1]
    got = explainer.contributions(x, targets)
    expected_a = base[rows, targets] - by_hand(0.25 * mean_a, mean_b)[rows, targets]
    expected_b = base[rows, targets] - by_hand(mean_a, np.zeros(4))[rows, targets]  # (1-1)/2
    np.testing.assert_allclose(got["a"], expected_a, atol=1e-6)
    np.testing.assert_allclose(got["b"], expected_b, atol=1e-6)


def test_one_batched_forward_per_modality_without_gradients() -> None:
    calls: list[tuple[int, bool]] = []
    net = MeanLinear()
    net.register_forward_hook(lambda m, a, out: calls.append((out.shape[0], out.requires_grad)))
    explainer = Explainer(net, [Modality("a", channels=1), Modality("b", channels=2)], "cpu")
    explainer.contributions(inputs(n=5))
    assert calls == [(5, False)] * 3  # the inputs, then each modality at its baseline


def test_a_baseline_of_the_wrong_kind_or_shape_is_refused() -> None:
    with pytest.raises(InputError, match="baseline must be None, a number"):
        Modality("a", baseline="mean")
    explainer = Explainer(
        MeanLinear(),
        [Modality("a", channels=1, baseline=torch.zeros(3, 1, 1)), Modality("b", channels=2)],
        "cpu",
    )
    with pytest.raises(InputError, match=r"a: its baseline has shape \(3, 1, 1\)"):
        explainer.contributions(inputs())


def test_texture_contributes_most_on_edited_demo_samples() -> None:
    explainer = load_explainer(device="cpu")
    data = generate(60, seed=4242)  # fresh: not a seed training or the samples used
    edited = np.flatnonzero(data.labels != CLASSES.index("authentic"))
    chosen = {name: images[edited] for name, images in data.inputs.items()}
    drops = explainer.contributions(chosen, target=data.labels[edited].tolist())
    table = np.stack([drops[name] for name in explainer.names], axis=1)
    first = np.array(explainer.names)[table.argmax(axis=1)]
    assert (first == "texture").mean() >= 0.9, (first == "texture").mean()
    assert drops["texture"].mean() > 0.5
