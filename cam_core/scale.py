"""One scale for many heatmaps, so that samples, layers and methods can be compared.

grad-cam scales every map to ``[0, 1]`` on its own (min-max per image): the hottest pixel of a
weak map looks as hot as that of a strong one.  :func:`shared_scale` instead divides the raw maps'
positive part (a CAM's ReLU) by one maximum over the whole set, so the ratio between any two
values — of one sample or of two — is kept.  :func:`value_at` reads a map under a point of the
image it is drawn on (a pointer position or a click).

A raw map is ``CamResult.raw[modality]``: float32 ``(N, h, w)`` at the layer's resolution,
before ReLU and scaling.  Raw values of different layers or methods share units only as far as
the methods do (all gradient x activation sums of one class score do); the scale makes that
visible rather than hiding it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .errors import InputError

__all__ = ["shared_scale", "value_at"]


def shared_scale(
    maps: Sequence[Any], sizes: Sequence[tuple[int, int]] | tuple[int, int] | None = None
) -> tuple[list[np.ndarray], float]:
    """Maps on one scale: ``(scaled, high)``.

    Args:
        maps: raw maps, each ``(h, w)`` or ``(N, h, w)`` (sizes may differ); NaN counts as 0.
        sizes: ``(H, W)`` to resize every map to (bilinear), or one size per map; None keeps
            each map's size.

    Returns:
        ``scaled``: one float32 array per map, same leading shape, in ``[0, 1]``:
        ``max(raw, 0) / high``; ``high``: the largest positive raw value of the set (the value at
        the top of the colorbar; 0.0 when no map has a positive value, every map is then 0).
    """
    if isinstance(maps, np.ndarray) and maps.ndim in (2, 3):
        raise InputError(
            "shared_scale takes a list of maps (e.g. [result.raw['rgb'] for result in ...]); "
            "wrap a single array in a list."
        )
    arrays = [_positive(m, i) for i, m in enumerate(maps)]
    if not arrays:
        raise InputError("shared_scale needs at least one map.")
    if sizes is None or (len(sizes) == 2 and all(isinstance(s, (int, np.integer)) for s in sizes)):
        targets = [sizes] * len(arrays)
    else:
        targets = list(sizes)
        if len(targets) != len(arrays):
            raise InputError(f"{len(targets)} sizes for {len(arrays)} maps; give one per map.")
    high = max(float(a.max()) for a in arrays)
    scaled = []
    for array, size in zip(arrays, targets):
        out = array / high if high > 0 else np.zeros_like(array)
        if size is not None:
            out = _resize(out, tuple(int(s) for s in size))
        scaled.append(np.clip(out, 0.0, 1.0).astype(np.float32))
    return scaled, high


def value_at(cam: Any, point: tuple[float, float], size: tuple[int, int] | None = None) -> float:
    """The value of map ``cam`` ``(h, w)`` under ``point = (x, y)`` of an image of ``size =
    (H, W)`` it is drawn on (default: the map's own size), bilinearly, as the overlay shows it.

    ``x``/``y`` are pixel coordinates (column, row) of the displayed image, as a click or a
    pointer reports them; points outside are clamped to the border.
    """
    array = np.asarray(cam, np.float32)
    if array.ndim != 2 or array.size == 0:
        raise InputError(f"value_at takes one (h, w) map, got shape {array.shape}.")
    height, width = size if size is not None else array.shape
    h, w = array.shape
    # Half-pixel centres, as cv2.resize (INTER_LINEAR) maps output pixels onto the input.
    u = np.clip((float(point[0]) + 0.5) * w / width - 0.5, 0, w - 1)
    v = np.clip((float(point[1]) + 0.5) * h / height - 0.5, 0, h - 1)
    x0, y0 = int(np.floor(u)), int(np.floor(v))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = u - x0, v - y0
    top = array[y0, x0] * (1 - fx) + array[y0, x1] * fx
    bottom = array[y1, x0] * (1 - fx) + array[y1, x1] * fx
    return float(top * (1 - fy) + bottom * fy)


def _positive(raw: Any, index: int) -> np.ndarray:
    array = np.asarray(raw, dtype=np.float32)
    if array.ndim not in (2, 3) or array.size == 0:
        raise InputError(
            f"map {index} has shape {array.shape}; expected (h, w) or (N, h, w) "
            "(CamResult.raw[modality])."
        )
    return np.maximum(np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0), 0.0)


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if array.shape[-2:] == (height, width):
        return array
    flat = array.reshape(-1, *array.shape[-2:])
    out = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in flat])
    return out.reshape(*array.shape[:-2], height, width)
