"""The CAM method registry: names, engines and what each method needs.

Each :class:`MethodInfo` carries an ``engine``: a factory ``engine(model, target_layers)`` that
returns a grad-cam-compatible object (``__call__(input_tensor, targets, eigen_smooth=...)``,
``get_cam_image``, ``get_target_width_height``, ``activations_and_grads.release()``).  Today
every engine is grad-cam's; a faster engine for the gradient methods can replace one entry
without touching the explainer.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from .errors import MethodError

__all__ = ["MethodInfo", "METHODS", "get_method"]

Engine = Callable[[nn.Module, Sequence[nn.Module]], object]

# Masked/ablated copies of one sample per model call: larger is faster, and uses more memory.
PERTURBATION_BATCH = 32


@dataclass(frozen=True)
class MethodInfo:
    """What a CAM method is and costs.

    Attributes:
        name: registry key (``"gradcam++"``).
        engine: factory ``engine(model, target_layers)`` of a grad-cam-compatible CAM object.
        uses_gradients: needs a backward pass.
        uses_layer: computes the map from the chosen layer (FullGrad does not).
        per_sample: runs the model on many perturbed copies of one sample, so samples are
            explained one at a time.
        input_dependent: the map depends on the explained modality's input pixels, so each
            modality gets its own run (instead of one map resized to every modality).
        input_gradient: differentiates w.r.t. the input tensor only (not every parameter).
        cost: a short human hint of the price.
        slow: worth a warning and a progress bar.
        notes: one line shown next to the method.
    """

    name: str
    engine: Engine
    uses_gradients: bool
    uses_layer: bool = True
    per_sample: bool = False
    input_dependent: bool = False
    input_gradient: bool = False
    cost: str = "1 forward + 1 backward"
    slow: bool = False
    notes: str = ""


def _grad_cam(class_name: str, **kwargs: object) -> Engine:
    """Engine for a grad-cam class, imported on first use (grad-cam imports are slow)."""

    def make(model: nn.Module, target_layers: Sequence[nn.Module]) -> object:
        import pytorch_grad_cam

        return getattr(pytorch_grad_cam, class_name)(model, list(target_layers), **kwargs)

    return make


def _ablation_cam(model: nn.Module, target_layers: Sequence[nn.Module]) -> object:
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.ablation_layer import AblationLayer

    # grad-cam's default ablation layer is one instance shared by every AblationCAM (a mutable
    # default argument): a fresh one keeps two models in two threads apart.
    return AblationCAM(
        model, list(target_layers), ablation_layer=AblationLayer(), batch_size=PERTURBATION_BATCH
    )


def _score_cam(model: nn.Module, target_layers: Sequence[nn.Module]) -> object:
    from pytorch_grad_cam import ScoreCAM

    cam = ScoreCAM(model, list(target_layers))
    cam.batch_size = PERTURBATION_BATCH
    return cam


def _fullgrad(model: nn.Module, target_layers: Sequence[nn.Module]) -> object:
    from pytorch_grad_cam import FullGrad

    del target_layers  # FullGrad uses every bias layer; passing none avoids its print().
    return FullGrad(model, [])


_REGISTRY = [
    MethodInfo("gradcam", _grad_cam("GradCAM"), True, notes="Channel weights = mean gradient."),
    MethodInfo(
        "gradcam++", _grad_cam("GradCAMPlusPlus"), True, notes="Second-order weights; sharper."
    ),
    MethodInfo(
        "hirescam",
        _grad_cam("HiResCAM"),
        True,
        notes="Gradient × activation per position; faithful to the model.",
    ),
    MethodInfo("xgradcam", _grad_cam("XGradCAM"), True, notes="Gradients scaled by activations."),
    MethodInfo("layercam", _grad_cam("LayerCAM"), True, notes="Positive gradients per position."),
    MethodInfo(
        "gradcam-elementwise",
        _grad_cam("GradCAMElementWise"),
        True,
        notes="Like HiResCAM with a ReLU before summing channels.",
    ),
    MethodInfo(
        "eigencam",
        _grad_cam("EigenCAM"),
        False,
        cost="1 forward",
        notes="First principal component of the activations; not class-specific.",
    ),
    MethodInfo(
        "eigengradcam",
        _grad_cam("EigenGradCAM"),
        True,
        notes="Principal component of gradient × activation.",
    ),
    MethodInfo(
        "kpca-cam",
        _grad_cam("KPCA_CAM"),
        False,
        cost="1 forward + kernel PCA",
        notes="Kernel PCA of the activations; not class-specific.",
    ),
    MethodInfo(
        "scorecam",
        _score_cam,
        False,
        per_sample=True,
        input_dependent=True,
        cost="1 forward per channel, per sample and modality",
        slow=True,
        notes="Masks the input with each channel's map; slow on wide layers.",
    ),
    MethodInfo(
        "ablationcam",
        _ablation_cam,
        False,
        per_sample=True,
        cost="1 forward per channel, per sample",
        slow=True,
        notes="Zeroes each channel and measures the score drop; slow on wide layers.",
    ),
    MethodInfo(
        "shapleycam",
        _grad_cam("ShapleyCAM"),
        True,
        input_gradient=True,
        cost="1 forward + 2 backward",
        notes="Gradient and Hessian-vector product (Shapley-value view).",
    ),
    MethodInfo(
        "fullgrad",
        _fullgrad,
        True,
        uses_layer=False,
        input_dependent=True,
        cost="1 forward + 1 backward per modality",
        notes="Ignores the chosen layer: sums input and bias gradients of every conv/BN layer.",
    ),
]

METHODS: dict[str, MethodInfo] = {info.name: info for info in _REGISTRY}

_ALIASES = {
    "grad-cam": "gradcam",
    "gradcampp": "gradcam++",
    "gradcamplusplus": "gradcam++",
    "score-cam": "scorecam",
    "ablation-cam": "ablationcam",
    "eigen-cam": "eigencam",
    "kpcacam": "kpca-cam",
    "layer-cam": "layercam",
    "xgrad-cam": "xgradcam",
    "hires-cam": "hirescam",
    "shapley-cam": "shapleycam",
    "full-grad": "fullgrad",
    "gradcamelementwise": "gradcam-elementwise",
}


def get_method(name: str) -> MethodInfo:
    """The method called ``name`` (case-insensitive; a few common spellings accepted)."""
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key in METHODS:
        return METHODS[key]
    close = difflib.get_close_matches(key, list(METHODS), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise MethodError(f"unknown CAM method {name!r}.{hint} Available: {', '.join(METHODS)}.")
