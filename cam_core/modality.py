"""Modality specs: what one input of a multi-input model is, and how raw images become tensors.

A :class:`Modality` names one positional (or keyword) argument of the model's ``forward`` and
knows its channels, input size and normalization.  :func:`prepare_inputs` turns whatever the
user gave per modality (normalized tensors, or images) into the network tensor *and* the display
image, kept apart so overlays are always drawn on un-normalized pixels.
"""

from __future__ import annotations

import functools
import io
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from .errors import InputError

__all__ = ["Modality", "Batch", "prepare_inputs"]


@dataclass(frozen=True)
class Modality:
    """One input of the model.

    Args:
        name: the modality's name, used as key of inputs and results (``"rgb"``).
        arg: keyword argument name in ``forward``; ``None`` = passed positionally, in the order
            the modalities are listed.
        channels: channels of the network tensor (1 = grayscale, 3 = RGB, or any other count
            when tensors are given directly).
        size: ``(height, width)`` (or one int for a square) that images are resized to;
            ``None`` keeps each image's size.
        mean, std: per-channel normalization applied to images in ``[0, 1]``
            (``(x - mean) / std``); ``None`` = no normalization.
        aligned: whether pixels of this modality are spatially aligned with the scene (a
            Fourier spectrum is not: its heatmap is not a location in the image).
        description: one line shown in the UI next to the modality.
        baseline: what stands for "no information" in this input, used by
            :meth:`~cam_core.Explainer.contributions`: ``None`` (default) = zeros of the
            normalized tensor, i.e. the mean input when ``mean``/``std`` are the data's; a
            number = that constant in the normalized tensor; a tensor broadcastable to
            ``(N, C, H, W)``; or a callable taking the normalized ``(N, C, H, W)`` tensor and
            returning its baseline (e.g. a blurred copy).
    """

    name: str
    arg: str | None = None
    channels: int = 3
    size: tuple[int, int] | int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    aligned: bool = True
    description: str = ""
    # Not compared: a tensor baseline has no truth value, and a spec's callable is its identity.
    baseline: float | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = field(
        default=None, compare=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"Modality name must be a non-empty string, got {self.name!r}.")
        if not isinstance(self.channels, int) or self.channels < 1:
            raise InputError(
                f"Modality {self.name!r}: channels must be a positive int, got {self.channels!r}."
            )
        if isinstance(self.size, int):
            object.__setattr__(self, "size", (self.size, self.size))
        if self.size is not None:
            size = tuple(int(s) for s in self.size)
            if len(size) != 2 or min(size) < 1:
                raise InputError(
                    f"Modality {self.name!r}: size must be (height, width), got {self.size!r}."
                )
            object.__setattr__(self, "size", size)
        for attribute in ("mean", "std"):
            value = getattr(self, attribute)
            if value is None:
                continue
            value = tuple(float(v) for v in value)
            if len(value) not in (1, self.channels):
                raise InputError(
                    f"Modality {self.name!r}: {attribute} has {len(value)} values; expected 1 or "
                    f"{self.channels} (one per channel)."
                )
            object.__setattr__(self, attribute, value)
        if self.std is not None and any(s == 0 for s in self.std):
            raise InputError(f"Modality {self.name!r}: std must not contain 0, got {self.std}.")
        baseline = self.baseline
        if isinstance(baseline, np.ndarray):
            object.__setattr__(self, "baseline", torch.from_numpy(baseline).float())
        elif not (
            baseline is None
            or isinstance(baseline, torch.Tensor)
            or callable(baseline)
            or (isinstance(baseline, (int, float)) and not isinstance(baseline, bool))
        ):
            raise InputError(
                f"Modality {self.name!r}: baseline must be None, a number, a tensor or a "
                f"callable, got {type(baseline).__name__}."
            )

    def baseline_of(self, tensor: torch.Tensor) -> torch.Tensor:
        """This modality's baseline for the normalized ``tensor`` (N, C, H, W): same shape,
        dtype and device (see ``baseline``)."""
        baseline = self.baseline
        if baseline is None:
            return torch.zeros_like(tensor)
        if callable(baseline) and not isinstance(baseline, torch.Tensor):
            baseline = baseline(tensor)
        value = torch.as_tensor(baseline, dtype=tensor.dtype, device=tensor.device)
        try:
            return value.expand_as(tensor).clone()
        except RuntimeError as exc:
            raise InputError(
                f"{self.name}: its baseline has shape {tuple(value.shape)}, which does not "
                f"broadcast to the input {tuple(tensor.shape)}; give (C, 1, 1), (C, H, W) or a "
                "number.",
                modality=self.name,
            ) from exc

    def normalize(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, H, W, C)`` images → float32 ``(N, C, H, W)`` network tensor."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        if self.mean is not None:
            x = x - torch.tensor(self.mean).view(1, -1, 1, 1)
        if self.std is not None:
            x = x / torch.tensor(self.std).view(1, -1, 1, 1)
        return x

    def denormalize(self, tensor: torch.Tensor) -> np.ndarray:
        """Network tensor ``(N, C, H, W)`` → display image uint8 ``(N, H, W, 3)``.

        Undoes mean/std; values that still fall outside ``[0, 1]`` (a tensor normalized some
        other way) are min-max scaled per image.  One channel is shown as gray; other channel
        counts than 1 and 3 as the gray mean of their channels.
        """
        x = tensor.detach().float().cpu()
        if self.std is not None:
            x = x * torch.tensor(self.std).view(1, -1, 1, 1)
        if self.mean is not None:
            x = x + torch.tensor(self.mean).view(1, -1, 1, 1)
        if x.shape[1] not in (1, 3):
            x = x.mean(dim=1, keepdim=True)
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
        outside = (low < -1e-3) | (high > 1 + 1e-3)
        scaled = (x - low) / (high - low).clamp_min(1e-12)
        x = torch.where(outside, scaled, x.clamp(0, 1))
        images = (x * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return np.repeat(images, 3, axis=3) if images.shape[3] == 1 else images


@dataclass
class Batch:
    """Inputs ready for the model: network tensors and display images, per modality.

    Attributes:
        tensors: ``{name: float32 (N, C, H, W)}`` on the explainer's device.
        display: ``{name: uint8 (N, H, W, 3)}`` — what the CAM is drawn on (for tensor inputs
            made from the tensor on first use: a caller that never draws pays nothing).
        notes: things worth telling the user (alpha composited, 16-bit rescaled, ...).
        originals: ``{name: [uint8 (H_i, W_i, 3)] * N}`` each image at its own size, for the
            modalities whose images were resized for the model (overlays are drawn on these).
    """

    tensors: dict[str, torch.Tensor]
    display: Mapping[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    originals: dict[str, list[np.ndarray]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """The batch size N."""
        return next(iter(self.tensors.values())).shape[0]

    def sizes(self) -> dict[str, tuple[int, int]]:
        """``{name: (H, W)}`` of every modality's network input."""
        return {name: tuple(t.shape[-2:]) for name, t in self.tensors.items()}

    def select(self, index: int) -> Batch:
        """The one-sample batch of sample ``index``."""
        return Batch(
            {k: v[index : index + 1] for k, v in self.tensors.items()},
            _Display({k: _Slice(self.display, k, index) for k in self.display}),
            self.notes,
            {k: v[index : index + 1] for k, v in self.originals.items()},
        )


class _Display(Mapping[str, np.ndarray]):
    """Display images, each made by its maker on first access (then kept)."""

    def __init__(self, items: Mapping[str, np.ndarray | Callable[[], np.ndarray]]) -> None:
        self._items = dict(items)

    def __getitem__(self, name: str) -> np.ndarray:
        value = self._items[name]
        if callable(value):
            value = self._items[name] = value()
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class _Slice:
    """Sample ``index`` of ``display[name]``, made when asked for."""

    display: Mapping[str, np.ndarray]
    name: str
    index: int

    def __call__(self) -> np.ndarray:
        return self.display[self.name][self.index : self.index + 1]


def prepare_inputs(
    modalities: Sequence[Modality],
    inputs: Mapping[str, Any] | Sequence[Any],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Batch:
    """Validate and convert the user's inputs for every modality.

    ``inputs`` is ``{modality name: value}``, or a tuple/list of values in the modalities'
    order (as the model's ``forward`` takes them).
    ``inputs[name]`` is a normalized tensor ``(N, C, H, W)`` or ``(C, H, W)`` (used as is), or
    images: bytes, a path, a file object, a PIL image, a uint8/float numpy image ``(H, W[, C])``
    or batch ``(N, H, W[, C])``, or a list of those.  Every modality must have the same N.
    Network tensors come out as ``dtype`` (the model's): a float64/float16/bfloat16 tensor is
    cast, with a note saying so.
    """
    names = [m.name for m in modalities]
    if isinstance(inputs, (tuple, list)):
        # The model's own call: explain((x_b, x_f, x_p)) in the modalities' (forward) order.
        if len(inputs) != len(names):
            raise InputError(
                f"inputs is a {type(inputs).__name__} of {len(inputs)} items; give one per "
                f"modality in their order ({', '.join(names)}), or a dict "
                "{modality name: images or tensor}."
            )
        inputs = dict(zip(names, inputs))
    if not isinstance(inputs, Mapping):
        raise InputError(
            "inputs must be a dict {modality name: images or tensor}, or a tuple/list in the "
            f"modalities' order ({', '.join(names)}); got {type(inputs).__name__}."
        )
    unknown = [k for k in inputs if k not in names]
    if unknown:
        raise InputError(
            f"unknown modality {unknown[0]!r} in inputs; this model's modalities are "
            f"{', '.join(names)}.",
            modality=unknown[0],
        )
    tensors, display, notes, originals = {}, {}, [], {}
    for modality in modalities:
        if modality.name not in inputs or inputs[modality.name] is None:
            raise InputError(
                f"modality {modality.name!r} is missing: give one input per modality "
                f"({', '.join(names)}).",
                modality=modality.name,
            )
        value = inputs[modality.name]
        if isinstance(value, torch.Tensor):
            tensor = _check_tensor(modality, value)
            display[modality.name] = functools.partial(modality.denormalize, tensor)
            if tensor.dtype != dtype:
                notes.append(
                    f"{modality.name}: {str(tensor.dtype).removeprefix('torch.')} tensor cast "
                    f"to {str(dtype).removeprefix('torch.')}, the model's dtype"
                )
        else:
            images = _load_images(modality, value, notes, originals)
            display[modality.name] = images if images.shape[3] == 3 else np.repeat(images, 3, 3)
            tensor = modality.normalize(images)
        tensors[modality.name] = tensor.to(device=device, dtype=dtype)
    counts = {name: t.shape[0] for name, t in tensors.items()}
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{name}: {n}" for name, n in counts.items())
        raise InputError(
            f"every modality needs the same number of images (they are paired by order); "
            f"got {found}."
        )
    return Batch(tensors, _Display(display), notes, originals)


def _check_tensor(modality: Modality, value: torch.Tensor) -> torch.Tensor:
    name = modality.name
    if value.dim() == 3:
        value = value.unsqueeze(0)
    if value.dim() != 4:
        raise InputError(
            f"{name}: a tensor input must be (N, C, H, W) or (C, H, W), got shape "
            f"{tuple(value.shape)}.",
            modality=name,
        )
    if value.shape[1] != modality.channels:
        raise InputError(
            f"{name}: tensor has {value.shape[1]} channels, the modality expects "
            f"{modality.channels} (shape (N, C, H, W) = {tuple(value.shape)}).",
            modality=name,
        )
    if not value.is_floating_point():
        raise InputError(
            f"{name}: a tensor input must be float (normalized), got {value.dtype}; pass images "
            "as numpy uint8 instead to have them normalized.",
            modality=name,
        )
    if value.shape[0] == 0:
        raise InputError(f"{name}: the tensor holds no images (batch size 0).", modality=name)
    # clone(): a tensor made under torch.inference_mode() cannot take part in autograd.
    with torch.inference_mode(False):
        value = value.detach().clone()
    if not torch.isfinite(value).all():
        raise InputError(f"{name}: the tensor contains NaN or infinite values.", modality=name)
    return value


def _as_image_list(value: Any, channels: int = 3) -> list[Any]:
    """Split a modality's value into single images.

    A 3-D array is one ``(H, W, C)`` image when its last axis is short (up to 8, and shorter
    than height and width) or equals ``channels``; otherwise a batch ``(N, H, W)`` of grayscale
    images.  So a 2- or 5-channel image is refused for its channels, not read as a batch of
    64 one-pixel-wide images.
    """
    if isinstance(value, np.ndarray):
        short_last = value.ndim == 3 and value.shape[2] <= min(8, *value.shape[:2])
        one_image = value.ndim == 2 or (
            value.ndim == 3 and (value.shape[2] in (1, 3, 4, channels) or short_last)
        )
        return [value] if one_image else list(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (bytes, bytearray, memoryview, str, pathlib.Path, io.IOBase)):
        return [value]
    return [value]


def _load_images(
    modality: Modality,
    value: Any,
    notes: list[str],
    originals: dict[str, list[np.ndarray]] | None = None,
) -> np.ndarray:
    """Decode, convert and resize a modality's images → uint8 ``(N, H, W, channels)``.

    When an image is resized, every image of the modality is also kept at its own size as
    ``originals[name]`` (uint8 RGB), and a note says so.
    """
    from .images import load_image

    name = modality.name
    sources = _as_image_list(value, modality.channels)
    if not sources:
        raise InputError(f"{name}: no image given.", modality=name)
    images, own_size = [], []
    for i, source in enumerate(sources):
        label = f"{name}" if len(sources) == 1 else f"{name} image {i + 1}"
        own_notes: list[str] = []
        try:
            image = load_image(source, channels=modality.channels, notes=own_notes)
        except InputError as exc:
            raise InputError(f"{label}: {exc}", modality=name) from exc
        notes.extend(f"{label}: {note}" for note in own_notes)
        if image.ndim == 2:
            image = image[:, :, None]
        own_size.append(image)
        if modality.size is not None and image.shape[:2] != modality.size:
            (h, w), (height, width) = image.shape[:2], modality.size
            notes.append(
                f"{label}: resized from {w}×{h} to {width}×{height} px for the model; its "
                f"overlay is drawn at {w}×{h}"
            )
            image = _resize(image, modality.size)
        images.append(image)
    if originals is not None and any(a is not b for a, b in zip(own_size, images)):
        originals[name] = [im if im.shape[2] == 3 else np.repeat(im, 3, 2) for im in own_size]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        found = ", ".join(f"{im.shape[1]}×{im.shape[0]}" for im in images)
        raise InputError(
            f"{name}: images of one batch must have the same size, got {found}; set "
            f"Modality({name!r}, size=(H, W)) to have them resized.",
            modality=name,
        )
    return np.stack(images)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 ``(H, W, C)`` to ``size`` = (H, W): area when shrinking, else bilinear."""
    height, width = size
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    return resized.reshape(height, width, image.shape[2])
