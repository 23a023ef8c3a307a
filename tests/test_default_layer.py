"""The layer a model opens on (`cam_core.layers.suggest_layer`): the last CAM-ready layer with
spatial extent before pooling, a block's output rather than an activation inside it."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from cam_core import Explainer, Modality
from cam_core.layers import suggest_layer


def tree(model: nn.Module, size: int = 32, channels: int = 3) -> list:
    torch.manual_seed(0)
    return Explainer(model, [Modality("x", channels=channels, size=size)]).layer_tree()


class ConvThenPool(nn.Module):
    """Two conv blocks ending in a ReLU, then pooling to 1x1 and a 1x1 "conv head"."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Conv2d(4, 2, 1)  # ready (4-D) but 1x1: no spatial extent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.block(self.stem(x)))).flatten(1)


def test_a_block_is_preferred_to_its_trailing_relu_and_pooled_layers_are_skipped() -> None:
    rows = tree(ConvThenPool())
    ready = [r.path for r in rows if r.ready]
    assert ready[-1] in ("head", "block.1")  # the old "last ready row" rule: 1x1 map or a ReLU
    assert suggest_layer(rows) == "block"


def test_resnet_opens_on_layer4_as_in_grad_cam_examples() -> None:
    rows = tree(torchvision.models.resnet18(), size=64)
    assert suggest_layer(rows) == "layer4"


def test_a_spec_default_layer_wins_when_it_can_be_a_target() -> None:
    rows = tree(ConvThenPool())
    assert suggest_layer(rows, preferred="stem.0") == "stem.0"
    assert suggest_layer(rows, preferred="no.such.layer") == "block"


def test_no_ready_layer_gives_none() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(12, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    assert suggest_layer(tree(Flat(), size=2)) is None
