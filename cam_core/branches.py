"""Each modality's own branch: the deepest layer whose output depends on one modality alone.

After a fusion layer a multi-input model has one map per layer, drawn on every input; before
it, each modality has layers of its own.  :func:`trace_scopes` runs the model once (with
autograd, on one sample) and reads from the graph, for every CAM-ready layer call, which inputs
its output was computed from and whether *all* of a modality's influence on the output passes
through it (every path from that input to the logits goes through the layer: the branch's
output, not a side road such as a normalization that only the attention's query reads).
:func:`pick_branches` takes, per modality, the deepest such layer; :func:`branch_maps` assembles
one result whose CAM of each modality comes from that modality's own branch.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .adapter import BoundModel, input_sources
from .layers import OutputView, Undecided, analyze_output
from .result import CamResult

__all__ = [
    "FUSED_NOTICE_START",
    "LayerScope",
    "branch_maps",
    "fused_notice",
    "pick_branches",
    "trace_scopes",
]

FUSED_NOTICE_START = "One map of a fused layer"


@dataclass(frozen=True)
class LayerScope:
    """What one CAM-ready layer call sees, from the autograd graph of one forward.

    Attributes:
        path: the layer as :meth:`Explainer.explain` takes it (``"encoder@1"`` for a call).
        sources: the modalities whose input the layer's output was computed from.
        split: the output holds tokens of several modalities, read per modality.
        reaches: the output takes part in computing the logits.
        carries: for a layer of one modality, whether every path from that modality's input to
            the logits passes through this output (False for layers of several modalities).
    """

    path: str
    sources: frozenset[str]
    split: bool
    reaches: bool
    carries: bool


def trace_scopes(bound: BoundModel, x: torch.Tensor) -> list[LayerScope]:
    """Scopes of every CAM-ready layer call, in the order the calls finish.

    ``bound`` is the model with its inputs bound and ``x`` the tensor it is called with (one
    sample is enough); runs one forward with autograd, under the caller's lock and state guard.
    """
    sizes = {name: tuple(t.shape[-2:]) for name, t in bound.tensors.items()}
    calls: dict[str, int] = {}
    seen: list[tuple[str, int, Any, frozenset[str], bool]] = []

    def recorder(name: str):
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            index = calls.get(name, 0)
            calls[name] = index + 1
            view = analyze_output(output, bound.batch, sizes)
            if isinstance(view, Undecided) and view.kind == "layout":
                # A map either way (channels-first or -last): its sources do not depend on which.
                tensor = output if view.element is None else output[view.element]
                split = False
            elif isinstance(view, OutputView):
                tensor, split = view.pick(output), view.split
            else:
                return
            # The node now: an in-place op later (ReLU(inplace=True)) gives the tensor a new one.
            sources = input_sources(tensor, bound.leaves)
            if sources:
                seen.append((name, index, tensor.grad_fn, frozenset(sources), split))

        return hook

    modules = [(name, m) for name, m in bound.model.named_modules() if name]
    handles = [module.register_forward_hook(recorder(name)) for name, module in modules]
    try:
        logits = bound(x)
    finally:
        for handle in handles:
            handle.remove()
    root = logits.grad_fn
    leaves = {id(t): name for name, t in bound.leaves.items()}
    reachable = _walk(root)
    scopes = []
    for name, index, node, sources, split in seen:
        path = f"{name}@{index}" if calls[name] > 1 else name
        reaches = id(node) in reachable
        carries = False
        if reaches and len(sources) == 1:
            (only,) = sources
            beyond = _walk(root, blocked=node)
            carries = not any(
                leaves.get(id(getattr(n, "variable", None))) == only for n in beyond.values()
            )
        scopes.append(LayerScope(path, sources, split, reaches, carries))
    return scopes


def pick_branches(
    scopes: Sequence[LayerScope], names: Iterable[str], ready: Collection[str] | None = None
) -> dict[str, str | None]:
    """``{modality: layer path or None}``: the deepest layer that sees only that modality.

    ``ready`` limits the choice to those layer paths (the layer tree's CAM-ready rows).

    Layers that carry all of the modality's influence onward come first; when none does (the
    input also reaches the output another way), the deepest layer of that modality alone that
    reaches the output is taken.  None when no CAM-ready layer sees that modality alone.
    """
    branches: dict[str, str | None] = {}
    for name in names:
        own = [
            s
            for s in scopes
            if s.sources == {name}
            and s.reaches
            and not s.split
            and (ready is None or s.path in ready)
        ]
        carrying = [s for s in own if s.carries]
        chosen = carrying or own
        branches[name] = chosen[-1].path if chosen else None
    return branches


def fused_notice(layer: str, mixed: Sequence[str]) -> str:
    """The one sentence that says a map is one map of a fused layer, drawn on every input."""
    seen = ", ".join(mixed[:-1]) + f" and {mixed[-1]}" if len(mixed) > 1 else mixed[0]
    return (
        f"{FUSED_NOTICE_START}: {layer} mixes {seen}, so the overlays show this one map on every "
        "input — not each modality's own evidence (choose each modality's own branch for that)."
    )


def branch_maps(
    results: Mapping[str, CamResult], branches: Mapping[str, str | None], names: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each modality's CAM and raw map from the result at its own branch.

    ``results`` maps each branch layer to its :class:`CamResult`.  A modality without a branch
    gets zeros the size of its input.  Returns ``(cams, raw maps, NaN per sample)`` the way
    :meth:`Explainer.explain` assembles them.
    """
    cams, raws, nan = {}, {}, {}
    for name in names:
        layer = branches.get(name)
        if layer is None:
            shape = next(iter(results.values())).cams[name].shape
            cams[name] = raws[name] = np.zeros(shape, np.float32)
            nan[name] = np.zeros(shape[0], bool)
            continue
        cams[name] = results[layer].cams[name]
        raws[name] = results[layer].raw[name]
        nan[name] = ~np.isfinite(raws[name]).reshape(len(raws[name]), -1).all(axis=1)
    return cams, raws, nan


def _walk(root: Any, blocked: Any = None) -> dict[int, Any]:
    """Autograd nodes reachable from ``root`` without passing through ``blocked``, by id.

    The nodes themselves are kept in the dict: a node's Python object lives only while it is
    referenced, and a freed one's id could be reused by the next.
    """
    found: dict[int, Any] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or node is blocked or id(node) in found:
            continue
        found[id(node)] = node
        stack.extend(child for child, _ in node.next_functions)
    return found
