"""Images in, pixels out: safe decoding of uploads, and display pixels from any image-like.

* :func:`load_image` decodes bytes, paths, file objects, PIL images and numpy arrays into
  ``uint8 (H, W, channels)``, refusing decompression bombs and broken files with an
  :class:`~cam_core.errors.InputError`.  Only the raster formats of :data:`ALLOWED_FORMATS`
  are decoded, recognised by their header before any Pillow plugin runs: EPS/PostScript would
  start Ghostscript (an interpreter, which loops forever on ``{ } loop``), and PDF, SVG and
  Pillow's many rarer plugins are attack surface no user of this app needs.
* :func:`to_display` turns numpy arrays or torch tensors in any common layout (HW, HWC, CHW,
  NHWC, NCHW), uint8 / bool / float, normalized or not, into ``uint8 RGB (N, H, W, 3)``.

Rules (documented here because users rely on them):

* **16-bit and other deep images** (Pillow modes ``I;16*``, 16-bit RGB(A) PNGs, uint16 arrays)
  are scaled by their dtype's range: ``round(v * 255 / 65535)``, so an image using the full
  16-bit range keeps the full 8-bit range.  Pillow's own ``convert()`` clamps instead (every
  value over 255 becomes white), and it keeps only the high byte of 16-bit RGB PNGs, so those
  are decoded with OpenCV.  Mode ``I`` (32-bit int) is treated as 16-bit when its values lie in
  ``0..65535`` (Pillow gives 16-bit files that mode), otherwise min-max scaled.  Mode ``F``
  (float) is used as is when in ``[0, 1]``, otherwise min-max scaled (non-finite values -> 0).
* **Layouts in to_display**: 2-D is ``(H, W)``.  3-D: first dim in {1, 3, 4} and last not ->
  ``(C, H, W)``; last dim in {1, 3, 4} -> ``(H, W, C)``; both (e.g. 3x3x3) -> ``(H, W, C)`` for
  numpy, ``(C, H, W)`` for torch (each library's convention).  4-D likewise with dims 1 and 3.
  So a stack of 3 grayscale images must be given as ``(3, 1, H, W)``, not ``(3, H, W)``.
"""

from __future__ import annotations

import io
import os
import re
import struct
import sys
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

from .errors import InputError

__all__ = ["ALLOWED_FORMATS", "MAX_IMAGE_PIXELS", "denormalize", "load_image", "to_display"]

