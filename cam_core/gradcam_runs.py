"""One explain request through grad-cam's own classes, for the methods the engine does not run.

ScoreCAM and AblationCAM perturb the input (or the layer) channel by channel, ShapleyCAM needs a
second derivative and FullGrad every bias gradient: they run through grad-cam's classes, via
:class:`~cam_core.adapter.BoundModel` and its tap.  :class:`GradCamJob` plans those runs
(per sample and per modality where the method needs it) and finishes the maps the same way as
the floor-cost engine (:mod:`~cam_core.maps`).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .adapter import BoundModel, Tap
from .engine import (
    check_calls,
    class_probabilities,
    first_call_notice,
    missing_notice,
    resolve_targets,
    scope_notice,
)
from .errors import LayerError, MethodError, TargetError
from .maps import LayerMaps, augmentations, native, per_modality
from .methods import MethodInfo
from .modality import Batch
from .model_checks import is_out_of_memory

if TYPE_CHECKING:
    from .explainer import Explainer

__all__ = ["ClassTarget", "GradCamJob", "free_memory", "release"]

Progress = Callable[[int, int], None]

# Masked/ablated copies per model call: at most this many (CPU gains nothing from more), and at
# most what half the free memory holds.
MAX_COPIES = {"cpu": 32, "cuda": 256}


class _NoGradient(Exception):
    """No gradient reached the layer in this run (it is not between input and score)."""


class ClassTarget:
    """grad-cam target: the logit of one class, checked against the number of classes.

    ``index=None`` explains the predicted class (argmax), resolved on first use.
    """

    def __init__(self, index: int | None) -> None:
        self.index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        classes = output.shape[-1]
        if self.index is None:
            self.index = int(output.detach().argmax(dim=-1).flatten()[0])
        if self.index >= classes:
            raise TargetError(
                f"target class {self.index} is out of range: the model has {classes} classes "
                f"(0..{classes - 1})."
            )
        return output[..., self.index]


class GradCamJob:
    """One explain request run by grad-cam's classes: plans the runs, assembles the CAMs."""

    layout: str | None = None  # the layer's 4-D layout, when the user or a dry run settled it

    def __init__(
        self,
        explainer: Explainer,
        info: MethodInfo,
        batch: Batch,
        module: nn.Module | None,
        call: int | None,
        aug_smooth: bool,
        eigen_smooth: bool,
        progress: Progress | None,
    ) -> None:
        self.explainer = explainer
        self.info = info
        self.batch = batch
        self.module = module
        self.call = call
        self.aug_smooth = bool(aug_smooth)
        self.eigen_smooth = bool(eigen_smooth)
        self.progress = progress
        self.names = [m.name for m in explainer.modalities]
        self.copies = 1  # perturbed copies per model call (ScoreCAM, AblationCAM)
        self.halved = 0  # the copies per call that first ran out of memory (0: none did)

    def run(self, targets: list[int | None]) -> tuple[LayerMaps, np.ndarray, list[int], list[str]]:
        """Compute everything; called under the explainer's guard.

        Returns ``((cams, raw, NaN flags), probabilities, targets, notices)``.
        """
        explainer, info, batch = self.explainer, self.info, self.batch
        explainer.model.eval()
        probabilities = None
        if self.aug_smooth and None in targets:
            # Augmented runs must not pick their own class: fix the predicted one beforehand.
            with torch.no_grad():
                first = self.names[0]
                logits = explainer._bound(batch, first)(batch.tensors[first])
            probabilities = class_probabilities(logits)
            targets = resolve_targets(targets, logits)
        samples = list(range(batch.size)) if info.per_sample else [None]
        plan = self.names if info.input_dependent else self.names[:1]
        if info.per_sample:
            self.copies = self._copies_that_fit(batch.select(0))
        native_maps: dict[str, list[np.ndarray]] = {}
        raw: dict[str, list[np.ndarray]] = {}
        missing: list[str] = []
        notices: list[str] = []
        done = 0
        index = 0
        while index < len(plan):
            name = plan[index]
            cams, raws, record, logits = [], [], None, []
            used_targets = []
            for sample in samples:
                part = batch if sample is None else batch.select(sample)
                part_targets = targets if sample is None else [targets[sample]]
                cam, raw_map, record, bound, used = self._run_engine(part, name, part_targets)
                cams.append(cam)
                raws.append(raw_map)
                logits.append(bound.first_logits)
                used_targets += used
                done += 1
                if self.progress is not None:
                    self.progress(done, len(samples) * len(plan))
            if index == 0:
                targets = used_targets
                if probabilities is None:
                    probabilities = class_probabilities(torch.cat(logits))
            if record is not None and record.missing_segment:
                missing.append(name)
            else:
                native_maps[name], raw[name] = cams, raws
            view = record.view if record is not None else None
            if index == 0 and record is not None:
                if self.call is None and record.calls > 1:
                    notices.append(first_call_notice(self.module_name(), record.calls))
                if not info.input_dependent:
                    notices += scope_notice(self.label(), record.sources, view, self.names)
            if index == 0 and view is not None and view.split and not info.input_dependent:
                # Tokens of several modalities: each modality's CAM from its own tokens.
                others = self.names[1:] if name == self.names[0] else []
                plan = [name] + [n for n in others if view.segment_for(n) is not None]
                missing += [n for n in others if view.segment_for(n) is None]
            index += 1
        notices += [missing_notice(name) for name in missing]
        if self.halved:
            notices.append(
                f"{info.name} ran out of memory with {self.halved} copies per model call; it "
                f"continued with {self.copies} (slower, the same maps)."
            )
        natives = {k: torch.from_numpy(np.concatenate(v)) for k, v in native_maps.items()}
        raws_t = {k: torch.from_numpy(np.concatenate(v)) for k, v in raw.items()}
        maps = per_modality(natives, raws_t, batch.sizes(), missing, batch.size)
        return maps, probabilities, targets, notices

    def _run_engine(self, batch: Batch, explained: str, targets: list[int | None]):
        """One grad-cam run explaining ``explained``.

        Returns the map at the layer's resolution (scaled; the input's for layer-free methods),
        the raw map, the routing record, the bound model and the class used per sample.
        """
        order = [explained]
        if self.info.input_gradient and not self.info.input_dependent:
            # ShapleyCAM differentiates w.r.t. the input only: its hooks fire only when the
            # layer lies between that input and the score, so try each modality in turn.
            order += [n for n in self.names if n != explained]
        for through in order:
            try:
                return self._run_halving(batch, through, explained, targets)
            except _NoGradient:
                continue
        raise LayerError(
            f"the class score does not depend on layer {self.module_name()!r} (no gradient "
            "reached it); choose a layer on the path from the inputs to the output."
        )

    def _run_halving(self, batch: Batch, through: str, explained: str, targets: list[int | None]):
        """:meth:`_run_once`; a perturbation method that runs out of memory is retried with
        half the copies per model call, down to one."""
        while True:
            failed = None
            try:
                return self._run_once(batch, through, explained, targets)
            except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
                if not (self.info.per_sample and is_out_of_memory(exc) and self.copies > 1):
                    raise
                failed = exc.with_traceback(None)  # its frames hold the failed run's tensors
            del failed
            gc.collect()
            if self.explainer.device.type == "cuda":
                torch.cuda.empty_cache()
            self.halved = self.halved or self.copies
            self.copies //= 2

    def _copies_that_fit(self, sample: Batch) -> int:
        """Perturbed copies of one sample per model call: half the free memory over one copy's
        activations (measured on one forward), at most :data:`MAX_COPIES`."""
        device = self.explainer.device
        key = tuple(sample.sizes().items())
        cache = self.explainer._copy_bytes
        if key not in cache:
            cache[key] = _bytes_per_copy(self.explainer, sample)
        fit = int(0.5 * free_memory(device) // max(cache[key], 1))
        return max(1, min(MAX_COPIES.get(device.type, 32), fit))

    def _run_once(self, batch: Batch, through: str, explained: str, targets: list[int | None]):
        """One engine run with ``through`` as grad-cam's input and ``explained``'s tokens."""
        explainer, info = self.explainer, self.info
        bound = explainer._bound(batch, through)
        segment_of = explained if info.uses_layer else None
        cam_obj = info.engine(bound, [bound.tap] if info.uses_layer else [])
        if info.per_sample:
            cam_obj.batch_size = self.copies
        raws: list[np.ndarray] = []
        if info.uses_layer:
            # Native resolution: one map serves every modality, resized to each afterwards.
            cam_obj.get_target_width_height = lambda _input: None
            original = cam_obj.get_cam_image

            def capture(input_tensor, layer, chosen, activations, grads, *args, **kwargs):
                if activations is None or (info.uses_gradients and grads is None):
                    raise _NoGradient
                out = original(input_tensor, layer, chosen, activations, grads, *args, **kwargs)
                raws.append(np.asarray(out, dtype=np.float32))
                return out

            cam_obj.get_cam_image = capture
        record = None
        try:
            with self._routing(bound, segment_of) as record:
                cam, raw, used = self._call_engine(cam_obj, bound, through, targets, raws)
        except _NoGradient:
            self._check_calls(record)
            raise
        except AssertionError as exc:
            raise MethodError(
                f"{info.name} cannot run on this model: grad-cam's internal check failed "
                f"({exc or 'assertion'}); shared or unused conv layers break FullGrad."
            ) from exc
        finally:
            release(cam_obj)
        self._check_calls(record)
        # Methods without a class score (EigenCAM) never looked at the target: check it here.
        used = resolve_targets(used, bound.first_logits)
        return cam, raw, record, bound, used

    def _call_engine(self, cam_obj, bound, explained, targets, raws):
        """The engine call itself, with our own augmentation smoothing.

        Returns ``(map, raw, classes used)``; a predicted class grad-cam picks itself from its
        first (unperturbed) forward, so no extra forward fixes it.
        """
        passes = augmentations() if self.aug_smooth else augmentations()[:1]
        # Perturbation methods call the target on perturbed outputs: given None, grad-cam fixes
        # the predicted class from its own first, unperturbed forward.  Other methods call it
        # on that forward first, so a lazily resolved target serves (and wrappers keep working).
        fixed_by_grad_cam = self.info.per_sample and all(t is None for t in targets)
        chosen = None if fixed_by_grad_cam else [ClassTarget(t) for t in targets]
        maps, raw_maps = [], []
        original = dict(bound.tensors)
        try:
            for augment, undo in passes:
                if self.aug_smooth:
                    bound.tensors = {k: augment(v) for k, v in original.items()}
                cam = cam_obj(bound.tensors[explained], chosen, eigen_smooth=self.eigen_smooth)
                cam = torch.from_numpy(np.asarray(cam, np.float32))
                raw = torch.from_numpy(raws[-1]) if raws else cam
                maps.append(undo(cam))
                raw_maps.append(undo(raw))
        finally:
            bound.tensors = original
        used = [t.index for t in chosen] if chosen is not None else list(targets)
        # grad-cam scaled each map already; this scales their mean and zeroes NaN maps.
        cam = native(torch.stack(maps).mean(dim=0))
        return cam.numpy(), torch.stack(raw_maps).mean(dim=0).numpy(), used

    def _check_calls(self, record: Any) -> None:
        if record is not None:
            check_calls(self.module_name(), self.call, record.calls)

    @contextlib.contextmanager
    def _routing(self, bound: BoundModel, segment_of: str | None) -> Iterator[Any]:
        if self.module is None:
            yield None
            return
        with bound.routed(
            self.module, self.call or 0, segment_of, label=self.label(), layout=self.layout
        ) as record:
            yield record

    def label(self) -> str:
        """The layer as the user named it (``"encoder@1"``)."""
        return self.module_name() + (f"@{self.call}" if self.call is not None else "")

    def module_name(self) -> str:
        for name, module in self.explainer.model.named_modules():
            if module is self.module:
                return name
        return "?"


def free_memory(device: torch.device) -> int:
    """Bytes free for tensors on ``device``: CUDA's free memory, or the CPU's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _bytes_per_copy(explainer: Explainer, sample: Batch) -> int:
    """Memory one more copy of ``sample`` costs in a no-grad forward: CUDA's measured peak, or
    on the CPU the bytes of every leaf module's output (an upper bound) plus the inputs."""
    inputs = sum(t.numel() * t.element_size() for t in sample.tensors.values())
    first = explainer.names[0]
    bound = explainer._bound(sample, first)
    device = explainer.device
    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            bound(sample.tensors[first])
            torch.cuda.synchronize(device)
            return inputs + torch.cuda.max_memory_allocated(device) - before
        total = [inputs]

        def count(_module: nn.Module, _args: Any, output: Any) -> None:
            for item in output if isinstance(output, (tuple, list)) else [output]:
                if isinstance(item, torch.Tensor):
                    total[0] += item.numel() * item.element_size()

        leaves = [m for m in explainer.model.modules() if not next(m.children(), None)]
        handles = [m.register_forward_hook(count) for m in leaves]
        try:
            bound(sample.tensors[first])
        finally:
            for handle in handles:
                handle.remove()
        return total[0]


def release(cam_obj: Any) -> None:
    """Remove grad-cam's hooks and drop what they captured.

    Not grad-cam's own ``release()``: its ``detach_()`` fails on views (ShapleyCAM keeps the
    graph), which would leave hooks behind.
    """
    capture = getattr(cam_obj, "activations_and_grads", None)
    if capture is not None:
        for handle in capture.handles:
            handle.remove()
        capture.handles.clear()
        capture.activations = []
        capture.gradients = []
    # AblationCAM skips removing its own hook when a forward fails; the hook, the outputs'
    # graph and our get_cam_image wrapper would otherwise keep the model and inputs alive.
    for layer in getattr(cam_obj, "target_layers", []):
        if isinstance(layer, Tap):
            layer._forward_hooks.clear()
    cam_obj.outputs = None
    vars(cam_obj).pop("get_cam_image", None)
