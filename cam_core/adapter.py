"""Presenting a multi-input model to grad-cam as a one-tensor module, without editing it.

grad-cam calls ``model(input_tensor)`` with one tensor.  :class:`BoundModel` is that one-tensor
module: the explained modality is its input, every other modality is bound and expanded to the
incoming batch (ScoreCAM and AblationCAM run larger batches of one sample's copies).

The chosen layer is reached through a *tap*: a forward hook on the user's module routes the
chosen call's output, read as an ``(N, C, h, w)`` map by its :class:`~cam_core.layers.OutputView`,
through :attr:`BoundModel.tap`, an identity module grad-cam hooks instead of the layer itself.
So tuple outputs, tokens, channels-last maps and shared modules all look like a plain conv map
to every grad-cam method, and AblationCAM can swap the tap for its ablation layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from . import shutdown
from .errors import InputError, LayerError
from .layers import OutputView, Undecided, UndecidedLayer, analyze_output
from .modality import Modality
from .model_checks import input_size_error

__all__ = [
    "BoundModel",
    "OutputRule",
    "Tap",
    "describe_output",
    "evaluating",
    "input_sources",
    "model_lock",
    "pick_output",
    "preserved_state",
    "select_logits",
]

OutputRule = int | str | Callable[[Any], torch.Tensor] | None


class Tap(nn.Identity):
    """Where grad-cam hooks: the chosen layer's map passes through here."""


class BoundModel(nn.Module):
    """``model`` as a function of one modality's tensor, the others bound.

    Args:
        model: the user's model (not copied, not edited).
        modalities: all modalities, in forward order.
        tensors: ``{name: (N, C, H, W)}`` for every modality; the explained one is ignored.
        explained: the modality whose tensor comes in through :meth:`forward`.
        output: rule that picks the logits out of the model's output (see :func:`select_logits`).
        device: where the inputs live; grad-cam reads its device from the first parameter.
    """

    def __init__(
        self,
        model: nn.Module,
        modalities: Sequence[Modality],
        tensors: Mapping[str, torch.Tensor],
        explained: str,
        output: OutputRule,
        device: torch.device,
    ) -> None:
        super().__init__()
        # Registered first so that grad-cam's `next(model.parameters())` gives our device even
        # for a model without parameters.
        self.anchor = nn.Parameter(torch.empty(0, device=device), requires_grad=False)
        self.model = model
        self.tap = Tap()
        self.modalities = tuple(modalities)
        self.tensors = dict(tensors)
        self.explained = explained
        self.output_rule = output
        self.last_logits: torch.Tensor | None = None
        self.first_logits: torch.Tensor | None = None  # of the first forward (unperturbed)
        # Inputs become leaves requiring grad (so frozen models' layers get gradients, and the
        # graph can be walked back to them); the floor-cost engine turns this off.
        self.track_inputs = True
        self.forwards = 0  # forward passes so far: routing hooks count calls per pass
        self.leaves: dict[str, torch.Tensor] = {}  # the current forward's input tensors
        self.batch = 0  # batch size of the current forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shutdown.check()  # a stop request ends even a ScoreCAM run at its next model call
        self.forwards += 1
        self.batch = n = x.shape[0]
        self.leaves = {}
        args, kwargs = [], {}
        track = self.track_inputs and torch.is_grad_enabled()
        for modality in self.modalities:
            if modality.name == self.explained:
                value = x
            else:
                value = _expand(self.tensors[modality.name], n, modality.name)
            if track and not value.requires_grad:
                # With frozen parameters, activations require grad only if the inputs do: a
                # temporary leaf keeps gradients flowing to every layer, and the .grad it
                # collects is dropped with it.
                value = value.detach().requires_grad_(True)
            self.leaves[modality.name] = value
            if modality.arg:
                kwargs[modality.arg] = value
            else:
                args.append(value)
        try:
            output = self.model(*args, **kwargs)
        except RuntimeError as exc:
            sizes = {name: tuple(v.shape[-2:]) for name, v in self.leaves.items()}
            error = input_size_error(exc, self.modalities, sizes)
            if error is None:
                raise
            raise error from exc
        logits = select_logits(output, self.output_rule)
        self.last_logits = logits.detach()
        if self.forwards == 1:
            self.first_logits = self.last_logits
        return logits

    @contextlib.contextmanager
    def routed(
        self,
        module: nn.Module,
        call: int,
        segment_of: str | None,
        tap: nn.Module | None = None,
        label: str = "this layer",
        layout: str | None = None,
        strict: bool = True,
    ) -> Iterator[_RouteRecord]:
        """Route call ``call`` of ``module`` through a tap (:attr:`tap` by default) in the block.

        ``segment_of`` names the modality whose tokens to use when a token layer concatenates
        several modalities; ``label`` names the layer in errors; ``layout`` (``"nchw"`` or
        ``"nhwc"``) is the 4-D layout when the user or a dry run settled it.  A reading only a
        dry run can settle raises :class:`~cam_core.layers.UndecidedLayer`, or with
        ``strict=False`` is noted in the record and the output left alone.  The hook is
        removed on exit, also after an error.
        """
        record = _RouteRecord()
        sizes = {m.name: tuple(self.tensors[m.name].shape[-2:]) for m in self.modalities}

        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            if record.forward != self.forwards:
                record.forward, record.seen = self.forwards, 0
            index = record.seen
            record.seen += 1
            record.calls = max(record.calls, record.seen)
            if index != call:
                return None
            view = analyze_output(output, self.batch, sizes, layout, module)
            if isinstance(view, Undecided):
                if not strict:
                    record.undecided = view
                    return None
                raise UndecidedLayer(f"layer {label!r} cannot be a CAM target: {view}.", view)
            if isinstance(view, str):
                raise LayerError(f"layer {label!r} cannot be a CAM target: {view}.")
            record.view = view
            if record.sources is None:
                record.sources = input_sources(view.pick(output), self.leaves)
            segment = view.segment_for(segment_of) if segment_of else 0
            if segment is None:
                # This modality has no tokens here; route another segment so the engine runs,
                # and let the caller discard the result.
                record.missing_segment = True
                segment = 0
            record.segment = segment
            tensor = view.pick(output)
            # Looked up at call time: AblationCAM swaps self.tap for its ablation layer.
            through = tap if tap is not None else self.tap
            tapped = through(view.to_map(tensor, segment))
            written = view.from_map(tensor, tapped, segment)
            ablated = getattr(through, "ablated", None)
            if ablated is not None and view.prefix:
                # AblationCAM: the class token loses the channel too (grad-cam's documented
                # ViT usage ablates the whole token tensor, AblationLayerVit).
                written = view.ablate_prefix(written, tapped, ablated)
            if view.layout in ("nchw", "nhwc"):
                # The model goes on with a copy: an in-place op after the layer (`out += x`, an
                # in-place ReLU) must not change the activation the map is computed from.
                written = written.clone()
            return view.put(output, written)

        handle = module.register_forward_hook(hook)
        try:
            yield record
        finally:
            handle.remove()