#: Pillow format names of the raster formats load_image decodes; anything else is refused by
#: its header (magic bytes), before Pillow sees it.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
# What a refused header most likely is, for the message.
_KNOWN_OTHERS = (
    (b"%!", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS (DOS binary)"),
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML (SVG?)"),
)

#: Largest image (width x height, from the file header) that load_image decodes.  40 MP covers
#: any camera photo; a bigger upload is almost surely a mistake or a decompression bomb.
MAX_IMAGE_PIXELS = 40_000_000

# Exceptions Pillow and its plugins raise on malformed data.  InputError is a ValueError, so it
# is never raised inside a try that catches these.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, zlib.error)

# Tolerance for float pixels a hair outside [0, 1] (rounding in the user's own pipeline).
_RANGE_TOLERANCE = 1e-3

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# EXIF orientation -> the transpose Pillow's ImageOps.exif_transpose applies, on numpy (H, W, C).
_ORIENT: dict[int, Any] = {
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.transpose(1, 0, 2),  # TRANSPOSE
    6: lambda a: np.rot90(a, -1),  # ROTATE_270 (counter-clockwise) = 90 clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # TRANSVERSE
    8: lambda a: np.rot90(a, 1),  # ROTATE_90 (counter-clockwise)
}


# --------------------------------------------------------------------------------------------
# load_image
# --------------------------------------------------------------------------------------------


def load_image(source: Any, channels: int = 3, *, notes: list[str] | None = None) -> np.ndarray:
    """Decode an image into ``uint8 (H, W, channels)``.

    Args:
        source: ``bytes`` / ``bytearray`` / ``memoryview``; a path (``str`` or ``Path``); a
            binary file object (``.getvalue()`` is used when present, e.g. Streamlit's
            ``UploadedFile`` or ``BytesIO``, so an already-read upload still decodes, else
            ``.read()``); a ``PIL.Image.Image``; or a numpy array ``(H, W)`` / ``(H, W, C)``
            that is uint8, bool, uint16 (scaled by 65535), small ints (0..255) or float in
            ``[0, 1]``.
        channels: 1 (grayscale, ITU-R 601 luma like Pillow's ``"L"``) or 3 (RGB); any other
            count only when the source already has exactly that many channels (returned raw).
        notes: when given, human-readable notes about conversions are appended (alpha
            composited on white, first frame of an animation used, ...).

    EXIF orientation is applied first; transparency is composited on white; 16-bit images are
    rescaled (see the module docstring).  Images over :data:`MAX_IMAGE_PIXELS` are refused
    from their header, before any pixel is decoded.

    Raises:
        InputError: empty, truncated or non-image data, too large, unsupported type or mode,
            or a channel count that cannot be produced.
    """
    channels = _check_channels(channels)
    if isinstance(source, np.ndarray):
        label = f"array of shape {source.shape}"
        pixels, bands = _array_to_bands(source, label, channels)
    elif isinstance(source, Image.Image):
        label = "PIL image"
        _check_pil_format(source, label)
        with _bomb_guard():
            pixels, bands = _decode_pil(source, label, None, notes)
    else:
        data, label = _read_source(source)
        if not data:
            raise InputError(f"could not decode {label} as an image: it is empty (0 bytes).")
        with _bomb_guard():
            pixels, bands = _decode_bytes(data, label, notes)
    out = _match_channels(pixels, bands, channels, label, notes)
    # Callers may edit the result in place: never hand back the caller's own array, nor a
    # read-only view of Pillow's buffer.
    if (
        not out.flags.writeable
        or not out.flags.c_contiguous
        or (isinstance(source, np.ndarray) and np.shares_memory(out, source))
    ):
        out = np.array(out, order="C", copy=True)
    return out


def _check_channels(channels: Any) -> int:
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise InputError(f"channels must be a positive int (1 or 3), got {channels!r}.")
    return int(channels)


def _read_source(source: Any) -> tuple[bytes, str]:
    """Bytes of a bytes-like, path or file object, and a label naming it in messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the data"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return path.read_bytes(), f"file {str(path)!r}"
        except FileNotFoundError as exc:
            raise InputError(f"image file {str(path)!r} does not exist; check the path.") from exc
        except OSError as exc:
            raise InputError(f"could not read image file {str(path)!r}: {exc}") from exc
    if hasattr(source, "read") or hasattr(source, "getvalue"):
        name = getattr(source, "name", None)
        label = f"upload {str(name)!r}" if name else "the file object"
        try:
            data = source.getvalue() if hasattr(source, "getvalue") else source.read()
        except OSError as exc:
            raise InputError(f"could not read {label}: {exc}") from exc
        if isinstance(data, str):
            raise InputError(f"{label} is open in text mode; open it in binary mode ('rb').")
        return bytes(data), label
    raise InputError(
        f"cannot load an image from a {type(source).__name__}; expected bytes, a path, a binary "
        "file object, a PIL image or a numpy array (pass tensors to to_display or explain)."
    )


@contextmanager
def _bomb_guard() -> Iterator[None]:
    """Turn Pillow's DecompressionBombWarning into an error, for this block only.

    catch_warnings restores the filters on exit.  It is not thread-safe (filters are process
    state), but the pixel cap checked right after Image.open refuses such images anyway.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _check_pixel_count(width: int, height: int, label: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{label} is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels; resize it before loading."
        )


def _decode_error(label: str, exc: BaseException) -> InputError:
    # Pillow's text names its file object ("<_io.BytesIO object at 0x…>"): not for people.
    reason = re.sub(r"\s*<[^>]* at 0x[0-9a-f]+>", "", str(exc)).strip(" :") or type(exc).__name__
    return InputError(f"could not decode {label} as an image: {reason}")


def _too_large(label: str, exc: BaseException) -> InputError:
    # One limit, in one sentence (Pillow's own text gives two and speaks of "DOS attacks").
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else f"more than {MAX_IMAGE_PIXELS:,} pixels"
    return InputError(
        f"{label} has {size}, over the limit of {MAX_IMAGE_PIXELS:,} pixels this app decodes; "
        "resize it and upload it again."
    )


def _sniff_format(data: bytes) -> str | None:
    """The allowed format (a name of :data:`ALLOWED_FORMATS`) whose magic bytes start
    ``data``, or ``None``."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _refused_format(data: bytes, label: str) -> InputError:
    head = data[:64].lstrip()
    kind = next((k for magic, k in _KNOWN_OTHERS if head.startswith(magic)), "no known image")
    return InputError(
        f"could not decode {label} as an image: its header {data[:8]!r} is {kind}, not one of "
        "the accepted formats (PNG, JPEG, BMP, TIFF, WebP, GIF). It was not opened; convert "
        "it to PNG first."
    )


def _check_pil_format(img: Image.Image, label: str) -> None:
    """A caller's PIL image whose pixels are still to be read from a file of another format
    (EPS: Ghostscript runs on load) is refused; images made in memory have no format."""
    # MPO: Pillow's name for JPEGs holding several pictures (phone cameras), read as JPEG.
    allowed = (*ALLOWED_FORMATS, "MPO")
    if img.format is not None and img.format not in allowed and img._im is None:
        raise InputError(
            f"{label} is an unloaded {img.format} file; only {', '.join(ALLOWED_FORMATS)} are "
            "decoded here (EPS and PDF would start an interpreter). Convert it to PNG first."
        )


def _decode_bytes(data: bytes, label: str, notes: list[str] | None) -> tuple[np.ndarray, str]:
    fmt = _sniff_format(data)
    if fmt is None:
        raise _refused_format(data, label)
    try:
        # Image.open reads only the header; Pillow's own bomb check runs inside it.  formats=
        # keeps every other plugin from even looking at the data.
        img = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(label, exc) from exc
    except _DECODE_ERRORS as exc:
        raise _decode_error(label, exc) from exc
    return _decode_pil(img, label, data, notes)


def _decode_pil(
    img: Image.Image, label: str, data: bytes | None, notes: list[str] | None
) -> tuple[np.ndarray, str]:
    """Pixels ``uint8 (H, W, C)`` and their bands ("L", "LA", "RGB", "RGBA") of a PIL image.

    ``data`` is the encoded file when the image was opened here from bytes (then the first
    frame of an animation is used); for a caller's PIL image, its current frame is used.
    """
    _check_pixel_count(img.width, img.height, label)
    deep: np.ndarray | None = None
    try:
        if data is not None and getattr(img, "is_animated", False):
            frames = img.n_frames
            img.seek(0)
            _note(notes, f"{frames} frames (animated); the first one is used")
        img.load()  # decodes now, so truncated data fails here (LOAD_TRUNCATED_IMAGES stays off)
        if data is not None and _is_16bit_color_png(data):
            orientation = img.getexif().get(0x0112, 1)
            deep = _ORIENT.get(orientation, lambda a: a)(_decode_png16_color(data))
        else:
            img = ImageOps.exif_transpose(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(label, exc) from exc
    except _DECODE_ERRORS as exc:
        raise _decode_error(label, exc) from exc
    if deep is not None:
        pixels = np.ascontiguousarray(_scale_uint16(deep))
        return pixels, "RGBA" if pixels.shape[2] == 4 else "RGB"
    return _pil_to_bands(img, label, notes)


def _is_16bit_color_png(data: bytes) -> bool:
    # IHDR is always the first chunk: bit depth at byte 24, colour type at 25 (2 RGB, 6 RGBA).
    return data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[24] == 16 and data[25] in (2, 6)


def _decode_png16_color(data: bytes) -> np.ndarray:
    """uint16 RGB(A) ``(H, W, 3 or 4)`` of a 16-bit PNG, through OpenCV: Pillow keeps only the
    high byte of each sample.  Raises OSError when OpenCV cannot decode it."""
    # IMREAD_UNCHANGED keeps 16 bits and ignores EXIF orientation (applied by the caller).
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16 or decoded.ndim != 3:
        raise OSError("OpenCV could not decode this 16-bit PNG")
    return decoded[..., [2, 1, 0, 3][: decoded.shape[2]]]  # BGR(A) -> RGB(A)


def _scale_uint16(values: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by the dtype range, rounded: ``round(v * 255 / 65535)``."""
    wide = values.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _pil_to_bands(img: Image.Image, label: str, notes: list[str] | None) -> tuple[np.ndarray, str]:
    mode = img.mode
    if mode.startswith("I;16"):
        return _scale_uint16(np.asarray(img))[..., None], "L"
    if mode == "I":
        values = np.asarray(img).astype(np.int64)
        if values.min() >= 0 and values.max() <= 65535:
            return _scale_uint16(values)[..., None], "L"
        return _min_max(values.astype(np.float64), notes)[..., None], "L"
    if mode == "F":
        return _float_mode_to_uint8(np.asarray(img), notes)[..., None], "L"
    transparent = "transparency" in img.info
    if mode in ("P", "PA"):
        img = img.convert("RGBA" if transparent or mode == "PA" else "RGB")
    elif mode in ("L", "1", "La"):
        img = img.convert("LA" if transparent or mode == "La" else "L")
    elif mode in ("RGB", "RGBa"):
        img = img.convert("RGBA" if transparent or mode == "RGBa" else "RGB")
    elif mode not in ("LA", "RGBA"):
        try:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
            img = img.convert("RGB")
        except ValueError as exc:
            raise InputError(
                f"{label} has image mode {mode!r}, which cannot be converted to RGB."
            ) from exc
    pixels = np.asarray(img)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels, img.mode


def _float_mode_to_uint8(values: np.ndarray, notes: list[str] | None) -> np.ndarray:
    finite = np.isfinite(values)
    if finite.all() and values.min() >= 0.0 and values.max() <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    if not finite.all():
        _note(notes, "NaN or infinite values shown as 0")
    return _min_max(np.where(finite, values, np.nan).astype(np.float64), notes)


def _min_max(values: np.ndarray, notes: list[str] | None) -> np.ndarray:
    """Float values (NaN ignored) min-max scaled to uint8; NaN -> 0; a constant image -> 0."""
    if not np.isfinite(values).any():
        _note(notes, "no finite values; shown black")
        return np.zeros(values.shape, np.uint8)
    lo, hi = np.nanmin(values), np.nanmax(values)
    _note(notes, f"values from {lo:g} to {hi:g} rescaled to 0..255 (min-max)")
    scaled = (values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values)
    return np.rint(np.nan_to_num(scaled, nan=0.0)).astype(np.uint8)


def _array_to_bands(arr: np.ndarray, label: str, channels: int) -> tuple[np.ndarray, str]:
    """A user's numpy image ``(H, W)`` / ``(H, W, C)`` -> uint8 ``(H, W, C)`` and its bands."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.size == 0:
        raise InputError(f"{label}: expected a non-empty (H, W) or (H, W, C) image array.")
    if arr.shape[0] in (1, 3, 4) and arr.shape[2] > 4 and arr.shape[2] != channels:
        raise InputError(
            f"{label} looks channels-first (C, H, W); load_image takes (H, W, C): pass "
            "arr.transpose(1, 2, 0)."
        )
    _check_pixel_count(arr.shape[1], arr.shape[0], label)
    pixels = _values_to_uint8(arr, label)
    c = pixels.shape[2]
    return pixels, {1: "L", 3: "RGB", 4: "RGBA"}.get(c, f"{c} channels")


def _values_to_uint8(arr: np.ndarray, label: str) -> np.ndarray:
    """uint8 as is; bool -> 0/255; uint16 -> dtype range; other ints must be 0..255;
    float must be finite and in [0, 1] (scaled by 255 and rounded)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype == np.uint16:
        return _scale_uint16(arr)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise InputError(
                f"{label} has {arr.dtype} values from {lo} to {hi}; expected 0..255 "
                "(or uint16, or float in [0, 1])."
            )
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        values = arr.astype(np.float32)
        _check_finite(values, label)
        _check_unit_range(
            values,
            label,
            "pass a normalized tensor to explain() instead, or "
            "un-normalize it (x * std + mean) to [0, 1]",
        )
        return np.rint(np.clip(values, 0.0, 1.0) * np.float32(255)).astype(np.uint8)
    raise InputError(f"{label} has dtype {arr.dtype}; expected uint8, bool, integer or float.")


def _check_finite(values: np.ndarray, label: str) -> None:
    if not np.isfinite(values).all():
        raise InputError(f"{label} contains NaN or infinite values; fix the input first.")


def _check_unit_range(values: np.ndarray, label: str, fix: str) -> None:
    lo, hi = float(values.min()), float(values.max())
    if lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
        raise InputError(
            f"{label} has float values from {lo:.4g} to {hi:.4g}; expected [0, 1]. It looks "
            f"normalized (or 0..255 floats): {fix}."
        )


def _match_channels(
    pixels: np.ndarray, bands: str, channels: int, label: str, notes: list[str] | None
) -> np.ndarray:
    """uint8 (H, W, C) with bands -> uint8 (H, W, channels)."""
    have = pixels.shape[2]
    if channels not in (1, 3):
        if have == channels:
            return pixels
        raise InputError(
            f"{label} has {have} channel(s) ({bands}); {channels} were asked for. Only 1 "
            "(grayscale) and 3 (RGB) are converted to; other counts must match the source."
        )
    if bands in ("LA", "RGBA"):
        pixels, bands = _composite_on_white(pixels, notes), bands[:-1]
    if bands == "L":
        if channels == 3:
            _note(notes, "grayscale replicated to 3 channels")
            return np.repeat(pixels, 3, axis=2)
        return pixels
    if bands == "RGB":
        if channels == 1:
            _note(notes, "color converted to grayscale (ITU-R 601 luma)")
            return np.asarray(Image.fromarray(pixels, "RGB").convert("L"))[..., None]
        return pixels
    raise InputError(
        f"{label} has {have} channels; cannot convert it to {channels}. Pass channels={have} "
        "or an image with 1, 3 or 4 (RGBA) channels."
    )


def _composite_on_white(pixels: np.ndarray, notes: list[str] | None) -> np.ndarray:
    """uint8 (H, W, C+1) with alpha last -> uint8 (H, W, C) over a white background."""
    color, alpha = pixels[..., :-1], pixels[..., -1:]
    if alpha.min() == 255:  # opaque: nothing to composite, nothing to tell
        return np.ascontiguousarray(color)
    _note(notes, "alpha channel composited on white")
    a = alpha.astype(np.uint16)
    # color * a/255 + 255 * (1 - a/255), rounded, in integers
    out = (color.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None:
        notes.append(text)


# --------------------------------------------------------------------------------------------
# to_display
# --------------------------------------------------------------------------------------------


def to_display(
    image: Any, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> tuple[np.ndarray, bool]:
    """Any image-like -> ``(uint8 RGB (N, H, W, 3), was_batched)``.

    Args:
        image: numpy array or torch tensor (detached, moved to CPU), layout ``(H, W)``,
            ``(H, W, C)``, ``(C, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with C = 1
            (replicated), 3, or 4 (RGBA, alpha dropped); see the module docstring for how
            ambiguous shapes are read.  uint8 is used as is, bool -> 0/255, float in ``[0, 1]``
            -> ``round(x * 255)``.
        mean, std: per-channel normalization of a float image (1 or C values); it is undone
            (``x * std + mean``) and the result clipped to ``[0, 1]``.  Ignored for integer
            and bool images, which are not normalized.

    Returns:
        ``(pixels, batched)``: batched is True for 4-D input.  ``pixels`` never shares memory
        with the input.

    Raises:
        InputError: unknown layout, NaN/inf, or float values outside ``[0, 1]`` without
            mean/std.
    """
    pixels, batched = _display_pixels(image, mean, std)
    if pixels.dtype == np.uint8:
        return np.array(pixels, order="C", copy=True), batched
    return np.rint(pixels * np.float32(255)).astype(np.uint8), batched


def denormalize(
    x: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None, *, axis: int = -1
) -> np.ndarray:
    """Undo ``(x - mean) / std``: float32 ``x * std + mean`` along the channel ``axis``.

    ``mean`` / ``std`` have 1 or ``x.shape[axis]`` values; ``None`` means 0 / 1.  No clipping.
    """
    values = np.asarray(x, dtype=np.float32)
    c = values.shape[axis]
    shape = [1] * values.ndim
    shape[axis] = c
    for field, given in (("std", std), ("mean", mean)):
        if given is None:
            continue
        vec = np.asarray(given, dtype=np.float32).reshape(-1)
        if vec.size not in (1, c):
            raise InputError(
                f"{field} has {vec.size} values but the image has {c} channels; give 1 or {c}."
            )
        vec = np.broadcast_to(vec, (c,)).reshape(shape)
        values = values * vec if field == "std" else values + vec
    return values


def _as_numpy(x: Any, what: str) -> tuple[np.ndarray, bool]:
    """numpy view of an array-like or torch tensor, and whether it was a torch tensor."""
    torch = sys.modules.get("torch")  # never import torch here: a tensor implies it is loaded
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
            t = t.float()
        return t.resolve_conj().resolve_neg().numpy(), True
    try:
        return np.asarray(x), False
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} of type {type(x).__name__} is not an array: {exc}") from exc


_LAYOUTS = "(H, W), (H, W, C), (C, H, W), (N, H, W, C) or (N, C, H, W) with C = 1, 3 or 4"


def _to_nhwc(arr: np.ndarray, prefer_channels_first: bool, what: str) -> tuple[np.ndarray, bool]:
    """Any accepted layout -> (N, H, W, C) view, and whether the input was batched (4-D)."""
    ok = (1, 3, 4)
    if arr.ndim == 2:
        return arr[None, ..., None], False
    if arr.ndim in (3, 4):
        batched = arr.ndim == 4
        c_first, c_last = arr.shape[-3] in ok, arr.shape[-1] in ok
        if c_first or c_last:
            channels_first = prefer_channels_first if c_first and c_last else c_first
            if channels_first:
                arr = np.moveaxis(arr, -3, -1)
            return (arr if batched else arr[None]), batched
    raise InputError(f"{what} has shape {tuple(arr.shape)}; expected {_LAYOUTS}.")


def _display_pixels(
    image: Any, mean: Sequence[float] | None, std: Sequence[float] | None, what: str = "image"
) -> tuple[np.ndarray, bool]:
    """Like :func:`to_display`, but float images stay float32 in ``[0, 1]`` (unrounded), and
    uint8 input may be returned as a view.  ``(N, H, W, 3)``, uint8 or float32."""
    arr, is_torch = _as_numpy(image, what)
    arr, batched = _to_nhwc(arr, prefer_channels_first=is_torch, what=what)
    if arr.size == 0:
        raise InputError(f"{what} is empty (shape {tuple(arr.shape)}).")
    if arr.shape[-1] == 4:  # RGBA: the CAM is drawn over the colors, alpha is dropped
        arr = arr[..., :3]
    if np.issubdtype(arr.dtype, np.floating):
        values = arr.astype(np.float32)
        _check_finite(values, what)
        if mean is not None or std is not None:
            values = np.clip(denormalize(values, mean, std), 0.0, 1.0)
        else:
            _check_unit_range(values, what, "pass the mean and std it was normalized with")
            values = np.clip(values, 0.0, 1.0)
    elif arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        values = _values_to_uint8(arr, what)
    else:
        raise InputError(f"{what} has dtype {arr.dtype}; expected uint8, bool or float.")
    if values.shape[-1] == 1:
        values = np.broadcast_to(values, (*values.shape[:-1], 3))
    return values, batched
