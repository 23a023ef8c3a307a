"""Every torchvision architecture we offer gives a CAM at its default layer, random weights.

Small inputs (64 px) keep this fast.  ViT and Swin token layers must work with no reshape
written by the user: their CAMs are compared with grad-cam run with the reshape_transform its
documentation prescribes (class token dropped, tokens on the patch grid; channels-last permuted).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from cam_core.sources import RANDOM_WEIGHTS_NOTICE, TORCHVISION_MODELS, torchvision_spec

SIZE = 64
# Side of the default layer's map for a 64 px input (the layer's stride is 64 / side).
GRID = {
    "resnet18": 2,
    "resnet50": 2,
    "vgg16": 4,
    "densenet121": 2,
    "efficientnet_b0": 2,
    "mobilenet_v3_large": 2,
    "convnext_tiny": 2,
    "vit_b_16": 4,
    "swin_t": 2,
}


@functools.cache
def _explainer(name: str):
    """One explainer per architecture for this module (building VGG alone takes seconds)."""
    torch.manual_seed(0)
    explainer = torchvision_spec(name, image_size=SIZE).build_explainer(device="cpu")
    if name == "vit_b_16":
        # torchvision zero-initializes ViT's head: every gradient would be zero.
        nn.init.normal_(explainer.model.heads.head.weight, std=0.5)
    # A CAM needs the gradient at the layer, never the parameters' gradients: freezing skips
    # those (most of the backward cost), which keeps this file fast.
    explainer.model.requires_grad_(False)
    return explainer


def _images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_the_table_covers_every_offered_model():
    assert set(GRID) == set(TORCHVISION_MODELS)


@pytest.mark.parametrize("name", list(TORCHVISION_MODELS))
def test_cam_at_default_layer_has_input_size(name):
    explainer = _explainer(name)
    layer = TORCHVISION_MODELS[name]
    assert explainer.default_layer == layer
    row = next(info for info in explainer.layer_tree() if info.path == layer)
    assert row.ready, row.reason
    result = explainer.explain({"rgb": _images()}, method="gradcam")
    cams = result.cams["rgb"]
    assert cams.shape == (2, SIZE, SIZE) and cams.dtype == np.float32
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert result.raw["rgb"].shape[-2:] == (GRID[name], GRID[name])
    assert result.probabilities.shape == (2, 1000)
    assert result.layer == layer


@pytest.mark.parametrize(
    ("name", "reshape"),
    [
        (
            "vit_b_16",
            lambda t: t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2),
        ),
        ("swin_t", lambda t: t.permute(0, 3, 1, 2)),
    ],
)
def test_transformer_token_layers_match_grad_cam_with_hand_written_reshape(name, reshape):
    explainer = _explainer(name)
    images = _images()
    result = explainer.explain({"rgb": images}, method="gradcam")
    assert not result.empty["rgb"].any(), result.notices
    model = explainer.model
    layer = dict(model.named_modules())[TORCHVISION_MODELS[name]]
    targets = [ClassifierOutputTarget(int(c)) for c in result.targets]
    with GradCAM(model, [layer], reshape_transform=reshape) as cam:
        # The model is frozen: an input that requires grad gives grad-cam its layer gradients.
        reference = cam(images.clone().requires_grad_(True), targets=targets)
    np.testing.assert_allclose(result.cams["rgb"], reference, atol=1e-4)


def test_random_weights_notice_until_a_checkpoint_is_loaded():
    spec = torchvision_spec("resnet18")
    assert spec.notice == RANDOM_WEIGHTS_NOTICE
    assert "mean nothing" in spec.notice_for(None)
    assert spec.notice_for(b"checkpoint bytes") is None


def test_imagenet_normalization_and_class_names():
    spec = torchvision_spec("resnet18")
    (rgb,) = spec.modalities
    assert rgb.name == "rgb" and rgb.channels == 3 and rgb.size == (224, 224)
    assert rgb.mean == (0.485, 0.456, 0.406) and rgb.std == (0.229, 0.224, 0.225)
    assert len(spec.classes) == 1000 and spec.classes[0] == "tench"
