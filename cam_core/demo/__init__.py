"""The bundled demo: a small three-modality tampering detector that we train, with ground truth.

The model (:mod:`.model`) takes a photograph (``rgb``), its Fourier spectrum (``frequency``) and
a noise-residual map (``texture``), fuses them by cross-attention (RGB tokens query texture and
frequency tokens) and says whether a region was ``spliced`` in (much noisier), ``retouched``
(blurred and denoised) or nothing was edited (``authentic``).  The data (:mod:`.data`) is
procedural, so every sample comes with the mask of the edited region: a heatmap can be checked
against the right answer.  Weights and sample images were written by ``python -m
cam_core.demo.train`` and ship with the package; nothing is downloaded.

This module is also a spec (``MODALITIES``, ``CLASSES``, ``DEFAULT_LAYER``, ``build_model``),
so the app and the command line treat the demo like any user's model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..modality import Modality
from .data import CLASSES, IMAGE_SIZE, DemoBatch, derive_modalities, generate
from .model import DemoNet

if TYPE_CHECKING:
    from ..explainer import Explainer

__all__ = [
    "CLASSES",
    "DEFAULT_LAYER",
    "IMAGE_SIZE",
    "MODALITIES",
    "SAMPLES_DIR",
    "WEIGHTS",
    "DemoBatch",
    "DemoNet",
    "build_model",
    "derive_modalities",
    "generate",
    "load_explainer",
]

WEIGHTS = Path(__file__).with_name("weights.pt")
SAMPLES_DIR = Path(__file__).with_name("samples")

#: The model's inputs, in the order of ``DemoNet.forward(rgb, frequency, texture)``.  Mean and
#: std are those of the generated data (``bench/demo_quality.py`` prints them).
MODALITIES: list[Modality] = [
    Modality(
        "rgb",
        channels=3,
        size=IMAGE_SIZE,
        mean=(0.5, 0.5, 0.5),
        std=(0.2, 0.2, 0.2),
        description="The photograph.",
    ),
    Modality(
        "frequency",
        channels=1,
        size=IMAGE_SIZE,
        mean=(0.27,),
        std=(0.1,),
        aligned=False,
        description=(
            "Log-magnitude Fourier spectrum of the grey image, centred: a pixel is a spatial "
            "frequency, not a place in the scene, so its heatmap does not point at the edit."
        ),
    ),
    Modality(
        "texture",
        channels=1,
        size=IMAGE_SIZE,
        mean=(0.52,),
        std=(0.2,),
        description="Local noise-residual energy of the photograph, pixel-aligned with rgb.",
    ),
]

#: The layer whose heatmaps land on the edited region best: Grad-CAM's maximum falls inside it
#: on (nearly) every edited sample, with the most of the heatmap's energy inside (see
#: ``bench/demo_quality.py`` and the README).  ``"fusion"`` (after the cross-attention) scores
#: the same pointing game with a broader map.
DEFAULT_LAYER = "head.features"


def build_model(weights: bool = True) -> DemoNet:
    """The demo network in eval mode, on the CPU, with the shipped weights (``weights=False``:
    untrained, random weights)."""
    if not weights:
        return DemoNet(classes=len(CLASSES), image_size=IMAGE_SIZE).eval()
    from ..checkpoint import load_checkpoint

    model = DemoNet(classes=len(CLASSES), image_size=IMAGE_SIZE)
    load_checkpoint(model, WEIGHTS)
    return model.eval()


def load_explainer(device: str = "auto") -> Explainer:
    """An :class:`~cam_core.Explainer` on the trained demo model."""
    from ..explainer import Explainer

    return Explainer(
        build_model(),
        MODALITIES,
        device=device,
        classes=list(CLASSES),
        default_layer=DEFAULT_LAYER,
    )
