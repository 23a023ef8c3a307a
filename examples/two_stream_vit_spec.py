"""Example spec: a two-stream vision transformer whose cross-attention mixes RGB and depth.

Each stream cuts its image into 8x8 patches, adds a class token and runs a self-attention
block; then RGB tokens attend to depth tokens and depth tokens to RGB tokens, and one joint
block sees both.  Token layers need no reshape from you: CAM Explorer drops the class token and
lays the 64 patch tokens on the 8x8 grid of the 64x64 input.

    python -m cam_core layers --spec examples/two_stream_vit_spec.py

Random (seeded) weights: the heatmaps show the mechanics, not evidence.
"""

from __future__ import annotations

import torch
from torch import nn

from cam_core import Modality

IMAGE_SIZE = 64
PATCH = 8

MODALITIES = [
    Modality(
        "rgb",
        size=IMAGE_SIZE,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        description="colour image",
    ),
    Modality("depth", channels=1, size=IMAGE_SIZE, description="depth map, near = bright"),
]
CLASSES = ["empty", "person", "vehicle"]
# RGB tokens after they attended to depth: (N, 1 + 64, dim), class token first.
DEFAULT_LAYER = "rgb_from_depth"
NOTICE = "Example model with random weights: the heatmaps show the mechanics, not evidence."


class Mlp(nn.Sequential):
    def __init__(self, dim: int) -> None:
        super().__init__(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, or with ``cross=True`` attention from ``x``
    to the tokens of another stream (``context``)."""

    def __init__(self, dim: int, heads: int, cross: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim) if cross else None
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        # Self-attention blocks ignore context; cross-attention blocks require it.
        q = self.norm1(x)
        kv = q if self.norm_context is None else self.norm_context(context)
        x = x + self.attn(q, kv, kv, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class Stream(nn.Module):
    """Patch embedding + class token + position embedding + one block: (N, 1 + L, dim)."""

    def __init__(self, channels: int, dim: int, heads: int) -> None:
        super().__init__()
        tokens = (IMAGE_SIZE // PATCH) ** 2
        self.patch_embed = nn.Conv2d(channels, dim, PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + tokens, dim) * 0.02)
        self.block = Block(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.block(x + self.pos_embed)


class TwoStreamViT(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.rgb_stream = Stream(3, dim, heads)
        self.depth_stream = Stream(1, dim, heads)
        self.rgb_from_depth = Block(dim, heads, cross=True)
        self.depth_from_rgb = Block(dim, heads, cross=True)
        self.joint = Block(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        r, d = self.rgb_stream(rgb), self.depth_stream(depth)
        r, d = self.rgb_from_depth(r, context=d), self.depth_from_rgb(d, context=r)
        x = self.joint(torch.cat([r, d], dim=1))  # (N, 2 * (1 + L), dim)
        class_tokens = x[:, [0, r.shape[1]]]  # both streams' class tokens
        return self.head(self.norm(class_tokens).mean(dim=1))


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return TwoStreamViT()
