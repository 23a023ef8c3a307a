"""Modality specs: what one input of a multi-input model is, and how raw images become tensors.

A :class:`Modality` names one positional (or keyword) argument of the model's ``forward`` and
knows its channels, input size and normalization.  :func:`prepare_inputs` turns whatever the
user gave per modality (normalized tensors, or images) into the network tensor *and* the display
image, kept apart so overlays are always drawn on un-normalized pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Modality"]


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
    """

    name: str
    arg: str | None = None
    channels: int = 3
    size: tuple[int, int] | int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    aligned: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        from .errors import InputError

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
        for field in ("mean", "std"):
            value = getattr(self, field)
            if value is None:
                continue
            value = tuple(float(v) for v in value)
            if len(value) not in (1, self.channels):
                raise InputError(
                    f"Modality {self.name!r}: {field} has {len(value)} values; expected 1 or "
                    f"{self.channels} (one per channel)."
                )
            object.__setattr__(self, field, value)
        if self.std is not None and any(s == 0 for s in self.std):
            raise InputError(f"Modality {self.name!r}: std must not contain 0, got {self.std}.")
