"""Colormaps, heatmap blending and PNG encoding.

:func:`overlay` is the standalone, validating entry point; :func:`blend` is the fast path for
already-validated display pixels and CAMs (``CamResult.overlay`` and every slider move).  Both
produce the same pixels as ``pytorch_grad_cam.utils.image.show_cam_on_image(img, cam,
use_rgb=True, colormap=..., image_weight=...)``: the arithmetic below repeats its float32 steps
in the same order, using 256-entry lookup tables instead of per-pixel colormap calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import cv2
import numpy as np

from .errors import InputError
from .images import _as_numpy, _display_pixels

__all__ = ["COLORMAPS", "blend", "colorbar", "colorize", "montage", "outline", "overlay", "to_png"]

#: OpenCV colormaps by lower-case name ("jet", "turbo", "viridis", ...) -> ``cv2.COLORMAP_*``.
COLORMAPS: dict[str, int] = {
    name[len("COLORMAP_") :].lower(): int(getattr(cv2, name))
    for name in sorted(dir(cv2))
    if name.startswith("COLORMAP_")
}


def overlay(
    image: Any,
    cam: Any,
    colormap: str | int = "jet",
    image_weight: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """Draw CAMs over images: ``uint8 RGB (H, W, 3)``, or ``(N, H, W, 3)`` if either is batched.

    Args:
        image: anything :func:`cam_core.images.to_display` accepts (numpy or torch; HW, HWC,
            CHW, NHWC, NCHW; uint8, bool, float in [0, 1], or normalized float with mean/std).
        cam: numpy or torch ``(H, W)``, ``(N, H, W)`` or ``(N, 1, H, W)``, any size (resized
            to the image with bilinear interpolation); NaN -> 0, values clipped to [0, 1].
        colormap: a name from :data:`COLORMAPS` (case-insensitive) or a ``cv2.COLORMAP_*``.
        image_weight: weight of the image in [0, 1]; the heatmap gets ``1 - image_weight``.
        mean, std: undo this normalization of a float image first (``x * std + mean``).

    Batches: N images with N CAMs, one image with N CAMs, or N images with one CAM.

    Raises:
        InputError: bad shapes, dtypes, values, colormap, weight or batch counts.
    """
    code = _colormap_code(colormap)
    weight = _check_weight(image_weight)
    pixels, image_batched = _display_pixels(image, mean, std)
    cams, cam_batched = _as_cams(cam)
    n, m = pixels.shape[0], cams.shape[0]
    cams = _resize_cams(cams, pixels.shape[1:3])
    if n != m:
        if n == 1:
            pixels = np.broadcast_to(pixels, (m, *pixels.shape[1:]))
        elif m == 1:
            cams = np.broadcast_to(cams, (n, *cams.shape[1:]))
        else:
            raise InputError(
                f"overlay got {n} images and {m} CAMs; give as many CAMs as images, "
                "or one image, or one CAM."
            )
    out = blend(pixels, cams, code, weight)
    return out if image_batched or cam_batched else out[0]


def blend(
    display: np.ndarray,
    cams: np.ndarray,
    colormap: str | int = "jet",
    image_weight: float = 0.5,
) -> np.ndarray:
    """Blend validated inputs: ``uint8 RGB (N, H, W, 3)``.

    Args:
        display: ``(N, H, W, 3)`` uint8, or float32 in [0, 1].
        cams: ``(N, H, W)`` float32 in [0, 1] (not checked: values outside wrap around), at the
            display's size.
        colormap, image_weight: as in :func:`overlay`.

    Per pixel, as show_cam_on_image: ``heat = colormap(uint8(255 * cam)) / 255``,
    ``x = (1 - w) * heat + w * img``, ``uint8(255 * x / max(x))`` with the max per image.
    """
    assert display.ndim == 4 and display.shape[-1] == 3, display.shape
    assert cams.shape == display.shape[:3], (cams.shape, display.shape)
    code = _colormap_code(colormap)
    w = float(image_weight)
    index = (np.float32(255) * np.asarray(cams, dtype=np.float32)).astype(np.uint8)
    # Table lookups give exactly the float32 values the per-pixel expressions would.
    out = np.take(np.float32(1 - w) * _heat_table(code), index, axis=0)
    # img in [0, 1] float32: uint8 as np.float32(img) / 255, the reference's own conversion
    img = display.astype(np.float32)
    if display.dtype == np.uint8:
        img /= np.float32(255)
    img *= np.float32(w)
    out += img
    peak = out.max(axis=(1, 2, 3), keepdims=True)
    peak[peak == 0] = 1  # an all-black result (black image, weight 1) stays black, not NaN
    out /= peak
    out *= np.float32(255)
    return out.astype(np.uint8)


def colorize(cam: Any, colormap: str | int = "jet") -> np.ndarray:
    """A bare heatmap: ``uint8 RGB (H, W, 3)``, or ``(N, H, W, 3)`` for batched CAMs.

    ``cam`` as in :func:`overlay` (NaN -> 0, clipped to [0, 1]); colors as ``blend`` uses them.
    """
    code = _colormap_code(colormap)
    cams, batched = _as_cams(cam)
    index = (np.float32(255) * cams).astype(np.uint8)
    out = np.take(_color_table(code), index, axis=0)
    return out if batched else out[0]


def colorbar(
    colormap: str | int = "jet",
    low: float = 0.0,
    high: float = 1.0,
    *,
    width: int = 256,
    height: int = 14,
    ticks: int = 5,
) -> np.ndarray:
    """A horizontal colorbar of ``colormap`` from ``low`` (left) to ``high``: uint8 RGB.

    The bar is ``(height, width)`` with the colors :func:`colorize` gives values ``0 .. 1``;
    below it, on white, ``ticks`` evenly spaced labels of the values ``low .. high`` (none when
    ``ticks`` is 0).  Returns ``(height, width, 3)`` without labels, else a little taller.
    """
    code = _colormap_code(colormap)
    if width < 16 or height < 1:
        raise InputError(f"colorbar needs width >= 16 and height >= 1, got {width}x{height}.")
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)
    bar = np.take(_color_table(code), (np.float32(255) * ramp).astype(np.uint8), axis=0)
    bar = np.repeat(bar[None], height, axis=0)
    if ticks <= 0:
        return bar
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1
    label_h = cv2.getTextSize("0", font, scale, thickness)[0][1] + 8
    out = np.full((height + label_h, width, 3), 255, np.uint8)
    out[:height] = bar
    for i in range(ticks):
        fraction = i / max(ticks - 1, 1)
        x = int(round(fraction * (width - 1)))
        out[height : height + 3, x] = 0  # tick mark
        text = _tick_label(low + fraction * (high - low))
        text_w = cv2.getTextSize(text, font, scale, thickness)[0][0]
        left = int(np.clip(x - text_w / 2, 0, width - text_w))
        cv2.putText(out, text, (left, height + label_h - 2), font, scale, (0, 0, 0), thickness,
                    cv2.LINE_AA)  # fmt: skip
    return out


def outline(
    images: np.ndarray, masks: Any, color: tuple[int, int, int] = (255, 255, 255)
) -> np.ndarray:
    """``images`` uint8 RGB ``(N, H, W, 3)`` with each mask's border drawn 1 px wide in
    ``color`` (a copy).  ``masks``: bool ``(N, h, w)`` or ``(h, w)``, resized (nearest) to the
    images; an empty mask draws nothing."""
    out = np.array(images, dtype=np.uint8, copy=True)
    masks = np.asarray(masks, dtype=np.uint8)
    if masks.ndim == 2:
        masks = np.broadcast_to(masks, (len(out), *masks.shape))
    height, width = out.shape[1:3]
    for image, mask in zip(out, masks):
        if mask.shape != (height, width):
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(image, contours, -1, tuple(int(c) for c in color), 1)
    return out


def montage(images: Sequence[np.ndarray], gap: int = 4, height: int | None = None) -> np.ndarray:
    """uint8 RGB images side by side on white, ``gap`` px apart: ``(H, sum(W) + gaps, 3)``.

    Each image is resized (bilinear) to ``height`` (default: the tallest), keeping its aspect.
    """
    if not images:
        raise InputError("montage needs at least one image.")
    height = height or max(image.shape[0] for image in images)
    tiles = []
    for image in images:
        h, w = image.shape[:2]
        if h != height:
            size = (max(1, round(w * height / h)), height)
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        tiles.append(image)
    width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
    out = np.full((height, width, 3), 255, np.uint8)
    left = 0
    for tile in tiles:
        out[:, left : left + tile.shape[1]] = tile
        left += tile.shape[1] + gap
    return out


def to_png(image: Any) -> bytes:
    """PNG bytes of one ``uint8`` image: RGB ``(H, W, 3)``, RGBA ``(H, W, 4)`` or gray ``(H, W)``
    / ``(H, W, 1)``."""
    arr, _ = _as_numpy(image, "image")
    if arr.dtype != np.uint8:
        raise InputError(
            f"to_png needs uint8 pixels, got dtype {arr.dtype}; convert with to_display() or "
            "overlay() first."
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]  # OpenCV writes BGR(A)
    elif arr.ndim != 2:
        raise InputError(
            f"to_png got shape {tuple(arr.shape)}; expected one image (H, W), (H, W, 3) or "
            "(H, W, 4). For a batch, encode each image: to_png(images[i])."
        )
    if arr.size == 0:
        raise InputError(f"to_png got an empty image (shape {tuple(arr.shape)}).")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise InputError(f"OpenCV could not encode an image of shape {arr.shape} as PNG.")
    return buf.tobytes()


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@cache
def _color_table(code: int) -> np.ndarray:
    """uint8 RGB ``(256, 3)``: the colormap's color for each uint8 value (read-only)."""
    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), code)
    table = np.ascontiguousarray(bgr[:, 0, ::-1])
    table.flags.writeable = False
    return table


