"""The CAM method registry: names, engines and what each method needs.

Each :class:`MethodInfo` carries an ``engine``: a factory ``engine(model, target_layers)`` that
returns a grad-cam-compatible object (``__call__(input_tensor, targets, eigen_smooth=...)``,
``get_cam_image``, ``get_target_width_height``, ``activations_and_grads.release()``): grad-cam's
classes.  The explainer runs the methods listed in :data:`cam_core.engine.WEIGHTINGS` with the
floor-cost engine instead (one forward, one backward to the layer); their grad-cam engines stay
here as the reference the tests compare with.  ScoreCAM, AblationCAM, ShapleyCAM and FullGrad
run through these engines (:mod:`cam_core.gradcam_runs`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from .errors import MethodError

__all__ = ["MethodInfo", "METHODS", "get_method"]

Engine = Callable[[nn.Module, Sequence[nn.Module]], object]

# Masked/ablated copies of one sample per model call until the request sizes it to the free
# memory (cam_core.gradcam_runs): larger is faster, and uses more memory.
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

    class _AblationLayer(AblationLayer):
        """grad-cam's ablation layer that also tells which channel each row ablates
        (``ablated``): at a token layer the routing hook ablates that channel in the class
        token too, as grad-cam's ``AblationLayerVit`` does on the whole token tensor."""

        def __call__(self, x):
            self.ablated = [int(self.indices[i]) for i in range(self.activations.size(0))]
            return super().__call__(x)

    # grad-cam's default ablation layer is one instance shared by every AblationCAM (a mutable
    # default argument): a fresh one keeps two models in two threads apart.
    return AblationCAM(
        model, list(target_layers), ablation_layer=_AblationLayer(), batch_size=PERTURBATION_BATCH
    )


def _score_cam(model: nn.Module, target_layers: Sequence[nn.Module]) -> object:
    from pytorch_grad_cam import ScoreCAM

    cam = ScoreCAM(model, list(target_layers))
    cam.batch_size = PERTURBATION_BATCH
    return cam


def _shapley_cam(model: nn.Module, target_layers: Sequence[nn.Module]) -> object:
    from pytorch_grad_cam import ShapleyCAM

    class _ShapleyCAM(ShapleyCAM):
        """ShapleyCAM that also runs on a frozen model (``requires_grad_(False)``).

        Its Hessian-vector product differentiates the layer's gradient w.r.t. the activations.
        When the score is linear in the activations after the layer (a conv, global average,
        Linear), that gradient is a constant: with frozen parameters it has no autograd graph
        and grad-cam's ``autograd.grad`` fails.  The product is then zero — what grad-cam itself
        returns when the parameters require grad (``allow_unused``) — and the weights are the
        mean gradient.
        """

        def get_cam_weights(self, input_tensor, target_layer, target_category, activations, grads):
            if grads is not None and not grads.requires_grad:
                return grads.detach().float().mean(dim=(2, 3)).cpu().numpy()
            return super().get_cam_weights(
                input_tensor, target_layer, target_category, activations, grads
            )

    return _ShapleyCAM(model, list(target_layers))


class _FinerTarget:
    """Finer-CAM's target around a class target: the class's logit against the classes whose
    logits are closest to it, weighted by their probabilities (grad-cam's
    ``FinerWeightedTarget`` with the comparison classes ``FinerCAM`` picks: the 1st to 3rd
    most similar, ``alpha = 1``).  The class itself is ``base.index``, or the predicted class."""

    def __init__(self, base: object, alpha: float = 1.0) -> None:
        self.base = base
        self.alpha = alpha

    @property
    def index(self) -> int | None:
        return self.base.index  # type: ignore[attr-defined]

    def __call__(self, output):
        import torch
        from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

        self.base(output)  # checks the class and resolves the predicted one
        main = self.base.index  # type: ignore[attr-defined]
        logits = output.detach()
        order = torch.argsort((logits - logits[..., main]).abs(), dim=-1, stable=True).tolist()
        comparisons = order[1:4]  # order[0] is the class itself
        if not comparisons:  # one class: nothing to tell it from
            return self.base(output)
        return FinerWeightedTarget(main, comparisons, self.alpha)(output)


def _finer_cam(model: nn.Module, target_layers: Sequence[nn.Module]) -> object:
    from pytorch_grad_cam import GradCAM

    class _FinerCAM(GradCAM):
        """Grad-CAM of Finer-CAM's target (see :class:`_FinerTarget`): the same numbers as
        grad-cam's ``FinerCAM``, whose own call does not take ready-made class targets."""

        def __call__(self, input_tensor, targets=None, aug_smooth=False, eigen_smooth=False):
            targets = [_FinerTarget(t) for t in targets] if targets is not None else None
            return super().__call__(input_tensor, targets, aug_smooth, eigen_smooth)

    return _FinerCAM(model, list(target_layers))


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
        _shapley_cam,
        True,
        input_gradient=True,
        cost="1 forward + 2 backward",
        notes="Gradient and Hessian-vector product (Shapley-value view).",
    ),
    MethodInfo(
        "finercam",
        _finer_cam,
        True,
        notes=(
            "Grad-CAM of the class against its most similar classes: what tells it apart "
            "(fine-grained classes)."
        ),
    ),
    MethodInfo(
        "fem",
        _grad_cam("FEM"),
        False,
        cost="1 forward",
        notes="Channels weighted by how often they exceed mean + 2 std; not class-specific.",
    ),
    MethodInfo(
        "segeigencam",
        _grad_cam("SegEigenCAM"),
        True,
        notes="Principal component of |gradient| × activation, sign-corrected (segmentation).",
    ),
    MethodInfo(
        "randomcam",
        _grad_cam("RandomCAM"),
        True,
        notes="Random channel weights: a baseline to compare other maps with, not evidence.",
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
    "finer-cam": "finercam",
    "seg-eigencam": "segeigencam",
    "seg-eigen-cam": "segeigencam",
    "random-cam": "randomcam",
    "random": "randomcam",
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
