"""Raw attention maps of nn.MultiheadAttention layers, mapped to each modality's grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cam_core import Explainer, LayerError, Modality
from tests.conftest import ThreeInputNet, hook_count, three_input_batch


class SwappedKeys(ThreeInputNet):
    """Like ThreeInputNet, but keys concatenate frequency before texture."""

    def forward(self, x_b, x_f, x_p):
        b = self.texture_branch(x_b).flatten(2).transpose(1, 2)
        f = self.frequency_branch(x_f).flatten(2).transpose(1, 2)
        p = self.rgb_branch(x_p).flatten(2).transpose(1, 2)
        kv = torch.cat([f, b], dim=1)
        attended, _ = self.attn(p, kv, kv, need_weights=False)
        return self.head(attended.mean(dim=1))


def _modalities():
    return [Modality("texture", channels=1), Modality("frequency", channels=1), Modality("rgb")]


def test_attention_weights_equal_a_direct_call(three_net):
    inputs = three_input_batch(2, seed=4)
    result = Explainer(three_net, _modalities(), device="cpu").attention(inputs, "attn")
    assert result.weights.shape == (2, 2, 256, 512)  # (N, heads, Lq, Lk)
    with torch.no_grad():
        b = three_net.texture_branch(inputs["texture"]).flatten(2).transpose(1, 2)
        f = three_net.frequency_branch(inputs["frequency"]).flatten(2).transpose(1, 2)
        p = three_net.rgb_branch(inputs["rgb"]).flatten(2).transpose(1, 2)
        kv = torch.cat([b, f], dim=1)
        _, expected = three_net.attn(p, kv, kv, need_weights=True, average_attn_weights=False)
    np.testing.assert_allclose(result.weights, expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(result.weights.sum(axis=-1), 1.0, atol=1e-5)
    assert [(s.modality, s.start, s.height, s.width) for s in result.key_segments] == [
        ("texture", 0, 16, 16),
        ("frequency", 256, 16, 16),
    ]
    assert [(s.modality, s.height) for s in result.query_segments] == [("rgb", 16)]
    maps = result.key_maps((3, 4), sample=1, head=0)
    np.testing.assert_allclose(maps["frequency"].ravel(), expected[1, 0, 3 * 16 + 4, 256:].numpy())
    heat = result.key_heatmaps((3, 4))
    assert heat["texture"].shape == (32, 32) and heat["texture"].max() == pytest.approx(1.0)


def test_key_owners_follow_the_model_not_the_order_of_modalities():
    torch.manual_seed(0)
    model = SwappedKeys()
    result = Explainer(model, _modalities(), device="cpu").attention(three_input_batch(1), "attn")
    assert [s.modality for s in result.key_segments] == ["frequency", "texture"]


def test_attention_leaves_no_hooks_and_keeps_outputs(three_net):
    explainer = Explainer(three_net, _modalities(), device="cpu")
    inputs = three_input_batch(1)
    before = explainer.predict(inputs)
    explainer.attention(inputs, "attn")
    assert hook_count(three_net) == 0
    np.testing.assert_allclose(explainer.predict(inputs), before, atol=1e-6)


def test_attention_on_a_non_attention_layer_is_refused(three_net):
    explainer = Explainer(three_net, _modalities(), device="cpu")
    with pytest.raises(LayerError, match="nn.MultiheadAttention"):
        explainer.attention(three_input_batch(1), "fuse")
    with pytest.raises(LayerError, match="no call 3"):
        explainer.attention(three_input_batch(1), "attn@3")
    assert hook_count(three_net) == 0
