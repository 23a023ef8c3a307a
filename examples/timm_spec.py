"""Example spec: a timm model as it comes (``timm.create_model``), here DeiT-Tiny.

No wrapper and no ``reshape_transform``: at ViT/DeiT blocks the class token is dropped and the
196 patch tokens are laid on the 14x14 grid; Swin stages (channels-last ``(N, H, W, C)``) are
permuted; ConvNeXt stages are ordinary feature maps.  Change ``MODEL`` to any timm name
(``swin_tiny_patch4_window7_224``: ``DEFAULT_LAYER = "layers.3"``; ``convnext_tiny``:
``"stages.3"``); mean, std and input size come from timm's own config for that name.

    python -m cam_core layers --spec examples/timm_spec.py
    streamlit run app.py -- --spec examples/timm_spec.py

Nothing is downloaded (``pretrained=False``): the weights are random until you point
``CHECKPOINT`` at a saved ``state_dict`` (on a machine with internet,
``torch.save(timm.create_model(MODEL, pretrained=True).state_dict(), "deit_tiny.pt")``).
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from cam_core import Modality

MODEL = "deit_tiny_patch16_224"
_CFG = timm.get_pretrained_cfg(MODEL)  # mean, std, input size; no model is built for it

MODALITIES = [
    Modality("rgb", size=tuple(_CFG.input_size[1:]), mean=tuple(_CFG.mean), std=tuple(_CFG.std))
]
# After the last block only the class token reaches the head, so the usual ViT choice (as in
# grad-cam's documentation) is the last block's first norm: all tokens still carry the signal.
DEFAULT_LAYER = "blocks.11.norm1"
NOTICE = "timm model with random weights (pretrained=False): the heatmaps mean nothing."
# CHECKPOINT = "deit_tiny.pt"


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(MODEL, pretrained=False)
