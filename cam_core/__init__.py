"""cam_core: Grad-CAM–style heatmaps for any (multi-input) PyTorch model, without editing it.

The public API (see README): :class:`Explainer`, :class:`Modality`, :class:`CamResult`,
:func:`overlay`, :func:`load_image`, :func:`load_checkpoint`, model sources (:func:`load_spec`,
:func:`torchvision_spec`, :func:`available_models`) and the :class:`CamError` family.
Importing this package does not import streamlit (the UI lives in ``app.py`` and ``pages/``).
"""

from __future__ import annotations

from . import metrics
from .attention import AttentionResult
from .checkpoint import load_checkpoint
from .errors import (
    CamError,
    InputError,
    LayerError,
    MethodError,
    ModelLoadError,
    ResourceError,
    SpecError,
    TargetError,
)
from .explainer import Explainer
from .images import load_image
from .layers import LayerInfo
from .methods import MethodInfo
from .modality import Batch, Modality
from .overlay import COLORMAPS, overlay
from .result import CamResult
from .rollout import RolloutResult
from .segmentation import Region
from .sources import ModelSpec, available_models, load_spec, torchvision_spec

__all__ = [
    "AttentionResult",
    "Batch",
    "COLORMAPS",
    "CamError",
    "CamResult",
    "Explainer",
    "InputError",
    "LayerError",
    "LayerInfo",
    "MethodError",
    "MethodInfo",
    "Modality",
    "ModelLoadError",
    "ModelSpec",
    "Region",
    "ResourceError",
    "RolloutResult",
    "SpecError",
    "TargetError",
    "available_models",
    "load_checkpoint",
    "load_image",
    "load_spec",
    "metrics",
    "overlay",
    "torchvision_spec",
]
