"""The public entry point: explain any (multi-input) model at any layer with any CAM method.

One :class:`Explainer` wraps one model and may be shared by many threads (browser sessions):
every forward/backward on the model runs under the explainer's lock, a grad-cam object lives for
one request, and the model is left exactly as it was — hooks removed, training flags,
``requires_grad``, ``.grad`` and submodules restored — after a success and after an error.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from .adapter import BoundModel, OutputRule, evaluating, model_lock, preserved_state
from .attention import AttentionRecorder, AttentionResult, attention_kind, read_attention
from .branches import LayerScope, branch_maps, pick_branches, trace_scopes
from .contributions import probability_drops
from .engine import WEIGHTINGS, LayerRequest, class_probabilities, resolve_targets, run_layers
from .errors import InputError, LayerError, MethodError, ResourceError, TargetError
from .gradcam_runs import GradCamJob
from .layers import (
    LAYOUTS,
    LayerInfo,
    OutputView,
    Undecided,
    UndecidedLayer,
    analyze_output,
    layout_override,
    parse_layer,
    resolve_module,
)
from .methods import METHODS, MethodInfo, get_method
from .modality import Batch, Modality, prepare_inputs
from .model_checks import check_signature, is_out_of_memory
from .multilayer import average_layers
from .probe import PooledMaps, settle
from .result import CamResult
from .rollout import (
    RolloutResult,
    check_rollout_options,
    record_self_attention,
    rollout_result,
)
from .segmentation import Region, RegionScores
from .shutdown import computing

__all__ = ["Explainer"]

Progress = Callable[[int, int], None]
Target = int | str | None


class Explainer:
    """CAMs of a (multi-input) model, per modality, without editing the model.

    Args:
        model: any ``nn.Module``; moved to ``device``, never edited.
        modalities: the model's inputs, in ``forward`` order (``Modality(arg=...)`` passes one
            by keyword).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...
        output: how to find the logits in the model's output (index, key or callable); default:
            a tensor as is, else a ``logits`` key/attribute, else the first tensor.
        classes: class names, in logit order.
        default_layer: the layer to show first (the UI and CLI use it when none is chosen).
    """

    def __init__(
        self,
        model: nn.Module,
        modalities: Sequence[Modality],
        device: str | torch.device = "auto",
        output: OutputRule = None,
        classes: Sequence[str] | None = None,
        default_layer: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        self.modalities = _check_modalities(modalities)
        check_signature(model, self.modalities)
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.output = output
        self.classes = list(classes) if classes is not None else None
        self.default_layer = default_layer
        self.lock = model_lock(self.model)
        self._trees: dict[tuple, list[LayerInfo]] = {}
        self._scopes: dict[tuple, list[LayerScope]] = {}
        # Which modalities reach a layer, per (layer, input sizes): found once by walking the
        # autograd graph, so later requests need no input gradients.
        self._sources: dict[tuple, set[str] | None] = {}
        self._copy_bytes: dict[tuple, int] = {}  # one perturbed copy's memory, per input sizes

    @property
    def names(self) -> list[str]:
        """The modality names, in forward order."""
        return [m.name for m in self.modalities]

    # -- what is available ------------------------------------------------------------------------

    def methods(self) -> list[str]:
        """Names of the available CAM methods."""
        return list(METHODS)

    @staticmethod
    def method_info(name: str) -> MethodInfo:
        """Metadata of method ``name`` (gradients, cost, notes)."""
        return get_method(name)

    def prepare(self, inputs: Mapping[str, Any] | Batch) -> Batch:
        """Validate and normalize ``inputs`` (see :func:`~cam_core.modality.prepare_inputs`)."""
        if isinstance(inputs, Batch):
            return inputs
        try:
            with torch.inference_mode(False):
                return prepare_inputs(self.modalities, inputs, self.device, self._dtype())
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            reason = _first_line(exc)
        # Raised outside the except block: the failed allocation's frames are freed first.
        gc.collect()
        raise ResourceError(
            f"out of memory on {self.device} while preparing the inputs ({reason}). Use fewer or "
            "smaller images; nothing was computed and the next request can run."
        )

    def _dtype(self) -> torch.dtype:
        """The model's floating dtype (its first floating parameter or buffer), else float32."""
        for tensor in (*self.model.parameters(), *self.model.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    def predict(self, inputs: Mapping[str, Any] | Batch) -> np.ndarray:
        """Class probabilities float32 ``(N, num_classes)``."""
        batch = self.prepare(inputs)
        with self._guarded(), torch.no_grad():
            self.model.eval()
            bound = self._bound(batch, self.modalities[0].name)
            logits = bound(batch.tensors[self.modalities[0].name])
        return class_probabilities(logits)

    def layer_tree(self, inputs: Mapping[str, Any] | Batch | None = None) -> list[LayerInfo]:
        """Every module of the model, one row per call, with whether it can be a CAM target.

        One dry run (no gradients) on ``inputs`` — or, when none are given, on zeros of each
        modality's ``size`` — finds output shapes.  Cached per input size.
        """
        batch = self._example_batch(inputs)
        key = tuple(batch.sizes().items())
        if key not in self._trees:
            self._trees[key] = self._build_tree(batch)
        return self._trees[key]

    # -- explaining -------------------------------------------------------------------------------

    def explain(
        self,
        inputs: Mapping[str, Any] | Batch,
        layer: str | Sequence[str] | None = None,
        method: str = "gradcam",
        target: Target | Sequence[Target] = None,
        *,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        progress: Progress | None = None,
    ) -> CamResult:
        """CAMs of every modality at ``layer`` with ``method``.

        Args:
            inputs: ``{modality: tensor (N, C, H, W) or images}``, or a tuple/list in the
                modalities' order, see :meth:`prepare`.
            layer: dotted module path (``"layer4"``, ``"encoder@1"`` for a module's second
                call; ``"stages.0:nhwc"`` says a 4-D output is channels-last, ``":nchw"``
                channels-first); defaults to ``default_layer``.  Ignored by FullGrad.  A list
                of layers gives one map averaged over them, as grad-cam's ``target_layers``.
            method: one of :meth:`methods`.
            target: class to explain: None = predicted class, an int (or class name), or one
                per sample; for a segmentation model, ``Region(class, mask)``: the class's
                logits summed over the mask's pixels.
            aug_smooth: average over flips and brightness changes, applied to every modality.
            eigen_smooth: first principal component of the weighted activations.
            progress: called as ``progress(done, total)`` after each model run.
        """
        if isinstance(target, Region):
            # A class over a region of a segmentation output: the logits are its region sums.
            scoped = copy.copy(self)
            scoped.output = RegionScores(target, self.output)
            options = {"aug_smooth": aug_smooth, "eigen_smooth": eigen_smooth}
            return scoped.explain(inputs, layer, method, target.category, **options)
        if isinstance(layer, (list, tuple)):
            # grad-cam's target_layers list: one map averaged over the layers.
            batch = self.prepare(inputs)
            options = {"aug_smooth": aug_smooth, "eigen_smooth": eigen_smooth}
            results = [self.explain(batch, one, method, target, **options) for one in layer]
            return average_layers(results)
        info = get_method(method)
        batch = self.prepare(inputs)
        targets = self._check_targets(target, batch.size)
        layer = layer if layer is not None else self.default_layer
        options = {"aug_smooth": bool(aug_smooth), "eigen_smooth": bool(eigen_smooth)}
        module = call = None
        if info.uses_layer:
            if layer is None:
                raise LayerError(
                    f"choose a layer for {info.name!r} (see Explainer.layer_tree()); this model "
                    "has no default layer."
                )
            if info.name in WEIGHTINGS:
                return self._floor(batch, [layer], info, targets, options)[layer]
            module_path, call = parse_layer(layer)
            module = resolve_module(self.model, module_path)
        job = GradCamJob(self, info, batch, module, call, aug_smooth, eigen_smooth, progress)
        job.layout = self._layout(batch, layer) if module is not None else None
        try:
            with self._guarded():
                maps, probabilities, resolved, notices = job.run(targets)
        except UndecidedLayer:
            job.layout = self._settled_layout(batch, layer)
            with self._guarded():
                maps, probabilities, resolved, notices = job.run(targets)
        return self._result(batch, info, layer, maps, probabilities, resolved, notices, options)

    def sweep(
        self,
        inputs: Mapping[str, Any] | Batch,
        layers: Sequence[str],
        method: str = "gradcam",
        target: Target | Sequence[Target] = None,
        *,
        eigen_smooth: bool = False,
    ) -> dict[str, CamResult]:
        """CAMs at many layers, ``{layer: CamResult}``, from one forward and one backward pass.

        Every layer is tapped in one forward; one ``torch.autograd.grad`` of the class scores
        gives all their gradients (no parameter or input gradients) — the same numbers as
        :meth:`explain` (see :mod:`~cam_core.engine`).  Methods that perturb inputs or need
        more than one pass (ScoreCAM, AblationCAM, ShapleyCAM, FullGrad) fall back to one
        :meth:`explain` per layer.
        """
        info = get_method(method)
        batch = self.prepare(inputs)
        layers = list(layers)
        if not layers:
            raise LayerError("sweep() needs at least one layer (see Explainer.layer_tree()).")
        targets = self._check_targets(target, batch.size)
        if info.name not in WEIGHTINGS:
            return {
                layer: self.explain(batch, layer, method, target, eigen_smooth=eigen_smooth)
                for layer in layers
            }
        options = {"aug_smooth": False, "eigen_smooth": bool(eigen_smooth)}
        return self._floor(batch, layers, info, targets, options)

    def attention(self, inputs: Mapping[str, Any] | Batch, layer: str) -> AttentionResult:
        """Raw attention weights ``(N, heads, Lq, Lk)`` of one attention layer (see
        :meth:`attention_layers`): ``nn.MultiheadAttention``, timm ``Attention`` or Hugging Face
        attention.

        The result maps a query position to per-modality key heatmaps
        (:meth:`AttentionResult.key_heatmaps`); which tokens belong to which modality is found
        by perturbing one input at a time (a few extra forward passes, no gradients).  The
        model's outputs are unchanged.
        """
        batch = self.prepare(inputs)
        module_path, call = parse_layer(layer)
        module = resolve_module(self.model, module_path)
        with self._guarded(), torch.no_grad():
            self.model.eval()
            weights, queries, keys = read_attention(module, call or 0, self._run, batch.tensors)
        kind = attention_kind(module) or type(module).__name__
        return AttentionResult(weights, queries, keys, batch.display, layer, kind)

    def attention_layers(self, inputs: Mapping[str, Any] | Batch | None = None) -> list[str]:
        """Paths of the attention layers whose weights :meth:`attention` can read, in the
        layer tree's order (one per call of a shared module, as ``"blocks.0.attn@1"``).

        ``inputs`` as for :meth:`layer_tree` (None: zeros of each modality's size).
        """
        modules = dict(self.model.named_modules())
        return [
            info.path
            for info in self.layer_tree(inputs)
            if info.calls and attention_kind(modules[info.module_path]) is not None
        ]

    def self_attention_layers(self, inputs: Mapping[str, Any] | Batch | None = None) -> list[str]:
        """The :meth:`attention_layers` whose queries and keys are the same tokens: what
        :meth:`rollout` can multiply.  One forward (no gradients) on ``inputs`` (as for
        :meth:`layer_tree`) tells them from cross-attention layers."""
        batch = self._example_batch(inputs)
        paths = self.attention_layers(batch)
        modules, keys = self._attention_modules(paths)
        with self._guarded(), torch.no_grad(), AttentionRecorder(modules) as recorder:
            self.model.eval()
            self._run(batch.tensors)
        selves = {(c.module, c.call) for c in recorder.calls if c.is_self_attention}
        return [path for path, key in zip(paths, keys) if key in selves]

    def _attention_modules(
        self, paths: Sequence[str]
    ) -> tuple[list[nn.Module], list[tuple[int, int]]]:
        """The distinct modules of layer ``paths``, and per path (module index, call)."""
        found = [parse_layer(path) for path in paths]
        names = list(dict.fromkeys(name for name, _ in found))
        modules = [resolve_module(self.model, name) for name in names]
        return modules, [(names.index(name), call or 0) for name, call in found]

    def rollout(
        self,
        inputs: Mapping[str, Any] | Batch,
        layers: Sequence[str] | None = None,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
    ) -> RolloutResult:
        """Attention rollout (Abnar & Zuidema 2020) over self-attention layers, see
        :mod:`cam_core.rollout`.

        Args:
            inputs: as for :meth:`explain`.
            layers: self-attention layers to multiply (always in forward order); None = every
                self-attention layer of :meth:`attention_layers`.
            head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over the heads.
            discard_ratio: share of each layer's lowest fused weights set to 0, in [0, 1).

        Returns:
            A :class:`RolloutResult`: ``.raw`` float32 ``(N, h, w)`` on the patch grid,
            ``.cams[m]`` float32 ``(N, H, W)`` in [0, 1] at each modality's size.
        """
        check_rollout_options(head_fusion, discard_ratio)
        batch = self.prepare(inputs)
        paths = list(layers) if layers is not None else self.attention_layers(batch)
        modules, keys = self._attention_modules(paths)
        with self._guarded(), torch.no_grad():
            self.model.eval()
            wanted = None if layers is None else keys
            calls, owners = record_self_attention(modules, wanted, self._run, batch.tensors)
        label = dict(zip(keys, paths))
        labels = [label[(c.module, c.call)] for c in calls]
        return rollout_result(calls, owners, batch.display, labels, head_fusion, discard_ratio)

    # -- which map to trust (cam_core.faithfulness, cam_core.metrics) --------------------------

    def compare(
        self,
        inputs: Mapping[str, Any] | Batch,
        layers: Sequence[str],
        methods: Sequence[str],
        target: Target | Sequence[Target] = None,
        *,
        progress: Progress | None = None,
    ) -> dict[tuple[str, str], CamResult]:
        """A grid of CAMs, ``{(layer, method): CamResult}``, equal to one :meth:`explain` each.

        Each method runs once for all layers through :meth:`sweep` (one forward and backward
        for a gradient method); a method without a layer (FullGrad) runs once and fills its
        whole column.  ``progress(done, total)`` is called after each method.
        """
        batch = self.prepare(inputs)
        layers, methods = list(dict.fromkeys(layers)), list(dict.fromkeys(methods))
        if not layers or not methods:
            raise InputError("compare() needs at least one layer and one method.")
        grid: dict[tuple[str, str], CamResult] = {}
        for done, method in enumerate(methods, start=1):
            if get_method(method).uses_layer:
                column = self.sweep(batch, layers, method, target)
            else:
                column = dict.fromkeys(layers, self.explain(batch, None, method, target))
            grid.update({(layer, method): column[layer] for layer in layers})
            if progress is not None:
                progress(done, len(methods))
        return grid

    def faithfulness(
        self,
        inputs: Mapping[str, Any] | Batch,
        cams: Mapping[str, np.ndarray] | CamResult,
        target: Target | Sequence[Target] = None,
        metric: str = "deletion",
        steps: int = 20,
        *,
        batch_size: int = 64,
        progress: Progress | None = None,
    ) -> dict[str, np.ndarray]:
        """How faithful each map is to the model: ``{modality: float32 (N,)}``.

        ``cams`` is ``{modality: (N, H, W)}`` (or a :class:`CamResult`, whose explained classes
        are then the default target).  ``metric``: ``"deletion"`` (area under the target
        probability as the most relevant pixels are replaced by the modality's baseline, in
        ``[0, 1]``, lower is better), ``"insertion"`` (higher is better), or grad-cam's
        ``"road"`` / ``"confidence-drop"`` — see :mod:`cam_core.faithfulness`.  No gradients;
        forwards of up to ``batch_size`` images.
        """
        from .faithfulness import evaluate

        if isinstance(cams, CamResult):
            target = cams.targets if target is None else target
            cams = cams.cams
        batch = self.prepare(inputs)
        targets = self._check_targets(target, batch.size)
        with self._guarded(), torch.no_grad():
            self.model.eval()
            first = self.names[0]
            logits = self._bound(batch, first)(batch.tensors[first])
            resolved = resolve_targets(targets, logits)

            def bind(tensors: Mapping[str, torch.Tensor], explained: str) -> BoundModel:
                return self._bound(Batch(dict(tensors), {}), explained)

            return evaluate(
                bind, self.modalities, batch, cams, resolved, metric, steps,
                batch_size=batch_size, progress=progress,
            )  # fmt: skip

    # -- each modality's own evidence (cam_core.branches, cam_core.contributions) -----------------

    def branches(self, inputs: Mapping[str, Any] | Batch | None = None) -> dict[str, str | None]:
        """``{modality: layer path or None}``: per modality, the deepest CAM-ready layer whose
        output depends on that modality alone (see :mod:`cam_core.branches`).

        Found from the autograd graph of one forward on one sample of ``inputs`` (or zeros of
        each modality's ``size``); cached per input size.
        """
        batch = self._example_batch(inputs)
        key = tuple(batch.sizes().items())
        if key not in self._scopes:
            with self._guarded():
                self.model.eval()
                first = self.names[0]
                self._scopes[key] = trace_scopes(self._bound(batch, first), batch.tensors[first])
        ready = {row.path for row in self.layer_tree(batch) if row.ready}
        return pick_branches(self._scopes[key], self.names, ready)

    def explain_branches(
        self,
        inputs: Mapping[str, Any] | Batch,
        method: str = "gradcam",
        target: Target | Sequence[Target] = None,
        *,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        progress: Progress | None = None,
    ) -> CamResult:
        """CAMs with each modality's map taken at its own branch (:meth:`branches`).

        ``cams[m]`` equals ``explain(inputs, branches()[m], method, target).cams[m]``; all
        branch layers come from one :meth:`sweep` (one forward and one backward for gradient
        methods).  With ``aug_smooth``, or a ``progress`` callback for a slow method, each
        branch layer runs its own :meth:`explain` instead.  ``result.layers`` is ``{modality:
        layer}``; a modality without a branch of its own gets an empty map and a notice.
        """
        info = get_method(method)
        if not info.uses_layer:
            raise MethodError(
                f"{info.name} ignores layers, so it has no per-branch maps; choose a layer "
                "method such as gradcam for explain_branches()."
            )
        batch = self.prepare(inputs)
        branches = self.branches(batch)
        layers = list(dict.fromkeys(layer for layer in branches.values() if layer))
        if not layers:
            raise LayerError(
                "no CAM-ready layer of this model sees a single modality (every layer mixes "
                "them); choose a layer with explain() instead."
            )
        if aug_smooth or (progress is not None and info.slow):
            results = {
                layer: self.explain(
                    batch, layer, method, target, aug_smooth=aug_smooth,
                    eigen_smooth=eigen_smooth, progress=_part(progress, index, len(layers)),
                )
                for index, layer in enumerate(layers)
            }  # fmt: skip
        else:
            results = self.sweep(batch, layers, method, target, eigen_smooth=eigen_smooth)
        first = results[layers[0]]
        notices = [
            f"{name}: no CAM-ready layer sees {name} alone, so it has no branch of its own "
            "(shown empty)."
            for name, layer in branches.items()
            if layer is None
        ]
        options = {"aug_smooth": bool(aug_smooth), "eigen_smooth": bool(eigen_smooth)}
        maps = branch_maps(results, branches, self.names)
        result = self._result(
            batch, info, None, maps, first.probabilities, first.targets, notices, options
        )
        result.layers = {name: layer for name, layer in branches.items() if layer}
        return result

    def contributions(
        self, inputs: Mapping[str, Any] | Batch, target: Target | Sequence[Target] = None
    ) -> dict[str, np.ndarray]:
        """``{modality: float32 (N,)}``: drop of the target class's probability when that
        modality alone is replaced by its baseline (``Modality.baseline``; default the mean
        input).  One batched forward per modality (and one on the inputs), no gradients; see
        :mod:`cam_core.contributions`.
        """
        batch = self.prepare(inputs)
        targets = self._check_targets(target, batch.size)
        first = self.names[0]

        def logits_of(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
            return self._bound(Batch(dict(tensors), batch.display), first)(tensors[first])

        with self._guarded(), torch.no_grad():
            self.model.eval()
            logits = logits_of(batch.tensors)
            used = resolve_targets(targets, logits)
            return probability_drops(
                lambda tensors: class_probabilities(logits_of(tensors)),
                batch.tensors,
                self.modalities,
                class_probabilities(logits),
                used,
            )

    # -- internals --------------------------------------------------------------------------------

    @contextmanager
    def _guarded(self, state: bool = True) -> Iterator[None]:
        """Lock, autograd on, model state restored, out-of-memory turned into ResourceError.

        ``state=False``: only the training flags are restored (the floor-cost engine changes
        nothing else); grad-cam's classes need the full :func:`preserved_state`.
        """
        out_of_memory = None
        with self.lock, computing():
            try:
                with (
                    preserved_state(self.model) if state else evaluating(self.model),
                    torch.inference_mode(False),
                    torch.enable_grad(),
                ):
                    yield
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc):
                    raise
                out_of_memory = _first_line(exc)
                exc.with_traceback(None)  # its frames hold the failed request's tensors
            finally:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        if out_of_memory is not None:
            # Raised outside the except block so the failed computation's frames (and tensors)
            # are freed before the user sees the error.
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise ResourceError(
                f"out of memory on {self.device} while computing ({out_of_memory}). Use fewer "
                "or smaller images, a gradient method instead of ScoreCAM/AblationCAM, or the "
                "CPU; the model is unchanged and the next request can run."
            ) from None

    def _run(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The model's logits on ``{modality: tensor}`` (the caller holds the lock)."""
        first = self.names[0]
        return BoundModel(self.model, self.modalities, tensors, first, self.output, self.device)(
            tensors[first]
        )

    def _floor(
        self,
        batch: Batch,
        layers: Sequence[str],
        info: MethodInfo,
        targets: list[int | None],
        options: dict[str, object],
    ) -> dict[str, CamResult]:
        """Every layer's CAMs from the floor-cost engine: one forward, one ``autograd.grad``."""
        requests = {}
        for layer in layers:
            module_path, call = parse_layer(layer)
            module = resolve_module(self.model, module_path)
            layout = self._layout(batch, layer)
            requests[layer] = LayerRequest(layer, module_path, module, call, layout)
        sizes = tuple(batch.sizes().items())
        cached = [label for label in requests if (label, sizes) in self._sources]
        known = {label: self._sources[label, sizes] for label in cached}
        while True:
            try:
                with self._guarded(state=False):
                    runs, probabilities, used = run_layers(
                        self._bound(batch, self.names[0]),
                        batch.tensors,
                        list(requests.values()),
                        WEIGHTINGS[info.name],
                        targets,
                        eigen_smooth=bool(options["eigen_smooth"]),
                        aug_smooth=bool(options["aug_smooth"]),
                        known_sources=known,
                    )
                break
            except UndecidedLayer as exc:
                # Channels-first or -last? The layer tree's dry runs at other sizes settle it.
                label = getattr(exc, "layer", None)
                if label not in requests or requests[label].layout is not None:
                    raise
                layout = self._settled_layout(batch, label)
                requests[label] = dataclasses.replace(requests[label], layout=layout)
        results = {}
        for layer, run in runs.items():
            self._sources[layer, sizes] = run.sources
            results[layer] = self._result(
                batch, info, layer, run.maps, probabilities, list(used), run.notices, options
            )
        return results

    def _bound(self, batch: Batch, explained: str) -> BoundModel:
        return BoundModel(
            self.model, self.modalities, batch.tensors, explained, self.output, self.device
        )

    def _layout(self, batch: Batch, layer: str) -> str | None:
        """The 4-D layout of ``layer`` when known: the user's suffix (``"stages.0:nhwc"``),
        else what the layer tree at these input sizes settled; None to read it from the output."""
        override = layout_override(layer)
        if override is not None:
            return override
        module_path, call = parse_layer(layer)
        for row in self._trees.get(tuple(batch.sizes().items()), []):
            if row.module_path == module_path and row.call == (call or 0):
                return row.layout if row.layout in LAYOUTS else None
        return None

    def _settled_layout(self, batch: Batch, layer: str) -> str:
        """The layout of a layer whose output alone does not tell it, from the layer tree's dry
        runs at other input sizes; a LayerError with the fix when they cannot tell either."""
        module_path, call = parse_layer(layer)
        for row in self.layer_tree(batch):
            if row.module_path == module_path and row.call == (call or 0):
                if row.ready and row.layout in LAYOUTS:
                    return row.layout
                raise LayerError(f"layer {layer!r} cannot be a CAM target: {row.reason}.")
        raise LayerError(f"layer {layer!r} was not called during the dry run of the layer tree.")

    def _example_batch(self, inputs: Mapping[str, Any] | Batch | None) -> Batch:
        if inputs is not None:
            return self.prepare(inputs).select(0)
        missing = [m.name for m in self.modalities if m.size is None]
        if missing:
            raise InputError(
                f"layer_tree() needs example inputs, or a size on every modality (none on "
                f"{', '.join(missing)}).",
                modality=missing[0],
            )
        tensors = {
            m.name: torch.zeros(1, m.channels, *m.size, device=self.device) for m in self.modalities
        }
        display = {m.name: np.zeros((1, *m.size, 3), np.uint8) for m in self.modalities}
        return Batch(tensors, display)

    def _build_tree(self, batch: Batch) -> list[LayerInfo]:
        sizes = batch.sizes()
        seen: dict[str, list[tuple[tuple[int, ...] | None, OutputView | str]]] = {}

        pooled = PooledMaps()

        def recorder(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                view = pooled.check(
                    module, args, output, analyze_output(output, 1, sizes, module=module)
                )
                tensor = view.pick(output) if isinstance(view, OutputView) else None
                shape = tuple(tensor.shape) if tensor is not None else _shape_of(output)
                seen.setdefault(name, []).append((shape, view))

            return hook

        modules = [(name, m) for name, m in self.model.named_modules() if name]
        handles = [m.register_forward_hook(recorder(name)) for name, m in modules]
        first = self.modalities[0].name

        def run(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
            return self._bound(Batch(dict(tensors), {}), first)(tensors[first])

        try:
            with self._guarded(), torch.no_grad():
                self.model.eval()
                run(batch.tensors)
        finally:
            for handle in handles:
                handle.remove()
        undecided = {
            (name, index): view
            for name, calls in seen.items()
            for index, (_, view) in enumerate(calls)
            if isinstance(view, Undecided)
        }
        if undecided:
            # Channels-first or -last? Pooled or too small? A dry run at other sizes tells.
            with self._guarded(), torch.no_grad():
                self.model.eval()
                found = settle(undecided, dict(modules), run, batch.tensors)
            for (name, index), view in found.items():
                seen[name][index] = (seen[name][index][0], view)
        rows = []
        for name, module in modules:
            params = sum(p.numel() for p in module.parameters())
            depth = name.count(".") + 1
            calls = seen.get(name, [])
            if not calls:
                rows.append(
                    LayerInfo(
                        name, name, 0, 0, type(module).__name__, params, None, False,
                        "not called during the forward pass", depth,
                    )
                )  # fmt: skip
                continue
            for index, (shape, view) in enumerate(calls):
                path = f"{name}@{index}" if len(calls) > 1 else name
                ready = isinstance(view, OutputView)
                reason = view.describe(shape) if ready else view
                if len(calls) > 1:
                    reason = f"call {index + 1} of {len(calls)}: {reason}"
                rows.append(
                    LayerInfo(
                        path, name, index, len(calls), type(module).__name__, params, shape,
                        ready, reason, depth, view.layout if ready else None,
                    )
                )  # fmt: skip
        return rows

    def _check_targets(self, target: Target | Sequence[Target], n: int) -> list[int | None]:
        if target is None or isinstance(target, (int, str, np.integer)):
            targets = [target] * n
        elif isinstance(target, (list, tuple, np.ndarray)):
            targets = list(target)
            if len(targets) != n:
                raise TargetError(
                    f"target has {len(targets)} entries but there are {n} samples; give one per "
                    "sample, one int for all, or None for the predicted class."
                )
        else:
            raise TargetError(
                f"target must be None, a class index, a class name or a list of those, got "
                f"{type(target).__name__}."
            )
        return [self._class_index(t) for t in targets]

    def _class_index(self, target: Target) -> int | None:
        if target is None:
            return None
        if isinstance(target, str):
            if self.classes and target in self.classes:
                return self.classes.index(target)
            known = f"; classes are {', '.join(self.classes)}" if self.classes else ""
            raise TargetError(f"unknown class name {target!r}{known}.")
        if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
            raise TargetError(f"a target class must be an int, got {target!r}.")
        if target < 0:
            raise TargetError(f"target class must be >= 0, got {target}.")
        return int(target)

    def _result(
        self,
        batch: Batch,
        info: MethodInfo,
        layer: str | None,
        maps: tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]],
        probabilities: np.ndarray,
        targets: list[int],
        notices: list[str],
        options: dict[str, object],
    ) -> CamResult:
        cams, raw, nan = maps
        notices = list(batch.notes) + notices
        empty = {}
        for name, cam in cams.items():
            flat = cam.reshape(cam.shape[0], -1)
            empty[name] = ~(flat.max(axis=1) > 1e-6) | nan[name]
            for i in np.flatnonzero(empty[name]):
                sample = f" (sample {i + 1})" if batch.size > 1 else ""
                notices.append(
                    f"{name}{sample}: the CAM carries no signal (all zero, constant or NaN) — "
                    "the layer may be dead or the gradient zero for this class."
                )
        for modality in self.modalities:
            if not modality.aligned:
                notices.append(
                    f"{modality.name} is not spatially aligned with the scene: its heatmap shows "
                    "where in that input (e.g. which frequencies) the model looked, not a place "
                    "in the image."
                )
        if not info.uses_layer:
            notices.append(info.notes)
        layers = dict.fromkeys(cams, layer) if layer is not None and info.uses_layer else {}
        return CamResult(
            cams=cams,
            raw=raw,
            display=batch.display,
            originals=batch.originals,
            probabilities=probabilities,
            targets=targets,
            layer=layer if info.uses_layer else None,
            method=info.name,
            modalities=self.modalities,
            classes=self.classes,
            empty=empty,
            notices=notices,
            options=options,
            layers=layers,
        )


def _part(progress: Progress | None, index: int, parts: int) -> Progress | None:
    """``progress`` of part ``index`` of ``parts`` equal parts, reported on the whole."""
    if progress is None:
        return None
    return lambda done, total: progress(index * total + done, parts * total)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _shape_of(output: Any) -> tuple[int, ...] | None:
    return tuple(output.shape) if isinstance(output, torch.Tensor) else None


def _check_modalities(modalities: Sequence[Modality]) -> tuple[Modality, ...]:
    if isinstance(modalities, Modality):
        modalities = [modalities]
    modalities = tuple(modalities)
    if not modalities:
        raise InputError("give at least one Modality (the model's inputs, in forward order).")
    for m in modalities:
        if not isinstance(m, Modality):
            raise InputError(f"modalities must be Modality objects, got {type(m).__name__}.")
    names = [m.name for m in modalities]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"modality names must be unique; repeated: {', '.join(duplicates)}.")
    args = [m.arg for m in modalities if m.arg]
    if len(set(args)) != len(args):
        raise InputError("two modalities pass the same keyword argument (Modality.arg).")
    return modalities


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as torch understands it."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda:0'.") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but CUDA is not available here.")
    return resolved
