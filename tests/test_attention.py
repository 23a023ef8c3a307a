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


# -- timm and Hugging Face ViTs, built from small random configs (no downloads) -------------------


def _logits_during(model, run) -> torch.Tensor:
    """The model's output while ``run()`` (which reads attention) runs it."""
    seen = []
    handle = model.register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        run()
    finally:
        handle.remove()
    out = seen[0]
    return (out.logits if hasattr(out, "logits") else out).detach()


@pytest.fixture(scope="module")
def timm_vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=3
    ).eval()


def test_timm_attention_is_recomputed_from_the_blocks_q_and_k(timm_vit):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    explainer = Explainer(timm_vit, [Modality("image", size=(64, 64))], device="cpu")
    assert explainer.attention_layers() == [f"blocks.{i}.attn" for i in range(12)]
    with torch.no_grad():
        plain = timm_vit(x)
    assert timm_vit.blocks[3].attn.fused_attn  # the weights are never materialized...
    result = explainer.attention({"image": x}, "blocks.3.attn")
    logits = _logits_during(timm_vit, lambda: explainer.attention({"image": x}, "blocks.3.attn"))
    torch.testing.assert_close(logits, plain, atol=0, rtol=0)  # ...and the block runs as it did

    # Reference: timm's own explicit path, whose softmax output passes through attn_drop.
    block = timm_vit.blocks[3].attn
    seen = []
    handle = block.attn_drop.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    block.fused_attn = False
    try:
        with torch.no_grad():
            timm_vit(x)
    finally:
        block.fused_attn = True
        handle.remove()
    assert result.kind == "timm Attention" and result.weights.shape == (2, 3, 17, 17)
    np.testing.assert_allclose(result.weights, seen[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(result.weights.sum(axis=-1), 1.0, atol=1e-5)
    assert [(s.modality, s.start, s.height) for s in result.query_segments] == [("image", 1, 4)]
    assert hook_count(timm_vit) == 0


def _hf_vit(implementation: str):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config).eval()
    model.set_attn_implementation(implementation)
    return model


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_hugging_face_vit_attention_equals_its_own_output_attentions(implementation):
    model = _hf_vit(implementation)
    reference = _hf_vit("eager")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        plain = model(pixel_values=x).logits
        expected = reference(pixel_values=x, output_attentions=True).attentions
    explainer = Explainer(model, [Modality("image", size=(32, 32), arg="pixel_values")], "cpu")
    assert explainer.attention_layers() == ["vit.layers.0.attention", "vit.layers.1.attention"]
    result = explainer.attention({"image": x}, "vit.layers.1.attention")
    assert result.kind == "transformers attention" and result.weights.shape == (2, 2, 17, 17)
    np.testing.assert_allclose(result.weights, expected[1].numpy(), atol=1e-6)
    np.testing.assert_allclose(result.weights.sum(axis=-1), 1.0, atol=1e-5)
    logits = _logits_during(
        model, lambda: explainer.attention({"image": x}, "vit.layers.0.attention")
    )
    torch.testing.assert_close(logits, plain, atol=0, rtol=0)
    rollout = explainer.rollout({"image": x})
    assert rollout.raw.shape == (2, 4, 4) and rollout.layers == explainer.attention_layers()
    assert hook_count(model) == 0


def test_hugging_face_attention_without_weights_names_the_setting():
    pytest.importorskip("transformers")
    from transformers.models.vit import modeling_vit

    class OtherAttention(modeling_vit.ViTAttention):
        """A transformers class not known to be ViT-style: its weights are not recomputed."""

    OtherAttention.__module__ = modeling_vit.__name__

    model = _hf_vit("sdpa")
    layer = model.vit.layers[0]
    layer.attention = OtherAttention(model.config).eval()
    explainer = Explainer(model, [Modality("image", size=(32, 32), arg="pixel_values")], "cpu")
    assert "vit.layers.0.attention" not in explainer.attention_layers()
    with pytest.raises(LayerError, match="attn_implementation='eager'"):
        explainer.attention({"image": torch.zeros(1, 3, 32, 32)}, "vit.layers.0.attention")
    model.set_attn_implementation("eager")
    assert (
        "vit.layers.0.attention"
        in Explainer(
            model, [Modality("image", size=(32, 32), arg="pixel_values")], "cpu"
        ).attention_layers()
    )
    assert hook_count(model) == 0
