"""From a layer's raw map to per-modality CAMs, in torch on the map's device.

grad-cam's scaling, done once and in one place for every engine: ReLU, per-image min-max at the
layer's resolution, a half-pixel bilinear resize to each modality's input size (the numbers of
``cv2.resize`` that grad-cam's ``scale_cam_image`` calls), min-max again, clipped to ``[0, 1]``.
Only the final ``(N, H, W)`` maps cross to the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Augmentation", "LayerMaps", "augmentations", "fit", "native", "per_modality"]

# grad-cam's epsilon in scale_cam_image: img / (1e-7 + max).
_EPS = 1e-7

LayerMaps = tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max of ``(N, h, w)`` as grad-cam does it (NaN stays NaN)."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    shifted = maps - low
    return shifted / (_EPS + shifted.amax(dim=(1, 2), keepdim=True))


def native(raw: torch.Tensor) -> torch.Tensor:
    """The layer's map scaled at its own resolution: float32 ``(N, h, w)`` in ``[0, 1]``.

    ReLU then per-image min-max; a sample with a NaN or infinite value becomes all zero (its
    flag comes from :func:`per_modality`).
    """
    scaled = _min_max(torch.relu(raw.float()))
    return torch.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0)


def fit(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, h, w)`` maps in ``[0, 1]`` → ``(N, H, W)`` at ``size`` = (H, W), min-maxed again.

    Half-pixel bilinear (``align_corners=False``, no antialias): ``cv2.resize``'s numbers.
    """
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return _min_max(maps).clamp_(0.0, 1.0)


def per_modality(
    natives: Mapping[str, torch.Tensor],
    raws: Mapping[str, torch.Tensor],
    sizes: Mapping[str, tuple[int, int]],
    missing: Sequence[str] = (),
    n: int = 1,
) -> LayerMaps:
    """Per-modality CAMs at each modality's input size.

    ``natives[name]`` / ``raws[name]``: the ``(N, h, w)`` maps of a modality with its own map;
    a modality without one shares the first map (a layer map serves every input), a
    ``missing`` one gets zeros.  Maps shared by several modalities are scanned for NaN once.
    Returns numpy ``(cams float32 (N, H, W) in [0, 1], raw float32 (N, h, w), NaN bool (N,))``.
    """
    first = next(iter(natives))
    cams, raw_out, nan = {}, {}, {}
    done: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    fitted: dict[tuple[int, int, int], np.ndarray] = {}
    for name, (height, width) in sizes.items():
        if name in missing:
            cams[name] = raw_out[name] = np.zeros((n, height, width), np.float32)
            nan[name] = np.zeros(n, bool)
            continue
        raw = raws.get(name, raws[first])
        if id(raw) in done:  # a map shared by several modalities: scanned once, copied
            raw_out[name], nan[name] = (a.copy() for a in done[id(raw)])
        else:
            flags = ~torch.isfinite(raw).flatten(1).all(dim=1)
            done[id(raw)] = (raw.detach().float().cpu().numpy(), flags.cpu().numpy())
            raw_out[name], nan[name] = done[id(raw)]
        layer_map = natives.get(name, natives[first])
        key = (id(layer_map), height, width)
        if key in fitted:  # another modality of the same size shares this map: resize once
            cams[name] = fitted[key].copy()
        else:
            cams[name] = fitted[key] = fit(layer_map, (height, width)).cpu().numpy()
    return cams, raw_out, nan


Augmentation = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def augmentations() -> list[Augmentation]:
    """grad-cam's test-time augmentations as ``(augment inputs, undo on maps)`` pairs.

    Horizontal flip × brightness 0.9 / 1 / 1.1 (ttach's ``HorizontalFlip`` then ``Multiply``),
    the identity first so its forward gives the prediction.  Maps are ``(..., h, w)``.
    """

    def make(flip: bool, factor: float) -> Augmentation:
        def augment(x: torch.Tensor) -> torch.Tensor:
            return (x.flip(-1) if flip else x) * factor

        def undo(m: torch.Tensor) -> torch.Tensor:
            return m.flip(-1) if flip else m

        return augment, undo

    return [make(flip, factor) for flip in (False, True) for factor in (1.0, 0.9, 1.1)]
