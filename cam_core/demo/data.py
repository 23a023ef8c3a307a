"""Procedural tampering dataset: the demo's data, with the right answer known for every pixel.

Each sample is a synthetic photograph (smooth colour field, a few shapes, some fine gratings,
sensor noise of a per-image strength) seen through three modalities derived from it:

- ``rgb``: the photograph, uint8 ``(H, W, 3)``;
- ``texture``: local noise-residual energy (high-pass residual squared, box-averaged, log
  scale), uint8 ``(H, W)`` — spatially aligned with ``rgb``;
- ``frequency``: centred log-magnitude Fourier spectrum of the grey image, uint8 ``(H, W)`` —
  *not* spatially aligned: a pixel there is a spatial frequency, not a place in the scene.

Classes (:data:`CLASSES`):

- ``authentic``: nothing was edited (mask all False);
- ``spliced``: inside an elliptical region the scene carries much stronger noise, as if pasted
  from a high-ISO shot of the same scene;
- ``retouched``: inside the region the scene is blurred and denoised, as by a healing brush.

The edit changes noise statistics only, not content or mean colour, so the evidence is visible
mainly in ``texture`` and ``frequency``. Everything outside the region is drawn from the same
random numbers whatever the class, so the class cannot be read from the rest of the image: the
mask is exactly what the model needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CLASSES", "IMAGE_SIZE", "DemoBatch", "generate", "derive_modalities"]

CLASSES: tuple[str, ...] = ("authentic", "spliced", "retouched")
IMAGE_SIZE = 64

# Fixed (not per-image) scalings, so the absolute noise level survives into the uint8 maps.
_TEXTURE_LOG_MAX = float(np.log1p(600.0))
_FREQ_LOG_MIN, _FREQ_LOG_MAX = 2.0, 11.5


@dataclass(frozen=True)
class DemoBatch:
    """A generated batch.

    Attributes:
        inputs: ``{"rgb": uint8 (N, H, W, 3), "frequency": uint8 (N, H, W),
            "texture": uint8 (N, H, W)}``.
        labels: int64 ``(N,)``, indices into :data:`CLASSES`.
        masks: bool ``(N, H, W)``: the edited region in scene coordinates; all False for
            ``authentic``.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def generate(n: int, seed: int = 0, size: int = IMAGE_SIZE) -> DemoBatch:
    """Generate ``n`` samples, classes balanced (``i % 3``, shuffled); same seed, same batch."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    rgb = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    for i, label in enumerate(labels):
        rgb[i], masks[i] = _sample(rng, int(label), size)
    return DemoBatch(inputs={"rgb": rgb, **derive_modalities(rgb)}, labels=labels, masks=masks)


def derive_modalities(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """``frequency`` and ``texture`` maps of uint8 RGB images ``(N, H, W, 3)`` or ``(H, W, 3)``.

    Returns uint8 arrays of shape ``(N, H, W)`` (or ``(H, W)``), so a user with only a
    photograph can get the other two inputs the demo model takes.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
        raise ValueError(
            f"rgb must be uint8 (N, H, W, 3) or (H, W, 3), got {rgb.dtype} {rgb.shape}."
        )
    single = rgb.ndim == 3
    batch = rgb[None] if single else rgb
    freq = np.stack([_frequency(img) for img in batch]) if len(batch) else batch[..., 0]
    tex = np.stack([_texture(img) for img in batch]) if len(batch) else batch[..., 0]
    if single:
        return {"frequency": freq[0], "texture": tex[0]}
    return {"frequency": freq, "texture": tex}


