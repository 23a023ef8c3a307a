"""Errors raised by cam_core: one base class, one subclass per kind of problem.

Every message says what was wrong, with the offending value, and what to do.
"""

from __future__ import annotations

__all__ = [
    "CamError",
    "InputError",
    "LayerError",
    "MethodError",
    "TargetError",
    "ModelLoadError",
    "SpecError",
    "ResourceError",
    "Cancelled",
]


class CamError(Exception):
    """Base class of every error cam_core raises on purpose.

    ``modality`` names the input concerned, when there is one, so a UI can show the message next
    to that input's widget.
    """

    def __init__(self, message: str, *, modality: str | None = None) -> None:
        super().__init__(message)
        self.modality = modality


class InputError(CamError, ValueError):
    """An input (image, tensor, modality, argument) is missing or malformed."""


class LayerError(CamError, ValueError):
    """The chosen layer does not exist or cannot be a CAM target."""


class MethodError(CamError, ValueError):
    """Unknown CAM method, or a method that cannot run on this model/layer."""


class TargetError(InputError):
    """The target class is out of range or malformed."""


class ModelLoadError(CamError):
    """A model or checkpoint could not be loaded."""


class SpecError(ModelLoadError):
    """A spec file could not be imported or does not define what it must."""


class ResourceError(CamError):
    """The computation ran out of memory (GPU or CPU) or another resource."""


class Cancelled(CamError):
    """The computation was stopped on request (the process is shutting down: SIGTERM)."""
