"""The demo model: three convolutional branches, cross-attention fusion, a classification head.

``forward(rgb, frequency, texture)`` takes the three modalities as separate normalized tensors,
``(N, 3, 64, 64)``, ``(N, 1, 64, 64)``, ``(N, 1, 64, 64)`` float32, and returns logits
``(N, 3)``.  Layer tree at 64 px (what a CAM can target)::

    rgb_branch, texture_branch  (N, 64, 16, 16); .stem (N, 16, 64, 64), .down1 (N, 32, 32, 32),
                                .down2 (N, 32, 16, 16), .refine (N, 64, 16, 16)
    frequency_branch            (N, 64, 8, 8); same blocks, but .down3 (N, 64, 8, 8) last
    fusion.attn     nn.MultiheadAttention: 256 RGB tokens (16 x 16) query 256 texture tokens
                    (each only the one at its own place) and 64 frequency tokens (8 x 8, all);
                    output (N, 256, 64)
    fusion          (N, 256, 64): fused tokens on the 16 x 16 RGB grid
    head.features   (N, 64, 16, 16), then max pooling (head.pool) and head.fc
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["DemoNet", "ConvBranch", "CrossAttentionFusion", "Head"]


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ConvBranch(nn.Sequential):
    """Encoder of one modality: ``(N, in_channels, H, W)`` -> ``(N, dim, H/4, W/4)``, or
    ``(N, dim, H/8, W/8)`` with ``coarse=True``.

    The stem keeps full resolution because the evidence is pixel-level noise, which a strided
    first convolution would alias away.  Scene branches end in ``refine`` (stride 1): it widens
    the receptive field to 17 px but keeps the 16 x 16 grid, fine enough for a heatmap to tell a
    14 px region from its neighbours.  The spectrum branch ends in ``down3`` (stride 2): fewer
    tokens for attention to read, and frequencies need no fine "where".
    """

    def __init__(self, in_channels: int, dim: int = 64, coarse: bool = False) -> None:
        super().__init__(
            OrderedDict(
                stem=_conv_block(in_channels, 16, 1),
                down1=_conv_block(16, 32, 2),
                down2=_conv_block(32, 32, 2),
                **{"down3" if coarse else "refine": _conv_block(32, dim, 2 if coarse else 1)},
            )
        )


class CrossAttentionFusion(nn.Module):
    """RGB tokens query texture and frequency tokens; returns fused RGB tokens ``(N, L, dim)``.

    Each RGB token attends to the texture token at its own place (texture is pixel-aligned with
    RGB) and to every frequency token (a spectrum has no "where").  Without that limit,
    attention copies the evidence of the edited region into every token: the class is still
    right, but no heatmap after the fusion can say where the edit is (a 3 x 3 neighbourhood was
    tried too, with average pooling: heatmaps spread over, and drifted to, the neighbours
    attention preferred).  The
    texture token of the place is also added to the RGB token directly, so local evidence never
    has to win attention weight from 64 spectrum tokens to reach the head.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        grid: tuple[int, int],
        spectrum_tokens: int,
        radius: int = 0,
    ) -> None:
        super().__init__()
        # Spectrum positions are frequencies the branch's convolutions cannot tell apart.
        self.pos_spectrum = nn.Parameter(torch.randn(1, spectrum_tokens, dim) * 0.02)
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        # Derived from the grid, so not saved with the weights.
        self.register_buffer(
            "context_mask", _context_mask(grid, spectrum_tokens, radius), persistent=False
        )

    def forward(
        self, rgb: torch.Tensor, frequency: torch.Tensor, texture: torch.Tensor
    ) -> torch.Tensor:
        """Feature maps ``(N, dim, h, w)`` each -> fused RGB tokens ``(N, h*w, dim)``."""
        query = rgb.flatten(2).transpose(1, 2)
        context = torch.cat(
            [
                texture.flatten(2).transpose(1, 2),
                frequency.flatten(2).transpose(1, 2) + self.pos_spectrum,
            ],
            dim=1,
        )
        context = self.norm_context(context)
        # Training takes PyTorch's fused attention kernel (need_weights=False): fast, but it has
        # no second derivative.  In eval mode the explicit path runs: ShapleyCAM can
        # differentiate it twice, and its weights are what cam_core's attention view reads.
        attended, _ = self.attn(
            self.norm_query(query),
            context,
            context,
            attn_mask=self.context_mask,
            need_weights=not self.training,
        )
        tokens = query + texture.flatten(2).transpose(1, 2) + attended
        return tokens + self.mlp(self.norm_mlp(tokens))


def _context_mask(grid: tuple[int, int], spectrum_tokens: int, radius: int) -> torch.Tensor:
    """Additive attention mask float32 ``(L, L + spectrum_tokens)``: 0 where an RGB token may
    look (texture tokens within ``radius`` on the grid, all frequency tokens), -inf elsewhere."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    near = ((rows[:, None] - rows[None]).abs() <= radius) & (
        (cols[:, None] - cols[None]).abs() <= radius
    )
    allowed = torch.cat([near, torch.ones(len(near), spectrum_tokens, dtype=torch.bool)], dim=1)
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))


class Head(nn.Module):
    """Fused tokens ``(N, h*w, dim)`` -> logits ``(N, classes)``, via a spatial map and max pooling.

    Max, not average, pooling: an image is edited when *some* place is, so the head asks for the
    strongest local evidence.  Trained with average pooling, the model leaned on global cues and
    its heatmaps after the fusion landed on the edited region only about half the time.
    """

    def __init__(self, dim: int, classes: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = grid
        self.features = nn.Sequential(
            nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True)
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, _, dim = tokens.shape
        x = tokens.transpose(1, 2).reshape(n, dim, *self.grid)
        return self.fc(self.pool(self.features(x)).flatten(1))


class DemoNet(nn.Module):
    """Three-modality tampering classifier; see the module docstring for the layer tree."""

    def __init__(
        self, classes: int = 3, image_size: int = 64, dim: int = 64, heads: int = 4
    ) -> None:
        super().__init__()
        grid = (image_size // 4, image_size // 4)
        self.rgb_branch = ConvBranch(3, dim)
        self.frequency_branch = ConvBranch(1, dim, coarse=True)
        self.texture_branch = ConvBranch(1, dim)
        self.fusion = CrossAttentionFusion(dim, heads, grid, (grid[0] // 2) * (grid[1] // 2))
        self.head = Head(dim, classes, grid)

    def forward(
        self, rgb: torch.Tensor, frequency: torch.Tensor, texture: torch.Tensor
    ) -> torch.Tensor:
        """Normalized ``rgb (N, 3, H, W)``, ``frequency (N, 1, H, W)``, ``texture (N, 1, H, W)``
        -> logits ``(N, classes)``."""
        fused = self.fusion(
            self.rgb_branch(rgb), self.frequency_branch(frequency), self.texture_branch(texture)
        )
        return self.head(fused)
