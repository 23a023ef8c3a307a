"""Attention rollout (Abnar & Zuidema 2020) against hand computations from the blocks' own
attention weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cam_core import Explainer, InputError, LayerError, Modality
from tests.conftest import hook_count, three_input_batch

SIZE = 64


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return torchvision.models.vit_b_16(weights=None, image_size=SIZE, num_classes=5).eval()


def _vit_attention_by_hand(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each encoder block's attention weights (N, heads, L, L), by re-running its
    self_attention with need_weights=True on the tokens the block receives."""
    weights = []
    with torch.no_grad():
        tokens = model._process_input(x)
        cls = model.class_token.expand(len(x), -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + model.encoder.pos_embedding
        for block in model.encoder.layers:
            y = block.ln_1(tokens)
            _, w = block.self_attention(y, y, y, need_weights=True, average_attn_weights=False)
            weights.append(w.double())
            tokens = block(tokens)
    return weights


def _rollout_by_hand(weights: list[torch.Tensor], fuse, discard: float = 0.0) -> torch.Tensor:
    joint = None
    for w in weights:
        a = fuse(w)  # (N, L, L)
        if discard:
            flat = a.reshape(len(a), -1).clone()
            drop = int(flat.shape[1] * discard)
            _, lowest = flat.topk(drop, dim=1, largest=False)
            flat.scatter_(1, lowest, 0.0)
            a = flat.reshape(a.shape)
        eye = torch.eye(a.shape[-1], dtype=a.dtype)
        a = (a + eye) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        joint = a if joint is None else a @ joint
    return joint


def _cam_of(grid: torch.Tensor, size: int) -> np.ndarray:
    """Bilinear (half-pixel) upsampling, then per-map min-max."""
    up = F.interpolate(grid[:, None].float(), size=(size, size), mode="bilinear")[:, 0]
    low = up.amin(dim=(1, 2), keepdim=True)
    high = up.amax(dim=(1, 2), keepdim=True)
    return ((up - low) / (high - low)).numpy()


def test_rollout_of_vit_b_16_equals_the_product_of_its_blocks_attention(vit):
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    explainer = Explainer(vit, [Modality("image", size=(SIZE, SIZE))], device="cpu")
    result = explainer.rollout({"image": x})

    joint = _rollout_by_hand(_vit_attention_by_hand(vit, x), lambda w: w.mean(dim=1))
    expected = joint[:, 0, 1:].reshape(2, 4, 4)  # class token's row over the 4x4 patches
    assert result.raw.dtype == np.float32 and result.raw.shape == (2, 4, 4)
    np.testing.assert_allclose(result.raw, expected.numpy(), rtol=1e-4, atol=1e-6)
    assert result.class_token == 0
    assert result.layers == [f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(12)]
    assert explainer.self_attention_layers() == result.layers
    cams = result.cams["image"]
    assert cams.shape == (2, SIZE, SIZE) and cams.dtype == np.float32
    np.testing.assert_allclose(cams, _cam_of(expected, SIZE), atol=1e-4)
    assert result.overlay("image").shape == (2, SIZE, SIZE, 3)
    assert hook_count(vit) == 0


def test_rollout_with_max_fusion_and_discard_equals_the_hand_computation(vit):
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    explainer = Explainer(vit, [Modality("image", size=(SIZE, SIZE))], device="cpu")
    layers = [f"encoder.layers.encoder_layer_{i}.self_attention" for i in (5, 0, 3)]
    result = explainer.rollout({"image": x}, layers, head_fusion="max", discard_ratio=0.5)

    weights = _vit_attention_by_hand(vit, x)
    chosen = [weights[0], weights[3], weights[5]]  # forward order, whatever order was asked
    joint = _rollout_by_hand(chosen, lambda w: w.amax(dim=1), discard=0.5)
    np.testing.assert_allclose(
        result.raw, joint[:, 0, 1:].reshape(1, 4, 4).numpy(), rtol=1e-4, atol=1e-6
    )
    assert result.layers == sorted(layers)


def test_capturing_attention_for_rollout_keeps_the_logits(vit):
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = vit(x)
    seen = []
    handle = vit.register_forward_hook(lambda _m, _a, out: seen.append(out.detach().clone()))
    try:
        Explainer(vit, [Modality("image", size=(SIZE, SIZE))], device="cpu").rollout({"image": x})
    finally:
        handle.remove()
    assert seen  # the model ran with the capture hooks on
    torch.testing.assert_close(seen[0], plain, atol=1e-5, rtol=1e-5)


class NoClassTokenNet(nn.Module):
    """Patch tokens only (4x4 grid of a 16 px image), two self-attention layers."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, 4, stride=4)
        self.attn1 = nn.MultiheadAttention(width, 2, batch_first=True)
        self.attn2 = nn.MultiheadAttention(width, 2, batch_first=True)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = t + self.attn1(t, t, t, need_weights=False)[0]
        t = t + self.attn2(t, t, t, need_weights=False)[0]
        return self.head(t.mean(dim=1))


def test_rollout_without_a_class_token_averages_over_all_queries():
    torch.manual_seed(0)
    model = NoClassTokenNet().eval()
    x = torch.randn(2, 3, 16, 16)
    result = Explainer(model, [Modality("image", size=(16, 16))], device="cpu").rollout(
        {"image": x}, head_fusion="min"
    )
    with torch.no_grad():
        t = model.embed(x).flatten(2).transpose(1, 2)
        _, w1 = model.attn1(t, t, t, average_attn_weights=False)
        t = t + model.attn1(t, t, t)[0]
        _, w2 = model.attn2(t, t, t, average_attn_weights=False)
    joint = _rollout_by_hand([w1.double(), w2.double()], lambda w: w.amin(dim=1))
    expected = joint.mean(dim=1).reshape(2, 4, 4)
    np.testing.assert_allclose(result.raw, expected.numpy(), rtol=1e-4, atol=1e-6)
    assert result.class_token is None
    assert any("mean over all query tokens" in n for n in result.notices)


def test_rollout_refuses_cross_attention_and_bad_options(three_net):
    modalities = [Modality("texture", channels=1), Modality("frequency", channels=1)]
    modalities.append(Modality("rgb"))
    explainer = Explainer(three_net, modalities, device="cpu")
    inputs = three_input_batch(1)
    assert explainer.attention_layers(inputs) == ["attn"]
    assert explainer.self_attention_layers(inputs) == []
    with pytest.raises(LayerError, match="no self-attention layer"):
        explainer.rollout(inputs)
    with pytest.raises(LayerError, match="cross-attention"):
        explainer.rollout(inputs, ["attn"])
    with pytest.raises(InputError, match="head_fusion"):
        explainer.rollout(inputs, head_fusion="median")
    with pytest.raises(InputError, match="discard_ratio"):
        explainer.rollout(inputs, discard_ratio=1.0)
    assert hook_count(three_net) == 0