def _sample(rng: np.random.Generator, label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 RGB image ``(size, size, 3)`` and its bool mask ``(size, size)``.

    Every random number is drawn whatever the label, so the label changes only the pixels inside
    the region.
    """
    scene = _scene(rng, size)
    region = _ellipse(rng, size)
    base_sigma = rng.uniform(2.0, 6.0)
    noise = rng.normal(0.0, 1.0, (size, size, 3)).astype(np.float32)
    patch_noise = rng.normal(0.0, 1.0, (size, size, 3)).astype(np.float32)
    splice_sigma = base_sigma + rng.uniform(7.0, 12.0)
    blur_sigma = rng.uniform(1.0, 1.6)

    image = scene + base_sigma * noise
    if label == 1:  # spliced: same content, much noisier
        edited = scene + splice_sigma * patch_noise
    elif label == 2:  # retouched: blurred and nearly noise-free
        edited = cv2.GaussianBlur(scene, (0, 0), blur_sigma) + 0.15 * base_sigma * patch_noise
    if label != 0:
        # The edit fades in over the region's outer 3 px, as a feathered brush would: a hard
        # seam would make the rim, not the region, the strongest evidence. Nothing outside the
        # mask changes.
        alpha = np.clip(cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3) / 3.0, 0, 1)
        image = image + alpha[..., None] * (edited - image)
    mask = region if label != 0 else np.zeros_like(region)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A clean float32 scene ``(size, size, 3)`` in about [20, 235]: colour field + shapes."""
    coarse = rng.uniform(50.0, 205.0, (4, 4, 3)).astype(np.float32)
    scene = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(3, 7))):
        shape = np.zeros((size, size), np.uint8)
        kind = int(rng.integers(3))
        cx, cy = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(size // 10, size // 4))
        if kind == 0:
            cv2.circle(shape, (cx, cy), r, 1, -1)
        elif kind == 1:
            cv2.rectangle(shape, (cx - r, cy - r // 2), (cx + r, cy + r // 2), 1, -1)
        else:
            pts = rng.integers(-r, r + 1, (3, 2)) + np.array([cx, cy])
            cv2.fillPoly(shape, [pts.astype(np.int32)], 1)
        colour = rng.uniform(30.0, 225.0, 3).astype(np.float32)
        # Fine gratings give blur something to erase besides noise.
        freq = rng.uniform(0.15, 0.45)
        angle = rng.uniform(0.0, np.pi)
        amp = rng.uniform(0.0, 18.0)
        grating = amp * np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
        inside = shape.astype(bool)
        scene[inside] = colour + grating[inside, None]
    return np.clip(scene, 20.0, 235.0)


def _ellipse(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random elliptical bool mask ``(size, size)``, 4–15 % of the image, fully inside it."""
    a, b = (float(v) for v in rng.uniform(0.11, 0.22, 2) * size)
    angle = rng.uniform(0.0, 180.0)
    margin = max(a, b) + 2
    cx, cy = (float(v) for v in rng.uniform(margin, size - margin, 2))
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, ((cx, cy), (2 * a, 2 * b), angle), 1, -1)
    return mask.astype(bool)


def _texture(rgb: np.ndarray) -> np.ndarray:
    """Noise-residual energy of one uint8 RGB image, uint8 ``(H, W)``."""
    img = rgb.astype(np.float32)
    residual = img - cv2.blur(img, (3, 3))
    energy = cv2.blur((residual * residual).mean(axis=2), (5, 5))
    return np.clip(np.rint(255.0 * np.log1p(energy) / _TEXTURE_LOG_MAX), 0, 255).astype(np.uint8)


def _frequency(rgb: np.ndarray) -> np.ndarray:
    """Centred log-magnitude spectrum of one uint8 RGB image's grey level, uint8 ``(H, W)``."""
    grey = rgb.astype(np.float32).mean(axis=2)
    h, w = grey.shape
    # A Hann window keeps the image border from painting a bright cross on the spectrum.
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    spectrum = np.fft.fftshift(np.fft.fft2((grey - grey.mean()) * window))
    logmag = np.log1p(np.abs(spectrum))
    scaled = 255.0 * (logmag - _FREQ_LOG_MIN) / (_FREQ_LOG_MAX - _FREQ_LOG_MIN)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
