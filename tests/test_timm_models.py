"""timm models as they come: ``timm.create_model(name, pretrained=False, ...)``, no wrapper.

Small configs and inputs keep this fast (nothing is downloaded).  cam_core gets no reshape; its
maps are compared with grad-cam given the reshape its documentation prescribes: ViT/DeiT drop
the class token (and distillation or register tokens) and lay the patches on their grid, Swin
and ConvNeXt blocks are channels-last ``(N, H, W, C)`` and are permuted, ConvNeXt stages need
none.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

from cam_core import Modality
from cam_core.sources import load_spec
from tests.references import channels_last, drop_class_token, grad_cam

EXAMPLE = Path(__file__).absolute().parents[1] / "examples" / "timm_spec.py"
VIT = {"img_size": 32, "patch_size": 8, "depth": 2, "num_classes": 3}
# name: (timm name, create_model arguments, input size)
MODELS = {
    "vit": ("vit_tiny_patch16_224", VIT, 32),
    "deit": ("deit_tiny_patch16_224", VIT, 32),
    # Class + distillation token before the patches.
    "deit-distilled": ("deit_tiny_distilled_patch16_224", VIT, 32),
    # Class + 4 register tokens; layer scale 1 instead of DINOv2's 1e-5 init (see ConvNeXt).
    "vit-reg4": ("vit_small_patch14_reg4_dinov2", {**VIT, "init_values": 1.0}, 32),
    "swin": (
        "swin_tiny_patch4_window7_224",
        {
            "img_size": 64,
            "window_size": 4,
            "embed_dim": 24,
            "depths": (1, 1),
            "num_heads": (2, 4),
            "num_classes": 3,
        },
        64,
    ),
    "convnext": (
        "convnext_atto",
        {
            "depths": (1, 1, 1, 1),
            "dims": (8, 16, 24, 32),
            "num_classes": 3,
            # As convnext_tiny: the block's norm and MLP run channels-last (atto: convolutions).
            "conv_mlp": False,
            # Layer scale starts at 1e-6 (timm's init; trained weights are far larger): the
            # blocks' gradients would then be too small for any map to carry signal.
            "ls_init_value": 1.0,
        },
        64,
    ),
}
# (model, layer, grad-cam's reshape for it)
CASES = [
    ("vit", "blocks.1.norm1", drop_class_token(4, 4)),  # grad-cam's documented ViT layer
    ("vit", "blocks.0", drop_class_token(4, 4)),
    ("deit", "blocks.1.norm1", drop_class_token(4, 4)),
    ("deit-distilled", "blocks.1.norm1", drop_class_token(4, 4, leading=2)),
    ("vit-reg4", "blocks.1.norm1", drop_class_token(4, 4, leading=5)),
    ("swin", "layers.0", channels_last),  # (N, 16, 16, 24)
    ("swin", "layers.1.blocks.0.norm1", channels_last),  # (N, 8, 8, 48)
    ("convnext", "stages.3", None),  # (N, 32, 2, 2)
    ("convnext", "stages.2", None),  # (N, 24, 4, 4)
    ("convnext", "stages.1.blocks.0.norm", channels_last),  # inside the block: (N, 8, 8, 16)
]


@functools.cache
def _explainer(name: str):
    from cam_core import Explainer

    timm_name, kwargs, size = MODELS[name]
    torch.manual_seed(0)
    model = timm.create_model(timm_name, pretrained=False, **kwargs).eval()
    return Explainer(model, [Modality("image", size=size)], device="cpu")


def _images(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("method", "cls"), [("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus)])
@pytest.mark.parametrize(
    ("name", "layer", "reshape"), CASES, ids=[f"{model}-{layer}" for model, layer, _ in CASES]
)
def test_timm_block_cams_equal_grad_cam_with_the_documented_reshape(
    name, layer, reshape, method, cls
):
    explainer = _explainer(name)
    images = _images(MODELS[name][2])
    result = explainer.explain({"image": images}, layer=layer, method=method)
    model = explainer.model
    expected = grad_cam(
        model,
        explainer.modalities,
        model.get_submodule(layer),
        {"image": images},
        result.targets,
        reshape,
        cls,
    )
    assert expected.max() > 0.99  # the reference carries signal, so equality means something
    np.testing.assert_allclose(result.cams["image"], expected, atol=1e-3)


@pytest.mark.parametrize(
    ("name", "layer", "grid"), [("vit", "blocks.1", 4), ("swin", "layers.1", 8)]
)
def test_timm_block_rows_say_how_their_output_is_read(name, layer, grid):
    explainer = _explainer(name)
    size = MODELS[name][2]
    row = next(r for r in explainer.layer_tree({"image": _images(size, 1)}) if r.path == layer)
    assert row.ready, row.reason
    assert f"{grid}×{grid}" in row.reason


def test_timm_example_spec_explains_its_default_layer_at_224_px():
    spec = load_spec(EXAMPLE)
    explainer = spec.build_explainer(device="cpu")
    (rgb,) = spec.modalities
    assert rgb.size == (224, 224) and rgb.mean == (0.485, 0.456, 0.406)
    explainer.model.requires_grad_(False)  # only the layer's gradient is needed: faster
    images = _images(224, n=1).requires_grad_(True)
    result = explainer.explain({"rgb": images}, method="gradcam")
    assert result.layer == spec.default_layer == "blocks.11.norm1"
    expected = grad_cam(
        explainer.model,
        spec.modalities,
        explainer.model.get_submodule(spec.default_layer),
        {"rgb": images},
        result.targets,
        drop_class_token(14, 14),
    )
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-3)
