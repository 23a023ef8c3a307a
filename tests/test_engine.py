"""The floor-cost engine: grad-cam's numbers from one forward and a backward to the layer only."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import pytorch_grad_cam as gc
import torch
from torch import nn

from cam_core import Explainer, LayerError, Modality
from cam_core.engine import WEIGHTINGS
from tests.conftest import ConcatWorkaround, SingleTokenNet, ThreeInputNet, three_input_batch

# Every method the engine runs, with grad-cam's class for it (the reference).
REFERENCE = {
    "gradcam": gc.GradCAM,
    "gradcam++": gc.GradCAMPlusPlus,
    "xgradcam": gc.XGradCAM,
    "layercam": gc.LayerCAM,
    "hirescam": gc.HiResCAM,
    "gradcam-elementwise": gc.GradCAMElementWise,
    "eigengradcam": gc.EigenGradCAM,
    "eigencam": gc.EigenCAM,
}


def test_every_engine_method_has_a_reference():
    assert set(WEIGHTINGS) == set(REFERENCE) | {"kpca-cam"}


def _concat_reference(model, module, inputs, cls, targets=None):
    """grad-cam itself on the concatenate-and-slice workaround of the three-input model."""
    x = torch.cat([inputs["texture"], inputs["frequency"], inputs["rgb"]], dim=1)
    with cls(ConcatWorkaround(model), [module]) as cam:
        return cam(x, targets)


@pytest.mark.parametrize("method", list(REFERENCE))
@pytest.mark.parametrize("n", [1, 6])
def test_conv_layer_of_multi_input_model_equals_grad_cam(method, n, three_modalities):
    torch.manual_seed(0)
    model = ThreeInputNet()
    inputs = three_input_batch(n, seed=n)
    result = Explainer(model, three_modalities, device="cpu").explain(inputs, "fuse", method)
    expected = _concat_reference(model, model.fuse, inputs, REFERENCE[method])
    assert expected.shape == (n, 32, 32) and expected.max() > 0.99
    for name in ("texture", "frequency", "rgb"):
        np.testing.assert_allclose(result.cams[name], expected, atol=1e-4)


@pytest.mark.parametrize("method", list(REFERENCE))
@pytest.mark.parametrize("n", [1, 6])
def test_token_layer_with_class_token_equals_grad_cam(method, n):
    torch.manual_seed(2)
    model = SingleTokenNet()
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))

    def reshape(tokens):  # grad-cam's documented ViT reshape: drop the class token
        grid = tokens[:, 1:].reshape(tokens.shape[0], 8, 8, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)

    result = Explainer(model, [Modality("rgb")], device="cpu").explain({"rgb": x}, "block", method)
    with REFERENCE[method](model, [model.block], reshape_transform=reshape) as cam:
        expected = cam(x, None)
    assert expected.max() > 0.99
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-4)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_eigen_smooth_equals_grad_cam(method, three_modalities):
    torch.manual_seed(0)
    model = ThreeInputNet()
    inputs = three_input_batch(2, seed=5)
    explainer = Explainer(model, three_modalities, device="cpu")
    result = explainer.explain(inputs, "fuse", method, eigen_smooth=True)
    x = torch.cat([inputs["texture"], inputs["frequency"], inputs["rgb"]], dim=1)
    with REFERENCE[method](ConcatWorkaround(model), [model.fuse]) as cam:
        expected = cam(x, None, eigen_smooth=True)
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-4)


def test_explicit_targets_equal_grad_cam_targets(three_modalities):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = ThreeInputNet()
    inputs = three_input_batch(3, seed=9)
    result = Explainer(model, three_modalities, device="cpu").explain(
        inputs, "rgb_branch", "gradcam++", target=[3, 0, 2]
    )
    targets = [ClassifierOutputTarget(c) for c in (3, 0, 2)]
    expected = _concat_reference(model, model.rgb_branch, inputs, gc.GradCAMPlusPlus, targets)
    assert result.targets == [3, 0, 2]
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-4)


def _count_backward(module: nn.Module) -> tuple[list[int], object]:
    calls = [0]

    def hook(_module, _grad_in, _grad_out):
        calls[0] += 1

    return calls, module.register_full_backward_hook(hook)


def test_nothing_below_the_layer_is_differentiated(three_modalities):
    torch.manual_seed(0)
    model = ThreeInputNet()
    explainer = Explainer(model, three_modalities, device="cpu")
    inputs = three_input_batch(2)
    explainer.explain(inputs, "fuse")  # the first request may walk the graph once
    below, below_handle = _count_backward(model.rgb_branch)
    above, above_handle = _count_backward(model.head)
    try:
        explainer.explain(inputs, "fuse")
    finally:
        below_handle.remove()
        above_handle.remove()
    assert above == [1]  # the backward ran from the score through the head ...
    assert below == [0]  # ... and stopped at the layer: no input gradients, no graph below
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients


def test_frozen_model_gets_the_same_maps_from_a_leaf_at_the_layer(three_modalities):
    torch.manual_seed(0)
    model = ThreeInputNet()
    inputs = three_input_batch(2, seed=4)
    explainer = Explainer(model, three_modalities, device="cpu")
    trainable = explainer.explain(inputs, "rgb_branch.2", "layercam")
    # grad-cam needs trainable parameters (or inputs requiring grad): its reference first.
    reference = _concat_reference(model, model.rgb_branch[2], inputs, gc.LayerCAM)
    for p in model.parameters():
        p.requires_grad_(False)
    first = explainer.explain(inputs, "rgb_branch.2", "layercam")  # walks the graph once
    again = explainer.explain(inputs, "rgb_branch.2", "layercam")  # layer made a leaf
    for result in (trainable, first, again):
        np.testing.assert_allclose(result.cams["rgb"], reference, atol=1e-4)
    assert not any(p.requires_grad for p in model.parameters())
    assert any("sees only rgb" in n for n in again.notices)  # the cached walk still speaks


def test_layer_the_score_does_not_depend_on_is_refused(three_modalities):
    class Unused(ThreeInputNet):
        def __init__(self):
            super().__init__()
            self.side = nn.Conv2d(3, 4, 3)

        def forward(self, x_b, x_f, x_p):
            self.side(x_p)
            return super().forward(x_b, x_f, x_p)

    torch.manual_seed(0)
    explainer = Explainer(Unused(), three_modalities, device="cpu")
    for _ in range(2):  # with the graph walk and without
        with pytest.raises(LayerError, match="does not depend on layer 'side'"):
            explainer.explain(three_input_batch(1), "side")


def test_sweep_of_many_layers_equals_grad_cam_per_layer(three_modalities):
    torch.manual_seed(0)
    model = ThreeInputNet()
    inputs = three_input_batch(2, seed=6)
    explainer = Explainer(model, three_modalities, device="cpu")
    layers = ["texture_branch", "rgb_branch.2", "fuse"]
    swept = explainer.sweep(inputs, layers, "xgradcam")
    modules = dict(model.named_modules())
    for layer in layers:
        expected = _concat_reference(model, modules[layer], inputs, gc.XGradCAM)
        np.testing.assert_allclose(swept[layer].cams["texture"], expected, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", list(REFERENCE))
def test_cuda_maps_equal_cpu_maps(method, three_modalities):
    torch.manual_seed(0)
    model = ThreeInputNet()
    inputs = three_input_batch(6, seed=1)
    on_cuda = copy.deepcopy(model)  # Explainer moves its model
    cpu = Explainer(model, three_modalities, device="cpu").explain(inputs, "fuse", method)
    cuda = Explainer(on_cuda, three_modalities, device="cuda").explain(inputs, "fuse", method)
    for name in cpu.cams:
        np.testing.assert_allclose(cuda.cams[name], cpu.cams[name], atol=1e-4)
