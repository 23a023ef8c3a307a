"""Methods grad-cam 1.5.7 has that we once lacked, and peers' cases that once failed.

Each map is compared with grad-cam's own class on the same model and layer.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import pytorch_grad_cam
import torch
from pytorch_grad_cam import FEM, FinerCAM, GradCAM, RandomCAM, SegEigenCAM, ShapleyCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from cam_core import Explainer, Modality
from cam_core.methods import METHODS
from tests.conftest import SingleTokenNet, TokenBlock


class SmallNet(nn.Module):
    """conv-relu-conv(stride 2), global average, Linear: 5 classes.  The score is linear in
    ``conv2``'s output, so its gradient there does not depend on the activations."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(torch.relu(self.conv(x))).mean(dim=(2, 3)))


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = SmallNet()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed + 1))
    return model, x, Explainer(model, [Modality("rgb")], device="cpu")


# Every CAM class grad-cam exports, and our name for it.  Not CAM methods of a layer for a class,
# so not offered: GuidedBackpropReLUModel (a saliency model), DeepFeatureFactorization (concept
# factorization), the ablation layers, ActivationsAndGradients; meta-methods not offered yet:
# RefineCAM (product over layers), SESS (scales and sliding windows of the input).
GRAD_CAM_CLASSES = {
    "GradCAM": "gradcam",
    "GradCAMPlusPlus": "gradcam++",
    "HiResCAM": "hirescam",
    "XGradCAM": "xgradcam",
    "LayerCAM": "layercam",
    "GradCAMElementWise": "gradcam-elementwise",
    "EigenCAM": "eigencam",
    "EigenGradCAM": "eigengradcam",
    "KPCA_CAM": "kpca-cam",
    "ScoreCAM": "scorecam",
    "AblationCAM": "ablationcam",
    "ShapleyCAM": "shapleycam",
    "FullGrad": "fullgrad",
    "FinerCAM": "finercam",
    "FEM": "fem",
    "SegEigenCAM": "segeigencam",
    "RandomCAM": "randomcam",
}
NOT_OFFERED = {
    "GuidedBackpropReLUModel",
    "DeepFeatureFactorization",
    "ActivationsAndGradients",
    "AblationLayer",
    "AblationLayerVit",
    "AblationLayerFasterRCNN",
    "RefineCAM",
    "SESS",
}


def test_every_cam_class_grad_cam_exports_is_offered_with_a_cost_hint():
    exported = {
        name
        for name, value in vars(pytorch_grad_cam).items()
        if isinstance(value, type) and not name.startswith("_")
    }
    assert exported - NOT_OFFERED == set(GRAD_CAM_CLASSES)
    for name in GRAD_CAM_CLASSES.values():
        assert name in METHODS and METHODS[name].cost and METHODS[name].notes


@pytest.mark.parametrize(("method", "cls"), [("fem", FEM), ("segeigencam", SegEigenCAM)])
def test_fem_and_segeigencam_equal_grad_cam(method, cls):
    model, x, explainer = _setup()
    result = explainer.explain({"rgb": x}, "conv", method, target=2)
    with cls(model, [model.conv]) as cam:
        expected = cam(x, [ClassifierOutputTarget(2)] * 2)
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-4)
    assert expected.max() > 0.99


def test_randomcam_equals_grad_cam_with_the_same_seed():
    model, x, explainer = _setup()
    np.random.seed(7)
    result = explainer.explain({"rgb": x}, "conv", "randomcam", target=1)
    np.random.seed(7)
    with RandomCAM(model, [model.conv]) as cam:
        expected = cam(x, [ClassifierOutputTarget(1)] * 2)
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-4)


@pytest.mark.parametrize("target", [None, 3])
def test_finercam_equals_grad_cam_finercam(target):
    model, x, explainer = _setup()
    result = explainer.explain({"rgb": x}, "conv", "finercam", target=target)
    cam = FinerCAM(model, [model.conv])
    try:
        expected = cam(x, None, target_idx=target)
    finally:
        cam.base_cam.activations_and_grads.release()
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-4)
    # It is not Grad-CAM of the class alone: the comparison classes change the map.
    plain = explainer.explain({"rgb": x}, "conv", "gradcam", target=result.targets)
    assert np.abs(plain.cams["rgb"] - result.cams["rgb"]).max() > 0.05


def test_shapleycam_runs_on_a_frozen_model_and_equals_grad_cam_unfrozen():
    model, x, _ = _setup()
    reference = copy.deepcopy(model)  # grad-cam on a trainable copy
    with ShapleyCAM(reference, [reference.conv2]) as cam:
        expected = cam(x, [ClassifierOutputTarget(4)] * 2)

    frozen = copy.deepcopy(model).requires_grad_(False)
    result = Explainer(frozen, [Modality("rgb")], device="cpu").explain(
        {"rgb": x}, "conv2", "shapleycam", target=4
    )
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-4)
    # The score is linear in conv2's output: the Hessian term vanishes, leaving Grad-CAM.
    with GradCAM(reference, [reference.conv2]) as cam:
        gradcam = cam(x, [ClassifierOutputTarget(4)] * 2)
    np.testing.assert_allclose(result.cams["rgb"], gradcam, atol=1e-4)
    assert all(not p.requires_grad for p in frozen.parameters())


