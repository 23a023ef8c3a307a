"""What one explanation produced: CAMs per modality, the images they belong to, the prediction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .modality import Modality

__all__ = ["CamResult"]


@dataclass
class CamResult:
    """The result of :meth:`cam_core.Explainer.explain`.

    Attributes:
        cams: ``{modality: float32 (N, H, W) in [0, 1]}`` at each modality's input size.
        raw: ``{modality: float32 (N, h, w)}`` the un-normalized map at the layer's resolution
            (before ReLU and min-max), for methods that have one.
        display: ``{modality: uint8 (N, H, W, 3)}`` the un-normalized images the CAMs belong to.
        originals: ``{modality: [uint8 (H_i, W_i, 3)] * N}`` the images at their own size, for
            modalities whose images were resized for the model (see ``overlay(full_size=...)``).
        probabilities: float32 ``(N, num_classes)``.
        targets: the class explained for each sample.
        layer, method: what was computed (``layer`` is None for layer-free methods).
        modalities: the model's modalities, in forward order.
        classes: class names, when the model has them.
        empty: ``{modality: bool (N,)}`` True where the CAM carries no signal (all zero,
            constant or NaN: a dead layer or a zero gradient).
        notices: sentences worth showing next to the result.
        options: the options used (``aug_smooth``, ``eigen_smooth``).
        layers: ``{modality: layer}`` each modality's CAM was taken at: the same ``layer`` for
            every modality, or each one's own branch (:meth:`~cam_core.Explainer.
            explain_branches`); empty for methods without a layer.
    """

    cams: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    display: dict[str, np.ndarray]
    probabilities: np.ndarray
    targets: list[int]
    layer: str | None
    method: str
    modalities: tuple[Modality, ...]
    classes: list[str] | None = None
    empty: dict[str, np.ndarray] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    options: dict[str, object] = field(default_factory=dict)
    originals: dict[str, list[np.ndarray]] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """The batch size N."""
        return int(self.probabilities.shape[0])

    @property
    def fused_notice(self) -> str | None:
        """The notice saying the overlays are one map of a fused layer drawn on every input
        (not per-modality evidence), or None."""
        from .branches import FUSED_NOTICE_START

        return next((n for n in self.notices if n.startswith(FUSED_NOTICE_START)), None)

    def class_name(self, index: int) -> str:
        """Name of class ``index`` (``"class 3"`` when the model has no names)."""
        if self.classes and 0 <= index < len(self.classes):
            return self.classes[index]
        return f"class {index}"

    def overlay(
        self,
        name: str,
        colormap: str | int = "jet",
        image_weight: float = 0.5,
        full_size: bool = False,
    ) -> np.ndarray | list[np.ndarray]:
        """The CAMs of modality ``name`` drawn on its images: uint8 RGB ``(N, H, W, 3)``.

        Cheap (no model call): redo it on every colormap or blend change.

        Args:
            full_size: draw on each image at its own resolution and aspect ratio (the CAM,
                computed at the model's input size, resized onto it, bilinear): a list of
                uint8 ``(H_i, W_i, 3)``. Same as ``False`` for images that were not resized.
        """
        from .overlay import blend

        if name not in self.cams:
            raise InputError(
                f"no CAM for modality {name!r}; this result has {', '.join(self.cams)}.",
                modality=name,
            )
        if full_size:
            return [
                blend(image[None], cam[None], colormap, image_weight)[0]
                for image, cam in zip(self.images(name), self.full_size_cams(name))
            ]
        return blend(self.display[name], self.cams[name], colormap, image_weight)

    def images(self, name: str) -> list[np.ndarray]:
        """Modality ``name``'s images at their own size: uint8 ``(H_i, W_i, 3)`` per sample."""
        return list(self.originals.get(name, self.display[name]))

    def full_size_cams(self, name: str) -> list[np.ndarray]:
        """Modality ``name``'s CAMs resized (bilinear) onto its images at their own size:
        float32 ``(H_i, W_i)`` in [0, 1] per sample."""
        from .overlay import _resize_cams

        return [
            _resize_cams(cam[None], image.shape[:2])[0]
            for cam, image in zip(self.cams[name], self.images(name))
        ]
