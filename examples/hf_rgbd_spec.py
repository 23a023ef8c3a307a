"""Example spec: two Hugging Face ViT encoders (RGB, depth) fused by cross-attention.

The model is written the way Hugging Face models come: keyword inputs (``pixel_values=``,
``depth_values=``) and a ``ModelOutput`` whose ``.logits`` CAM Explorer reads by itself.  Each
encoder is a ``transformers.ViTModel`` (class token + 8x8 patches of a 64 px image); the RGB
tokens then query the depth tokens (``fusion``, an ``nn.MultiheadAttention``).  No wrapper and
no ``reshape_transform``: the class token is dropped and the 64 patch tokens laid on the 8x8 grid.

    python -m cam_core layers --spec examples/hf_rgbd_spec.py
    streamlit run app.py -- --spec examples/hf_rgbd_spec.py

Built from small random configs (nothing is downloaded): the heatmaps show the mechanics, not
evidence.  With your own weights, set ``CHECKPOINT`` to a saved ``state_dict``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import ViTConfig, ViTModel
from transformers.modeling_outputs import ImageClassifierOutput

from cam_core import Modality

IMAGE_SIZE = 64
PATCH = 8
WIDTH = 64

# Keyword arguments, as Hugging Face models take them; mean/std of ViTImageProcessor.
MODALITIES = [
    Modality(
        "rgb",
        arg="pixel_values",
        size=IMAGE_SIZE,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        description="colour image",
    ),
    Modality(
        "depth",
        arg="depth_values",
        channels=1,
        size=IMAGE_SIZE,
        mean=(0.5,),
        std=(0.5,),
        description="depth map, near = bright",
    ),
]
CLASSES = ["empty", "person", "vehicle"]
# RGB tokens after they attended to depth: (N, 1 + 64, WIDTH), class token first.
DEFAULT_LAYER = "fusion"
NOTICE = "Example model with random weights: the heatmaps show the mechanics, not evidence."


def encoder_config(channels: int) -> ViTConfig:
    """A small ViT: 2 layers, 4 heads, eager attention (its weights can be read)."""
    return ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        num_channels=channels,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * WIDTH,
        attn_implementation="eager",
    )


class RGBDepthViT(nn.Module):
    """``forward(pixel_values, depth_values) -> ImageClassifierOutput``."""

    def __init__(self, classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.rgb_encoder = ViTModel(encoder_config(3), add_pooling_layer=False)
        self.depth_encoder = ViTModel(encoder_config(1), add_pooling_layer=False)
        self.fusion = nn.MultiheadAttention(WIDTH, 4, batch_first=True)
        self.norm = nn.LayerNorm(WIDTH)
        self.classifier = nn.Linear(WIDTH, classes)

    def forward(
        self, pixel_values: torch.Tensor, depth_values: torch.Tensor
    ) -> ImageClassifierOutput:
        rgb = self.rgb_encoder(pixel_values=pixel_values).last_hidden_state  # (N, 65, WIDTH)
        depth = self.depth_encoder(pixel_values=depth_values).last_hidden_state
        fused, _ = self.fusion(rgb, depth, depth, need_weights=False)
        # Every token reaches the logits (mean pooling), so every token layer has gradients.
        tokens = self.norm(rgb + fused)
        return ImageClassifierOutput(logits=self.classifier(tokens.mean(dim=1)))


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return RGBDepthViT()
