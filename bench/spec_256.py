"""Bench spec: the demo architecture built for 256 x 256 inputs (random weights, seeded).

Used by bench/app_speed.py to time the app at 3 modalities x 256 px through its own model
picker (`CAM_EXPLORER_SPEC=bench/spec_256.py`); the heatmaps mean nothing.
"""

from __future__ import annotations

import dataclasses

import torch

from cam_core.demo import CLASSES, DEFAULT_LAYER
from cam_core.demo import MODALITIES as _DEMO_MODALITIES
from cam_core.demo.model import DemoNet

SIZE = 256
MODALITIES = [dataclasses.replace(m, size=(SIZE, SIZE)) for m in _DEMO_MODALITIES]
NOTICE = "Bench model: the demo architecture at 256 px with random weights."
__all__ = ["CLASSES", "DEFAULT_LAYER", "MODALITIES", "NOTICE", "build_model"]


def build_model() -> torch.nn.Module:
    """The demo network for 256 px inputs, seeded random weights."""
    torch.manual_seed(0)
    return DemoNet(classes=len(CLASSES), image_size=SIZE)
