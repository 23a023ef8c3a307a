"""Tiny seeded models shaped like the ones our users write, and helpers shared by the tests."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

# Two cores on CI: keep torch from oversubscribing them when pytest runs alongside a server.
torch.set_num_threads(min(2, os.cpu_count() or 1))


class Branch(nn.Sequential):
    """conv-relu-conv(stride 2)-relu: (N, C, H, W) → (N, width, H/2, W/2)."""

    def __init__(self, channels: int, width: int = 8) -> None:
        super().__init__(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
        )


class ThreeInputNet(nn.Module):
    """``forward(x_b, x_f, x_p)``: texture (1 ch), frequency (1 ch), RGB (3 ch), fused by
    cross-attention (RGB tokens query texture + frequency tokens), 4 classes."""

    def __init__(self, width: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.texture_branch = Branch(1, width)
        self.frequency_branch = Branch(1, width)
        self.rgb_branch = Branch(3, width)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.fuse = nn.Conv2d(width, width, 1)
        self.head = nn.Linear(width, classes)

    def forward(self, x_b: torch.Tensor, x_f: torch.Tensor, x_p: torch.Tensor) -> torch.Tensor:
        b = self.texture_branch(x_b)
        f = self.frequency_branch(x_f)
        p = self.rgb_branch(x_p)
        n, c, h, w = p.shape
        tokens = p.flatten(2).transpose(1, 2)
        kv = torch.cat([b.flatten(2).transpose(1, 2), f.flatten(2).transpose(1, 2)], dim=1)
        attended, _ = self.attn(tokens, kv, kv)
        grid = attended.transpose(1, 2).reshape(n, c, h, w) + p
        fused = torch.relu(self.fuse(grid))
        return self.head(fused.mean(dim=(2, 3)))


class ConcatWorkaround(nn.Module):
    """The workaround users write today: one concatenated tensor, sliced inside."""

    def __init__(self, net: ThreeInputNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, 0:1], x[:, 1:2], x[:, 2:5])


class SharedEncoderNet(nn.Module):
    """One encoder run on both modalities (a Siamese model): ``forward(left, right)``."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Branch(3, 8)
        self.head = nn.Linear(16, 3)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        a = self.encoder(left).mean(dim=(2, 3))
        b = self.encoder(right).mean(dim=(2, 3))
        return self.head(torch.cat([a, b], dim=1))


class TokenBlock(nn.Module):
    """A transformer-like block on tokens ``(N, L, C)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.mlp(self.norm(tokens))


class TwoStreamTokenNet(nn.Module):
    """ViT-style: each modality patch-embedded (stride 4), tokens concatenated with a class
    token, a shared token block, class token → head.  ``forward(rgb, depth=...)``."""

    def __init__(self, width: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.embed_rgb = nn.Conv2d(3, width, 4, stride=4)
        self.embed_depth = nn.Conv2d(1, width, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.1)
        self.block = TokenBlock(width)
        self.mix = TokenBlock(width)
        self.head = nn.Linear(width, classes)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        a = self.embed_rgb(rgb).flatten(2).transpose(1, 2)
        b = self.embed_depth(depth).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(a.shape[0], -1, -1), a, b], dim=1)
        tokens = self.mix(self.block(tokens))
        return self.head(tokens[:, 0] + tokens[:, 1:].mean(dim=1))


class SingleTokenNet(nn.Module):
    """One modality, class token + patch grid (8x8 for 32 px, patch 4): the ViT layout."""

    def __init__(self, width: int = 16, classes: int = 3, patch: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.1)
        self.block = TokenBlock(width)
        self.head = nn.Linear(width, classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1 + h*w, width)``: the class token, then the patches row by row."""
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.block(self.tokens(x))
        return self.head(tokens[:, 0] + tokens[:, 1:].mean(dim=1))


def three_input_batch(n: int = 2, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """Normalized tensors for ThreeInputNet: texture, frequency, rgb."""
    g = torch.Generator().manual_seed(seed)
    return {
        "texture": torch.randn(n, 1, size, size, generator=g),
        "frequency": torch.randn(n, 1, size, size, generator=g),
        "rgb": torch.randn(n, 3, size, size, generator=g),
    }


def hook_count(model: nn.Module) -> int:
    """Every hook registered on any module of ``model``."""
    total = 0
    for module in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_full_backward_hooks",
        ):
            total += len(getattr(module, attr, {}) or {})
    return total


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter and buffer."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def state_hash(model: nn.Module) -> str:
    """blake2b of every state_dict entry's name, dtype, shape and bytes: equal hashes mean the
    model is bit-for-bit the same."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture
def three_net() -> ThreeInputNet:
    torch.manual_seed(0)
    return ThreeInputNet()


@pytest.fixture
def three_modalities():
    from cam_core import Modality

    return [
        Modality("texture", channels=1),
        Modality("frequency", channels=1),
        Modality("rgb", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ]
