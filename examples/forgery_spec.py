"""Example spec: a forgery detector shaped like the models our users write.

Three inputs to ``forward(self, x_b, x_f, x_p)`` -- a texture map, a frequency spectrum and the
RGB image -- each encoded by its own CNN; RGB tokens then query texture and frequency tokens
with ``nn.MultiheadAttention`` (cross-attention), and a conv "fusion" layer feeds the classifier.
The model is used as is: CAM Explorer binds the other inputs while it explains one.

    python -m cam_core layers --spec examples/forgery_spec.py
    python -m cam_core explain --spec examples/forgery_spec.py --input texture=t.png \
        --input frequency=f.png --input rgb=p.png --out results/

The weights are random (seeded): the heatmaps show the mechanics, not real evidence.  Point
CHECKPOINT at your state_dict to explain a trained model.
"""

from __future__ import annotations

import torch
from torch import nn

from cam_core import Modality

IMAGE_SIZE = 64

# One Modality per forward argument.  arg= passes each one by keyword, so the names shown in the
# app ("texture", ...) need not match the argument names (x_b, ...).
MODALITIES = [
    Modality("texture", arg="x_b", channels=1, size=IMAGE_SIZE, description="texture map"),
    Modality(
        "frequency",
        arg="x_f",
        channels=1,
        size=IMAGE_SIZE,
        aligned=False,
        description="log-magnitude spectrum: positions are frequencies, not places",
    ),
    Modality(
        "rgb",
        arg="x_p",
        size=IMAGE_SIZE,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        description="the photo itself",
    ),
]
CLASSES = ["real", "fake"]
DEFAULT_LAYER = "fusion"
NOTICE = "Example model with random weights: the heatmaps show the mechanics, not evidence."
# CHECKPOINT = "forgery_weights.pt"   # a state_dict saved with torch.save(model.state_dict(), ...)


class Encoder(nn.Module):
    """``(N, in_channels, H, W)`` -> ``(N, dim, H/8, W/8)``."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in [(in_channels, 16), (16, 32), (32, dim)]:
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CrossAttention(nn.Module):
    """Queries attend to keys/values of other modalities; residual, pre-norm."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(context)
        mixed, _ = self.attn(self.norm_q(query), kv, kv)
        return query + mixed


class ForgeryNet(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, classes: int = 2) -> None:
        super().__init__()
        self.texture_branch = Encoder(1, dim)
        self.frequency_branch = Encoder(1, dim)
        self.rgb_branch = Encoder(3, dim)
        self.cross = CrossAttention(dim, heads)
        self.fusion = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.ReLU()
        )
        self.head = nn.Linear(dim, classes)

    def forward(self, x_b: torch.Tensor, x_f: torch.Tensor, x_p: torch.Tensor) -> torch.Tensor:
        b, f, p = self.texture_branch(x_b), self.frequency_branch(x_f), self.rgb_branch(x_p)
        n, c, h, w = p.shape
        rgb_tokens = p.flatten(2).transpose(1, 2)  # (N, h*w, C)
        context = torch.cat([b.flatten(2), f.flatten(2)], dim=2).transpose(1, 2)  # (N, 2hw, C)
        fused = self.cross(rgb_tokens, context).transpose(1, 2).reshape(n, c, h, w)
        return self.head(self.fusion(fused).mean(dim=(2, 3)))


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return ForgeryNet()