@cache
def _heat_table(code: int) -> np.ndarray:
    """float32 RGB ``(256, 3)``: ``np.float32(heatmap) / 255`` as show_cam_on_image has it."""
    table = np.float32(_color_table(code)) / 255
    table.flags.writeable = False
    return table


def _colormap_code(colormap: str | int) -> int:
    if isinstance(colormap, str):
        key = colormap.strip().lower().removeprefix("cv2.").removeprefix("colormap_")
        if key in COLORMAPS:
            return COLORMAPS[key]
    elif (
        isinstance(colormap, (int, np.integer))
        and not isinstance(colormap, bool)
        and int(colormap) in COLORMAPS.values()
    ):
        return int(colormap)
    raise InputError(f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}.")


def _tick_label(value: float) -> str:
    """Short label: 3 significant digits, scientific notation for very large or small values."""
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:.3g}"
    return f"{value:.1e}"


def _check_weight(image_weight: Any) -> float:
    try:
        w = float(image_weight)
    except (TypeError, ValueError) as exc:
        raise InputError(f"image_weight must be a number in [0, 1], got {image_weight!r}.") from exc
    if not 0.0 <= w <= 1.0:  # also refuses NaN
        raise InputError(f"image_weight must be in [0, 1], got {image_weight!r}.")
    return w


def _as_cams(cam: Any) -> tuple[np.ndarray, bool]:
    """CAM(s) -> ``(float32 (M, h, w) in [0, 1], batched)``; NaN -> 0, values clipped."""
    arr, _ = _as_numpy(cam, "cam")
    shape = tuple(arr.shape)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise InputError(
            f"cam has shape {shape}; expected a non-empty (H, W), (N, H, W) or (N, 1, H, W)."
        )
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number)) or np.iscomplexobj(arr):
        raise InputError(f"cam has dtype {arr.dtype}; expected float (or int/bool) values.")
    batched = arr.ndim == 3
    values = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(values, 0.0, 1.0, out=values)
    return (values if batched else values[None]), batched


def _resize_cams(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 ``(M, h, w)`` -> ``(M, H, W)``, bilinear (cv2 INTER_LINEAR), kept in [0, 1]."""
    height, width = size
    if cams.shape[1:] == (height, width):
        return cams
    out = np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in cams])
    return np.clip(out, 0.0, 1.0, out=out)