class ClassTokenViT(SingleTokenNet):
    """Class token + 8×8 patches, then attention and a second token block, the head reading
    the class token only (as a ViT does): what the class token carries after ``block``
    matters."""

    def __init__(self, width: int = 12, classes: int = 3) -> None:
        super().__init__(width, classes)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.last = TokenBlock(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.block(self.tokens(x))
        normed = self.last.norm(tokens)
        tokens = tokens + self.attn(normed, normed, normed)[0]
        return self.head(self.last(tokens)[:, 0])


def test_ablationcam_at_class_token_layer_equals_grad_cam_vit_usage():
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.ablation_layer import AblationLayerVit

    torch.manual_seed(4)
    model = ClassTokenViT().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))

    def reshape(tokens):  # grad-cam's vit_example.py: drop the class token, 8×8 grid
        return tokens[:, 1:].reshape(tokens.shape[0], 8, 8, tokens.shape[2]).permute(0, 3, 1, 2)

    result = Explainer(model, [Modality("rgb")], device="cpu").explain(
        {"rgb": x}, "block", "ablationcam", target=[0, 2]
    )
    cam = AblationCAM(
        model, [model.block], reshape_transform=reshape, ablation_layer=AblationLayerVit()
    )
    try:
        expected = cam(x, [ClassifierOutputTarget(0), ClassifierOutputTarget(2)])
    finally:
        cam.activations_and_grads.release()
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-3)
    assert expected.max() > 0.99


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_list_of_layers_gives_grad_cams_average_over_target_layers(method):
    from pytorch_grad_cam import LayerCAM

    from tests.conftest import ConcatWorkaround, ThreeInputNet, three_input_batch

    torch.manual_seed(0)
    model = ThreeInputNet()
    inputs = three_input_batch(n=2)
    modalities = [Modality("texture", channels=1), Modality("frequency", channels=1)]
    modalities.append(Modality("rgb"))
    layers = ["rgb_branch", "texture_branch.2", "fuse"]
    result = Explainer(model, modalities, device="cpu").explain(inputs, layers, method, target=1)
    assert result.layer == "rgb_branch + texture_branch.2 + fuse"

    modules = [dict(model.named_modules())[name] for name in layers]
    x = torch.cat([inputs["texture"], inputs["frequency"], inputs["rgb"]], dim=1)
    cls = GradCAM if method == "gradcam" else LayerCAM
    with cls(ConcatWorkaround(model), modules) as cam:
        expected = cam(x, [ClassifierOutputTarget(1)] * 2)
    for name in ("texture", "frequency", "rgb"):
        np.testing.assert_allclose(result.cams[name], expected, atol=1e-3)
    # Not any one layer's map.
    single = Explainer(model, modalities, device="cpu").explain(inputs, "fuse", method, target=1)
    assert np.abs(single.cams["rgb"] - expected).max() > 0.05


class TinySegNet(nn.Module):
    """Dense logits for 4 classes at half the input size, returned as torchvision's
    segmentation models do: ``{"out": (N, 4, H/2, W/2)}``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1)
        )
        self.classifier = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.classifier(self.backbone(x))}


@pytest.mark.parametrize(("method", "cls"), [("gradcam", GradCAM), ("hirescam", None)])
def test_region_target_equals_grad_cam_semantic_segmentation_target(method, cls):
    from pytorch_grad_cam import HiResCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    from cam_core import Region

    torch.manual_seed(0)
    model = TinySegNet()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    mask = np.zeros((16, 16), np.float32)
    mask[4:10, 2:12] = 1.0  # the region, at the output's resolution
    result = Explainer(model, [Modality("rgb")], device="cpu").explain(
        {"rgb": x}, "backbone.2", method, target=Region(2, mask)
    )

    class Dense(nn.Module):  # grad-cam needs the tensor itself
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)["out"]

    with (cls or HiResCAM)(Dense(), [model.backbone[2]]) as cam:
        expected = cam(x, [SemanticSegmentationTarget(2, mask)] * 2)
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-4)
    assert result.targets == [2, 2]
    # The same region drawn at the input's size (32×32) is resized to the output's.
    big = np.kron(mask, np.ones((2, 2), np.float32))
    again = Explainer(model, [Modality("rgb")], device="cpu").explain(
        {"rgb": x}, "backbone.2", method, target=Region(2, big)
    )
    np.testing.assert_allclose(again.cams["rgb"], expected, atol=1e-4)
    # Another region gives another map.
    other = Explainer(model, [Modality("rgb")], device="cpu").explain(
        {"rgb": x}, "backbone.2", method, target=Region(2, 1.0 - mask)
    )
    assert np.abs(other.cams["rgb"] - expected).max() > 0.05
