"""The floor-cost CAM engine: one forward, one ``torch.autograd.grad`` to the tapped layers.

A gradient CAM needs the layer's activations ``A (N, C, h, w)`` and the class score's gradient
``G = d score / d A``, nothing else: no parameter gradients, no input gradients, no graph below
the layer.  This engine taps every requested layer in one forward pass, asks autograd for the
gradients of those outputs only, and turns them into maps with a small weighting function per
method (torch-cam's ``_get_weights(activations, gradients)``) — all in torch on the model's
device; :mod:`~cam_core.maps` finishes them and only the final ``(N, H, W)`` maps cross to the
CPU.  The numbers are grad-cam's (its classes are the reference in the tests); the principal-
component methods call grad-cam's own numpy projection, after the same single pass.

Methods that perturb inputs or differentiate more than once (ScoreCAM, AblationCAM, ShapleyCAM,
FullGrad) run through grad-cam's classes (:mod:`~cam_core.gradcam_runs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .adapter import BoundModel, input_sources
from .branches import fused_notice
from .errors import CamError, LayerError, TargetError
from .layers import OutputView, Undecided, UndecidedLayer, analyze_output
from .maps import LayerMaps, augmentations, native, per_modality

__all__ = [
    "LayerRequest",
    "LayerRun",
    "WEIGHTINGS",
    "Weighting",
    "check_calls",
    "class_probabilities",
    "first_call_notice",
    "missing_notice",
    "resolve_targets",
    "run_layers",
    "scope_notice",
]

Weights = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


# -- weighting: (activations (N, C, h, w), gradients) → weights broadcastable to activations -----


def _mean_gradient(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
    """Grad-CAM: each channel weighted by its mean gradient, ``(N, C, 1, 1)``."""
    return gradients.mean(dim=(2, 3), keepdim=True)


def _second_order(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
    """Grad-CAM++ (eq. 19 of arXiv:1710.11063, as grad-cam computes it), ``(N, C, 1, 1)``."""
    g2 = gradients.pow(2)
    g3 = g2 * gradients
    sums = activations.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sums * g3 + 1e-6)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    return (torch.relu(gradients) * alpha).sum(dim=(2, 3), keepdim=True)


def _activation_scaled(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
    """XGrad-CAM: gradients weighted by the normalized activations, ``(N, C, 1, 1)``."""
    sums = activations.sum(dim=(2, 3), keepdim=True)
    return (gradients * activations / (sums + 1e-7)).sum(dim=(2, 3), keepdim=True)


def _positive_gradient(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
    """LayerCAM: the positive gradient at every position, ``(N, C, h, w)``."""
    return torch.relu(gradients)


def _gradient(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
    """HiResCAM (and EigenGradCAM's input): the gradient at every position."""
    return gradients


def _positive_product(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
    """Grad-CAM element-wise: the gradient where gradient × activation is positive, so that
    ``weights * activations`` is ``relu(gradient * activation)``."""
    return gradients * (gradients * activations > 0)


def _unweighted(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
    """EigenCAM / KPCA-CAM: the activations themselves."""
    return torch.ones((), dtype=activations.dtype, device=activations.device)


def _principal_component(weighted: np.ndarray) -> np.ndarray:
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    return get_2d_projection(weighted)


def _kernel_principal_component(weighted: np.ndarray) -> np.ndarray:
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    return get_2d_projection_kernel(weighted, "sigmoid", None)  # KPCA_CAM's defaults


@dataclass(frozen=True)
class Weighting:
    """How one method turns activations and gradients into a map.

    ``weights(activations, gradients)`` gives weights broadcastable to the activations; the map
    is their product summed over channels, or — for ``projection`` methods, and for any method
    with ``eigen_smooth`` — grad-cam's principal-component projection of the product.
    """

    weights: Weights
    gradients: bool = True
    projection: Callable[[np.ndarray], np.ndarray] | None = None


WEIGHTINGS: dict[str, Weighting] = {
    "gradcam": Weighting(_mean_gradient),
    "gradcam++": Weighting(_second_order),
    "xgradcam": Weighting(_activation_scaled),
    "layercam": Weighting(_positive_gradient),
    "hirescam": Weighting(_gradient),
    "gradcam-elementwise": Weighting(_positive_product),
    "eigengradcam": Weighting(_gradient, projection=_principal_component),
    "eigencam": Weighting(_unweighted, gradients=False, projection=_principal_component),
    "kpca-cam": Weighting(_unweighted, gradients=False, projection=_kernel_principal_component),
}


def raw_map(
    weighting: Weighting,
    activations: torch.Tensor,
    gradients: torch.Tensor | None,
    eigen_smooth: bool = False,
) -> torch.Tensor:
    """The un-normalized map float32 ``(N, h, w)`` of ``(N, C, h, w)`` activations."""
    activations = activations.detach().float()
    gradients = None if gradients is None else gradients.float()
    weights = weighting.weights(activations, gradients)
    project = weighting.projection or (_principal_component if eigen_smooth else None)
    if project is None:
        if weights.shape[-2:] == (1, 1):  # channel weights: no (N, C, h, w) temporary
            return torch.einsum("nc,nchw->nhw", weights[:, :, 0, 0], activations)
        return torch.einsum("nchw,nchw->nhw", weights, activations)
    projected = project((weights * activations).cpu().numpy())
    return torch.from_numpy(np.asarray(projected, np.float32)).to(activations.device)


# -- one pass over the model ----------------------------------------------------------------------


@dataclass(frozen=True)
class LayerRequest:
    """One layer to explain: ``label`` as the user wrote it (``"encoder@1"``), the module's
    dotted ``path``, the module, the call (None = the first, with a notice when there are
    more), and the 4-D ``layout`` when the user or a dry run settled it."""

    label: str
    path: str
    module: nn.Module
    call: int | None
    layout: str | None = None


@dataclass
class LayerRun:
    """What :func:`run_layers` produced for one layer.

    ``maps``: ``(cams, raw, NaN flags)`` per modality (see :func:`~cam_core.maps.per_modality`);
    ``sources``: the modalities whose input reaches the layer (None: unknown).
    """

    maps: LayerMaps
    notices: list[str]
    sources: set[str] | None


@dataclass
class _Tap:
    """Forward hook on one module: keeps call ``call``'s tensor, as the graph's leaf when the
    model is frozen (so the score's graph is recorded from the layer on)."""

    request: LayerRequest
    sizes: dict[str, tuple[int, int]]
    bound: BoundModel
    leaf: bool
    walk: bool
    calls: int = 0
    view: OutputView | None = None
    tensor: torch.Tensor | None = None
    sources: set[str] | None = None

    def __call__(self, module: nn.Module, _args: Any, output: Any) -> Any:
        index = self.calls
        self.calls += 1
        request = self.request
        if index != (request.call or 0):
            return None
        view = analyze_output(output, self.bound.batch, self.sizes, request.layout, module)
        if isinstance(view, Undecided):
            error = UndecidedLayer(f"layer {request.label!r} cannot be a CAM target: {view}.", view)
            error.layer = request.label  # which request the caller must settle
            raise error
        if isinstance(view, str):
            raise LayerError(f"layer {request.label!r} cannot be a CAM target: {view}.")
        self.view = view
        tensor = view.pick(output)
        if self.walk:
            self.sources = input_sources(tensor, self.bound.leaves)
        if self.leaf and not tensor.requires_grad:
            tensor = tensor.detach().requires_grad_(True)
        self.tensor = tensor
        if view.layout in ("nchw", "nhwc"):
            # The model goes on with a copy: an in-place op after the layer (`out += x`, an
            # in-place ReLU) must not change the activation the map is computed from.
            return view.put(output, tensor.clone())
        return view.put(output, tensor) if tensor is not view.pick(output) else None

    def check(self) -> None:
        """LayerError when the chosen call never ran."""
        check_calls(self.request.path, self.request.call, self.calls)


def check_calls(path: str, call: int | None, calls: int) -> None:
    """LayerError when module ``path`` ran no time, or fewer than ``call + 1`` times."""
    if calls == 0:
        raise LayerError(
            f"layer {path!r} was not called during the forward pass; choose a layer the model "
            "runs (see Explainer.layer_tree())."
        )
    if call is not None and call >= calls:
        raise LayerError(
            f"layer {path!r} runs {calls} time(s) per forward; there is no call {call} (calls "
            "are numbered from 0)."
        )


def _forward(
    bound: BoundModel,
    tensors: Mapping[str, torch.Tensor],
    requests: Sequence[LayerRequest],
    gradients: bool,
    walk: set[str],
) -> tuple[torch.Tensor, list[_Tap]]:
    """One forward with every requested layer tapped; inputs require grad only for a walk."""
    sizes = {name: tuple(t.shape[-2:]) for name, t in tensors.items()}
    bound.tensors = dict(tensors)
    bound.track_inputs = bool(walk)
    taps = [_Tap(r, sizes, bound, gradients, r.label in walk) for r in requests]
    handles = [r.module.register_forward_hook(tap) for r, tap in zip(requests, taps)]
    try:
        with torch.set_grad_enabled(gradients or bool(walk)):
            logits = bound(tensors[bound.explained])
    finally:
        for handle in handles:
            handle.remove()
    for tap in taps:
        tap.check()
    return logits, taps


def _gradients(
    logits: torch.Tensor, classes: list[int], taps: Sequence[_Tap]
) -> list[torch.Tensor | None]:
    """``d sum_i logits[i, classes[i]] / d tap.tensor`` for every tap, nothing else."""
    index = torch.tensor(classes, device=logits.device)[:, None]
    score = logits.gather(1, index).sum()
    wanted = [tap.tensor for tap in taps if tap.tensor is not None and tap.tensor.requires_grad]
    found = dict.fromkeys(range(len(taps)))
    if score.requires_grad and wanted:
        grads = iter(torch.autograd.grad(score, wanted, allow_unused=True))
        for i, tap in enumerate(taps):
            if tap.tensor is not None and tap.tensor.requires_grad:
                found[i] = next(grads)
    for tap, grad in zip(taps, found.values()):
        if grad is None:
            raise LayerError(
                f"the class score does not depend on layer {tap.request.label!r} (no gradient "
                "reached it); choose a layer on the path from the inputs to the output."
            )
    return list(found.values())


def _layer_maps(
    tap: _Tap,
    gradient: torch.Tensor | None,
    weighting: Weighting,
    names: Sequence[str],
    eigen_smooth: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """``(native maps, raw maps, modalities without tokens)`` of one tapped layer.

    A token layer that concatenates several modalities gives each modality the map of its own
    tokens (from the same pass); any other layer gives one map, shared by every modality.
    """
    view = tap.view
    segments = {name: view.segment_for(name) for name in names} if view.split else {names[0]: 0}
    natives, raws, by_segment = {}, {}, {}
    for name, segment in segments.items():
        if segment is None:
            continue
        if segment not in by_segment:
            activations = view.to_map(tap.tensor, segment)
            grad = None if gradient is None else view.to_map(gradient, segment)
            raw = raw_map(weighting, activations, grad, eigen_smooth)
            by_segment[segment] = (native(raw), raw)
        natives[name], raws[name] = by_segment[segment]
    missing = [name for name, segment in segments.items() if segment is None]
    return natives, raws, missing


def run_layers(
    bound: BoundModel,
    tensors: Mapping[str, torch.Tensor],
    requests: Sequence[LayerRequest],
    weighting: Weighting,
    targets: Sequence[int | None],
    *,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    known_sources: Mapping[str, set[str] | None] | None = None,
) -> tuple[dict[str, LayerRun], np.ndarray, list[int]]:
    """CAMs of every requested layer from one forward and one ``autograd.grad`` (per
    augmentation with ``aug_smooth``).

    Args:
        bound: the model as a function of its explained modality (any; all are passed).
        tensors: ``{modality: (N, C, H, W)}`` on the model's device.
        requests: the layers.
        weighting: the method (:data:`WEIGHTINGS`).
        targets: class per sample, None = predicted.
        known_sources: layers whose input modalities are known already (cached by the caller):
            no graph walk, so the inputs need not require grad.

    Returns:
        ``({label: LayerRun}, probabilities float32 (N, classes), classes explained)``.
    """
    names = list(tensors)
    known = known_sources or {}
    walk = {r.label for r in requests if r.label not in known}
    sizes = {name: tuple(t.shape[-2:]) for name, t in tensors.items()}
    n = next(iter(tensors.values())).shape[0]
    passes = augmentations() if aug_smooth else augmentations()[:1]
    collected: dict[str, tuple[dict[str, list], dict[str, list], list[str]]] = {}
    taps: list[_Tap] = []
    probabilities, classes = None, None
    for augment, undo in passes:
        augmented = tensors if len(passes) == 1 else {k: augment(v) for k, v in tensors.items()}
        logits, pass_taps = _forward(bound, augmented, requests, weighting.gradients, walk)
        if classes is None:  # the identity comes first: the prediction is the unaugmented one
            taps = pass_taps
            classes = resolve_targets(list(targets), logits)
            probabilities = class_probabilities(logits)
        walk = set()
        grads = _gradients(logits, classes, pass_taps) if weighting.gradients else None
        for i, tap in enumerate(pass_taps):
            natives, raws, missing = _layer_maps(
                tap, None if grads is None else grads[i], weighting, names, eigen_smooth
            )
            lists = collected.setdefault(tap.request.label, ({}, {}, missing))
            for name in natives:
                lists[0].setdefault(name, []).append(undo(natives[name]))
                lists[1].setdefault(name, []).append(undo(raws[name]))
        del logits, pass_taps, grads
    runs = {}
    for tap in taps:
        label = tap.request.label
        native_lists, raw_lists, missing = collected[label]
        natives = {name: _mean(maps) for name, maps in native_lists.items()}
        raws = {name: _mean(maps) for name, maps in raw_lists.items()}
        sources = known.get(label, tap.sources)
        notices = []
        if tap.request.call is None and tap.calls > 1:
            notices.append(first_call_notice(tap.request.path, tap.calls))
        notices += scope_notice(label, sources, tap.view, names)
        notices += [missing_notice(name) for name in missing]
        maps = per_modality(natives, raws, sizes, missing, n)
        runs[label] = LayerRun(maps, notices, sources)
    return runs, probabilities, classes


def _mean(maps: list[torch.Tensor]) -> torch.Tensor:
    """The mean of the augmentations' maps (the one map itself without augmentation)."""
    return maps[0] if len(maps) == 1 else torch.stack(maps).mean(dim=0)


# -- targets, probabilities and notices shared with grad-cam's runs -------------------------------


def resolve_targets(targets: list[int | None], logits: torch.Tensor) -> list[int]:
    """Predicted class where the target is None; every index checked against the classes."""
    predicted = logits.detach().argmax(dim=-1).tolist()
    count = logits.shape[-1]
    resolved = [p if t is None else t for t, p in zip(targets, predicted)]
    for t in resolved:
        if t >= count:
            raise TargetError(
                f"target class {t} is out of range: the model has {count} classes (0..{count - 1})."
            )
    return resolved


def class_probabilities(logits: torch.Tensor | None) -> np.ndarray:
    """float32 ``(N, classes)``: softmax, or sigmoid of a single logit."""
    if logits is None:
        raise CamError("the model produced no output.")
    logits = logits.detach().float().cpu()
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits).numpy()
    return torch.softmax(logits, dim=-1).numpy()


def scope_notice(
    label: str, sources: set[str] | None, view: OutputView | None, names: Sequence[str]
) -> list[str]:
    """Notices when one map is drawn on inputs it is not the evidence of: the layer mixes
    several modalities (a fused layer), or sees only some (a branch) and is drawn on the others
    for comparison."""
    if not sources or (view is not None and view.split):
        return []
    mixed = [n for n in names if n in sources]
    notices = [fused_notice(label, mixed)] if len(mixed) > 1 else []
    others = [n for n in names if n not in sources]
    if others:
        notices.append(
            f"{label} sees only {', '.join(mixed)}: on {', '.join(others)} the same map is drawn "
            "for comparison, not as evidence found in those inputs."
        )
    return notices


def first_call_notice(name: str, calls: int) -> str:
    return (
        f"{name} runs {calls} times per forward; its first call was used — choose "
        f"{name}@1 … {name}@{calls - 1} for the others."
    )


def missing_notice(name: str) -> str:
    return (
        f"{name}: the layer's tokens hold no {name} tokens, so there is no CAM for it here "
        "(shown empty)."
    )