@dataclasses.dataclass
class _RouteRecord:
    """What the routing hook saw during the last forward passes."""

    calls: int = 0  # most calls of the module seen in one forward
    forward: int = -1  # the forward pass `seen` counts in
    seen: int = 0
    view: OutputView | None = None
    sources: set[str] | None = None  # modalities whose input reaches the layer (None: unknown)
    segment: int = 0
    missing_segment: bool = False
    undecided: Undecided | None = None  # a reading a dry run must settle (strict=False)


def input_sources(tensor: torch.Tensor, leaves: Mapping[str, torch.Tensor]) -> set[str] | None:
    """Names of the ``leaves`` (input tensors) that ``tensor`` was computed from.

    Walks the autograd graph back to the inputs; None when there is no graph (no_grad).
    """
    if tensor.grad_fn is None:
        return None
    names = {id(t): name for name, t in leaves.items()}
    found: set[str] = set()
    seen: set[int] = set()
    stack = [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf tensor
        if variable is not None and id(variable) in names:
            found.add(names[id(variable)])
        stack.extend(child for child, _ in node.next_functions)
    return found


def _expand(tensor: torch.Tensor, n: int, name: str) -> torch.Tensor:
    if tensor.shape[0] == n:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(n, *tensor.shape[1:])
    raise InputError(
        f"internal batch mismatch for {name!r}: bound batch {tensor.shape[0]}, incoming {n}.",
        modality=name,
    )


# -- the model's output ---------------------------------------------------------------------------


def describe_output(output: Any, depth: int = 0) -> str:
    """Short structural description of a model output, for error messages."""
    if isinstance(output, torch.Tensor):
        return f"Tensor{tuple(output.shape)}"
    if depth > 2:
        return type(output).__name__
    if isinstance(output, Mapping):
        inner = ", ".join(f"{k!r}: {describe_output(v, depth + 1)}" for k, v in output.items())
        return f"{type(output).__name__}({inner})"
    if isinstance(output, (tuple, list)):
        inner = ", ".join(describe_output(v, depth + 1) for v in output)
        return f"{type(output).__name__}({inner})"
    if dataclasses.is_dataclass(output):
        inner = ", ".join(
            f"{f.name}={describe_output(getattr(output, f.name), depth + 1)}"
            for f in dataclasses.fields(output)
        )
        return f"{type(output).__name__}({inner})"
    return type(output).__name__


def select_logits(output: Any, rule: OutputRule = None) -> torch.Tensor:
    """The ``(N, num_classes)`` logits inside a model's output.

    ``rule``: an index (tuple/list), a key (dict) or attribute name (object), or a callable
    taking the output.  Default: a tensor as is; else a ``logits`` key or attribute; else the
    first tensor of a tuple, list, dict or dataclass.  A 1-D output ``(N,)`` is one logit per
    sample and becomes ``(N, 1)``; dense segmentation logits ``(N, K, H, W)`` are summed over
    the image (see :mod:`cam_core.segmentation`).
    """
    picked = _apply_rule(output, rule)
    if not isinstance(picked, torch.Tensor):
        raise InputError(
            f"the model's output has no logits tensor where expected (output={rule!r}); it "
            f"returned {describe_output(output)}. Set output= (index, key or callable) to pick "
            "the logits."
        )
    if picked.dim() == 1:
        picked = picked[:, None]
    if picked.dim() == 4:
        # Dense (N, K, H, W) logits of a segmentation model: each class over the whole image
        # (a Region target restricts it to a region).
        from .segmentation import region_sums

        picked = region_sums(picked)
    if picked.dim() != 2:
        raise InputError(
            f"the logits must be (N, num_classes), got shape {tuple(picked.shape)} from "
            f"{describe_output(output)}. Set output= to pick the classification logits."
        )
    return picked


def pick_output(output: Any, rule: OutputRule = None) -> Any:
    """What ``rule`` picks out of a model's output (a tensor, usually), unchecked."""
    return _apply_rule(output, rule)


def _apply_rule(output: Any, rule: OutputRule) -> Any:
    if callable(rule):
        return rule(output)
    if isinstance(rule, int):
        try:
            return output[rule]
        except (IndexError, KeyError, TypeError) as exc:
            raise InputError(
                f"output={rule} does not index the model's output {describe_output(output)}."
            ) from exc
    if isinstance(rule, str):
        if isinstance(output, Mapping) and rule in output:
            return output[rule]
        if hasattr(output, rule):
            return getattr(output, rule)
        raise InputError(
            f"output={rule!r} is not a key or attribute of the model's output "
            f"{describe_output(output)}."
        )
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        if "logits" in output:
            return output["logits"]
        values = list(output.values())
    elif hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        return output.logits
    elif dataclasses.is_dataclass(output):
        values = [getattr(output, f.name) for f in dataclasses.fields(output)]
    elif isinstance(output, (tuple, list)):
        values = list(output)
    else:
        values = []
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    return None


# -- state of the user's model ---------------------------------------------------------------------

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The one lock of ``model``: every explainer of the same module shares it, so two never
    mix activations (hooks and grad-cam state live on the module)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` in the block, training flags restored on exit (also after an error).

    All the floor-cost engine changes: it never touches ``.grad``, ``requires_grad`` or the
    module structure, so it needs none of :func:`preserved_state`'s bookkeeping.
    """
    training = [m for m in model.modules() if m.training]
    for module in training:
        module.training = False
    try:
        yield
    finally:
        for module in training:
            module.training = True


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore the model exactly as it was on exit, also after an error.

    grad-cam calls ``model.eval()``, leaves ``.grad`` on parameters, and AblationCAM swaps a
    submodule without ``try/finally``: training flags, the module structure, ``requires_grad``
    and ``.grad`` of every parameter are put back.
    """
    modules = list(model.modules())
    training = [(m, m.training) for m in modules]
    children = [(m, dict(m._modules)) for m in modules]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for module, saved in children:
            if module._modules != saved:
                module._modules.clear()
                module._modules.update(saved)
        for module, flag in training:
            module.training = flag
        for param, requires_grad, grad in params:
            param.requires_grad_(requires_grad)
            param.grad = grad
