"""Segmentation models: a class over a region, like grad-cam's ``SemanticSegmentationTarget``.

A segmentation model returns dense logits ``(N, K, H, W)`` (torchvision's return them as
``{"out": ...}``).  The score a CAM explains is then the sum of one class's logits over a region
of pixels: :class:`Region` names the class and the region, and :class:`RegionScores` is the
output rule that turns the dense logits into per-class sums over the region, ``(N, K)``, so
every method runs unchanged.  Without a region the whole image is the region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

__all__ = ["Region", "RegionScores", "region_sums"]


@dataclass(frozen=True, eq=False)
class Region:
    """Explain class ``category`` over the pixels of ``mask``.

    ``mask``: bool or float ``(H, W)`` (every sample) or ``(N, H, W)`` (one per sample), numpy
    or torch, at any size: it is resized (nearest) to the model output's ``(H, W)``.
    """

    category: int | str
    mask: Any

    def tensor(self) -> torch.Tensor:
        """The mask as float32 ``(N or 1, 1, H, W)``."""
        mask = torch.as_tensor(np.asarray(self.mask, dtype=np.float32))
        if mask.dim() == 2:
            mask = mask[None]
        if mask.dim() != 3:
            raise InputError(
                f"a region mask must be (H, W) or (N, H, W), got shape {tuple(mask.shape)}."
            )
        if not bool((mask > 0).any()):
            raise InputError("the region mask is empty: mark at least one pixel of the region.")
        return mask[:, None]


def region_sums(dense: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, K, H, W)`` dense logits → ``(N, K)`` sums over the region (all pixels by default).

    ``mask`` is float ``(N or 1, 1, h, w)``; resized (nearest) to ``(H, W)``.
    """
    if mask is None:
        return dense.sum(dim=(2, 3))
    mask = mask.to(device=dense.device, dtype=dense.dtype)
    if mask.shape[-2:] != dense.shape[-2:]:
        mask = F.interpolate(mask, size=dense.shape[-2:], mode="nearest")
    if mask.shape[0] not in (1, dense.shape[0]):
        raise InputError(
            f"the region masks are for {mask.shape[0]} samples, the batch has {dense.shape[0]}."
        )
    return (dense * mask).sum(dim=(2, 3))


class RegionScores:
    """Output rule: the model's dense logits (picked by ``inner``, an output rule of
    :class:`~cam_core.Explainer`) summed over ``region``'s mask, ``(N, K)``."""

    def __init__(self, region: Region, inner: Any = None) -> None:
        self.mask = region.tensor()
        self.inner = inner

    def __call__(self, output: Any) -> torch.Tensor:
        from .adapter import pick_output

        dense = pick_output(output, self.inner)
        if not isinstance(dense, torch.Tensor) or dense.dim() != 4:
            shape = tuple(dense.shape) if isinstance(dense, torch.Tensor) else type(dense).__name__
            raise InputError(
                f"a Region target needs dense (N, classes, H, W) logits (a segmentation model); "
                f"the model gave {shape}. Use an int target for a classifier."
            )
        return region_sums(dense, self.mask)
