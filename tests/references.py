"""grad-cam run the way its documentation tells users to, on models as they come.

The reference for models that take keyword inputs or return a ``ModelOutput`` (Hugging Face),
or several inputs: the user's workaround, one concatenated tensor sliced inside a wrapper that
returns the logits, and the ``reshape_transform`` grad-cam's examples prescribe for token and
channels-last layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from cam_core import Modality


class Workaround(nn.Module):
    """``forward(x)`` with ``x`` the modalities concatenated on channels, in their order; each
    slice is passed positionally or by its ``Modality.arg``; returns ``.logits`` when the model
    returns a ``ModelOutput``."""

    def __init__(self, model: nn.Module, modalities: Sequence[Modality]) -> None:
        super().__init__()
        self.model = model
        self.modalities = list(modalities)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args, kwargs, start = [], {}, 0
        for modality in self.modalities:
            part = x[:, start : start + modality.channels]
            start += modality.channels
            if modality.arg is None:
                args.append(part)
            else:
                kwargs[modality.arg] = part
        output = self.model(*args, **kwargs)
        return getattr(output, "logits", output)


def drop_class_token(
    height: int, width: int, leading: int = 1
) -> Callable[[torch.Tensor], torch.Tensor]:
    """grad-cam's documented ViT reshape: ``(N, 1 + h*w, C)`` → ``(N, C, h, w)``; ``leading``
    tokens are dropped (2 with DeiT's distillation token, 5 with 4 registers)."""

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        grid = tokens[:, leading:].reshape(tokens.shape[0], height, width, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)

    return reshape


def channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """grad-cam's reshape for channels-last maps (timm Swin, ConvNeXt blocks): NHWC → NCHW."""
    return tensor.permute(0, 3, 1, 2)


def tap(module: nn.Module) -> nn.Identity:
    """A hookable identity on ``module``'s output tensor, or on the first tensor of a tuple
    output (grad-cam cannot hook a tuple): the user's workaround for ``nn.MultiheadAttention``
    and Hugging Face layers.  Patches ``module``'s forward on the instance;
    ``del module.forward`` undoes it."""
    identity = nn.Identity()
    original = module.forward

    def forward(*args, **kwargs):
        output = original(*args, **kwargs)
        if isinstance(output, torch.Tensor):
            return identity(output)
        first, *rest = output
        return type(output)([identity(first), *rest])

    module.forward = forward
    return identity


def grad_cam(
    model: nn.Module,
    modalities: Sequence[Modality],
    layer: nn.Module,
    inputs: dict[str, torch.Tensor],
    targets: Sequence[int],
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
    method: type = GradCAM,
) -> np.ndarray:
    """grad-cam's map ``(N, H, W)`` for ``inputs`` (normalized, one size for all modalities)."""
    x = torch.cat([inputs[m.name] for m in modalities], dim=1)
    with method(Workaround(model, modalities), [layer], reshape_transform=reshape) as cam:
        return cam(x, [ClassifierOutputTarget(int(t)) for t in targets])
