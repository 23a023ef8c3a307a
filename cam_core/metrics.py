"""Ground-truth scores of a heatmap: does it point at the region that holds the evidence?

Both scores compare a map with a mask of the region a person (or a generator) knows to matter:

* :func:`pointing_game` — the map's maximum lies inside the mask (Zhang et al., 2016).
* :func:`energy_in_mask` — the share of the map's sum that falls inside the mask (a uniform map
  scores the mask's area).

Maps and masks may be one ``(H, W)`` or a batch ``(N, H, W)``; a mask of another size is resized
to the map's with nearest-neighbour sampling; one mask serves a whole batch.  A map with no signal
(constant, all zero, NaN) and an empty mask score ``False`` / ``0.0``: there is nothing to point
at, or nothing pointed at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .errors import InputError

__all__ = ["energy_in_mask", "load_mask", "pointing_game", "score_masks"]


def pointing_game(cam: Any, mask: Any) -> np.ndarray:
    """Whether each map's maximum lies inside its mask: bool ``(N,)``.

    Args:
        cam: ``(H, W)`` or ``(N, H, W)`` map (any real dtype; NaN counts as no signal).
        mask: ``(H, W)`` or ``(N, H, W)``: bool, or numbers (non-zero = inside).

    The maximum is the first one in row-major order (``argmax``), as grad-cam's own benchmarks
    count it; a map without signal is never a hit.
    """
    cams, masks = _pair(cam, mask)
    flat = cams.reshape(len(cams), -1)
    signal = _has_signal(flat)
    peaks = np.argmax(np.nan_to_num(flat, nan=-np.inf), axis=1)
    hits = masks.reshape(len(masks), -1)[np.arange(len(flat)), peaks]
    return hits & signal


def energy_in_mask(cam: Any, mask: Any) -> np.ndarray:
    """Share of each map's sum inside its mask: float32 ``(N,)`` in ``[0, 1]``.

    Args:
        cam: ``(H, W)`` or ``(N, H, W)`` map; negative values count as zero (a CAM's ReLU), so a
            raw, un-normalized map can be scored as well.
        mask: ``(H, W)`` or ``(N, H, W)``: bool, or numbers (non-zero = inside).
    """
    cams, masks = _pair(cam, mask)
    positive = np.maximum(np.nan_to_num(cams.astype(np.float64), nan=0.0), 0.0)
    total = positive.reshape(len(cams), -1).sum(axis=1)
    inside = np.where(masks, positive, 0.0).reshape(len(cams), -1).sum(axis=1)
    share = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    return share.astype(np.float32)


def score_masks(result: Any, masks: Sequence[Any | None]) -> dict[str, dict[str, list]]:
    """Both scores of a :class:`~cam_core.CamResult` against one mask per sample (or None).

    Only modalities that are spatially aligned with the scene are scored (a spectrum's pixel is
    not a place).  Returns ``{modality: {"pointing_game": [bool | None] * N, "energy_in_mask":
    [float | None] * N}}``, None where a sample has no mask or an empty one (an unedited image:
    nothing to point at); ``{}`` when no sample has one.
    """
    if len(masks) != result.size:
        raise InputError(f"{len(masks)} masks for {result.size} samples; give one (or None) each.")
    given = [i for i, mask in enumerate(masks) if mask is not None and np.asarray(mask).any()]
    if not given:
        return {}
    scores: dict[str, dict[str, list]] = {}
    for modality in result.modalities:
        if not modality.aligned or modality.name not in result.cams:
            continue
        cams = result.cams[modality.name]
        pointing: list[bool | None] = [None] * result.size
        energy: list[float | None] = [None] * result.size
        for i in given:
            pointing[i] = bool(pointing_game(cams[i], masks[i])[0])
            energy[i] = float(energy_in_mask(cams[i], masks[i])[0])
        scores[modality.name] = {"pointing_game": pointing, "energy_in_mask": energy}
    return scores


def load_mask(source: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """A region mask from an image (bytes, path, file, PIL, array): bool ``(H, W)``.

    Pixels brighter than half the range are inside (a white-on-black mask, as the demo's
    ``mask.png``).  ``size = (height, width)`` resizes it (nearest neighbour) to an input's size.
    """
    from .images import load_image

    gray = load_image(source, channels=1)[..., 0]
    inside = gray > 127
    if size is not None:
        inside = _resize_masks(inside[None], tuple(size))[0]
    return inside


def _pair(cam: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Maps float ``(N, H, W)`` and bool masks ``(N, H, W)`` at the maps' size."""
    cams = np.asarray(cam)
    if cams.ndim == 2:
        cams = cams[None]
    if cams.ndim != 3 or cams.size == 0 or not np.issubdtype(cams.dtype, np.number):
        raise InputError(
            f"cam must be a numeric (H, W) or (N, H, W) array, got shape {cams.shape} of "
            f"{cams.dtype}; pass CamResult.cams[modality] or one map."
        )
    masks = np.asarray(mask)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.size == 0:
        raise InputError(
            f"mask must be (H, W) or (N, H, W), got shape {masks.shape}; load an image with "
            "cam_core.metrics.load_mask()."
        )
    if len(masks) not in (1, len(cams)):
        raise InputError(
            f"{len(masks)} masks for {len(cams)} maps; give one mask per map, or one for all."
        )
    masks = masks.astype(bool) if masks.dtype != bool else masks
    if masks.shape[1:] != cams.shape[1:]:
        masks = _resize_masks(masks, cams.shape[1:])
    return cams, np.broadcast_to(masks, cams.shape)


def _resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of bool masks ``(N, h, w)`` to ``size = (H, W)``."""
    height, width = size
    return np.stack(
        [
            cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            for m in masks
        ]
    )


def _has_signal(flat: np.ndarray) -> np.ndarray:
    """True per row of ``(N, K)`` that is finite somewhere and not constant."""
    finite = np.isfinite(flat)
    high = np.max(flat, axis=1, where=finite, initial=-np.inf)
    low = np.min(flat, axis=1, where=finite, initial=np.inf)
    return finite.any(axis=1) & (high > low)
