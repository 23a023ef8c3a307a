"""Hugging Face models as they come: keyword ``pixel_values=``, a ``ModelOutput`` with ``.logits``.

Built from small random configs (nothing is downloaded).  No wrapper and no reshape is written
for cam_core; its maps are compared with grad-cam run as its documentation prescribes for these
models (a wrapper returning ``.logits``, the ViT reshape dropping the class token).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from torch import nn
from transformers import ViTConfig, ViTForImageClassification

from cam_core import Explainer, Modality
from cam_core.sources import load_spec
from tests.references import drop_class_token, grad_cam, tap

EXAMPLE = Path(__file__).absolute().parents[1] / "examples" / "hf_rgbd_spec.py"
SIZE, PATCH = 32, 8
PIXELS = Modality("pixel_values", arg="pixel_values", size=SIZE)


def blocks(model: nn.Module, under: str) -> str:
    """Path of the encoder's layer list (``vit.layers``; ``vit.encoder.layer`` before
    transformers 5), found rather than assumed."""
    return next(
        name
        for name, module in model.named_modules()
        if name.startswith(under) and isinstance(module, nn.ModuleList)
    )


@pytest.fixture(scope="module")
def vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=SIZE,
        patch_size=PATCH,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        attn_implementation="eager",
    )
    return ViTForImageClassification(config).eval()


def pixels(n: int = 2, channels: int = 3, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_hf_vit_takes_pixel_values_by_keyword_and_its_model_outputs_logits(vit):
    x = pixels()
    result = Explainer(vit, [PIXELS], device="cpu").explain(
        {"pixel_values": x}, layer=f"{blocks(vit, 'vit')}.1.layernorm_before"
    )
    with torch.no_grad():
        expected = torch.softmax(vit(pixel_values=x).logits, dim=1).numpy()
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)


METHODS = [("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus), ("scorecam", ScoreCAM)]


@pytest.mark.parametrize(("method", "cls"), METHODS)
@pytest.mark.parametrize("layer", ["1.layernorm_before", "0.layernorm_after"])
def test_hf_vit_token_layer_cams_equal_grad_cam_with_the_documented_reshape(
    vit, layer, method, cls
):
    x = pixels()
    path = f"{blocks(vit, 'vit')}.{layer}"
    result = Explainer(vit, [PIXELS], device="cpu").explain(
        {"pixel_values": x}, layer=path, method=method
    )
    expected = grad_cam(
        vit,
        [PIXELS],
        vit.get_submodule(path),
        {"pixel_values": x},
        result.targets,
        drop_class_token(SIZE // PATCH, SIZE // PATCH),
        cls,
    )
    assert expected.max() > 0.99  # the reference carries signal, so equality means something
    np.testing.assert_allclose(result.cams["pixel_values"], expected, atol=1e-3)


@pytest.fixture(scope="module")
def rgbd():
    """The example spec: two HF ViT encoders (RGB, depth) and a cross-attention fusion."""
    spec = load_spec(EXAMPLE)
    return spec, spec.build_explainer(device="cpu")


def rgbd_inputs(n: int = 2) -> dict[str, torch.Tensor]:
    return {"rgb": pixels(n, 3, seed=1, size=64), "depth": pixels(n, 1, seed=2, size=64)}


@pytest.mark.parametrize(
    "layer", ["fusion", "rgb_encoder.{blocks}.1.layernorm_before", "depth_encoder.{blocks}.0"]
)
def test_two_hf_encoders_with_cross_attention_fusion_equal_grad_cam_per_modality(rgbd, layer):
    spec, explainer = rgbd
    model = explainer.model
    layer = layer.format(blocks=blocks(model, "rgb_encoder")[len("rgb_encoder.") :])
    inputs = rgbd_inputs()
    result = explainer.explain(inputs, layer=layer, method="gradcam")
    grid = drop_class_token(64 // 8, 64 // 8)
    # grad-cam cannot hook a tuple (the fusion's output; a ViTLayer's before transformers 5):
    # the documented workaround taps the first tensor.
    module = model.get_submodule(layer)
    try:
        target = tap(module)
        expected = grad_cam(model, spec.modalities, target, inputs, result.targets, grid)
    finally:
        del module.forward
    assert expected.max() > 0.99
    for name in ("rgb", "depth"):  # one backward serves both; both inputs are 64 px
        np.testing.assert_allclose(result.cams[name], expected, atol=1e-3)


def test_hf_example_fusion_attention_is_rgb_queries_over_depth_keys(rgbd):
    _, explainer = rgbd
    model = explainer.model
    inputs = rgbd_inputs(1)
    attention = explainer.attention(inputs, "fusion")
    with torch.no_grad():
        rgb = model.rgb_encoder(pixel_values=inputs["rgb"]).last_hidden_state
        depth = model.depth_encoder(pixel_values=inputs["depth"]).last_hidden_state
        _, expected = model.fusion(rgb, depth, depth, average_attn_weights=False)
    weights = np.asarray(attention.weights)
    assert weights.shape == (1, 4, 65, 65)
    np.testing.assert_allclose(weights, expected.numpy(), atol=1e-5)


def test_hf_example_encoder_attention_equals_the_models_own_output_attentions(rgbd):
    _, explainer = rgbd
    inputs = rgbd_inputs(1)
    layers = explainer.attention_layers(inputs)
    assert "fusion" in layers
    rgb_layers = [path for path in layers if path.startswith("rgb_encoder.")]
    assert len(rgb_layers) == 2, layers  # one self-attention per encoder layer
    attention = explainer.attention(inputs, rgb_layers[-1])
    with torch.no_grad():
        expected = explainer.model.rgb_encoder(
            pixel_values=inputs["rgb"], output_attentions=True
        ).attentions[-1]
    assert attention.weights.shape == (1, 4, 65, 65)
    np.testing.assert_allclose(attention.weights, expected.numpy(), atol=1e-5)
