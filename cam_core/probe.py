"""A dry run at a second input size: what one input size cannot tell about a layer.

At one input size a 4-D output ``(N, 16, 16, 16)`` is a map channels-first and channels-last
alike, and a ``1×1`` map may follow a global pooling or come from an input too small for the
layer.  Running the model once more, without gradients, on every input resized (half the size,
then double) shows which dimensions follow the input (spatial) and which stay (channels), and
whether the ``1×1`` map grows.  The run stops as soon as the layers in question have answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GLOBAL_POOLS, OutputView, Undecided, describe_sizes, pooled_reason

__all__ = ["PooledMaps", "settle"]

Key = tuple[str, int]  # (module path, call index)
Run = Callable[[Mapping[str, torch.Tensor]], Any]

# Errors a model raises when it cannot run at another input size (a fixed Linear after a
# flatten, timm's image-size assertion, a position embedding of fixed length).
_SIZE_ERRORS = (RuntimeError, ValueError, AssertionError, IndexError, TypeError)


class PooledMaps:
    """Follows 1×1 maps from a global pooling through one dry run, so that the layers fed by
    them (a squeeze-excite block, a classifier's norm) need no second run to say why they are
    1×1.  Outputs are kept referenced for the run, so their ids stay unique."""

    def __init__(self) -> None:
        self._maps: dict[int, torch.Tensor] = {}

    def check(
        self, module: nn.Module, args: tuple[Any, ...], output: Any, view: OutputView | str
    ) -> OutputView | str:
        """``view``, or the global-pooling reason when this 1×1 map comes from one."""
        tensor = output[0] if isinstance(output, (tuple, list)) and output else output
        fed = any(isinstance(a, torch.Tensor) and id(a) in self._maps for a in args)
        single = isinstance(view, Undecided) and view.kind == "single"
        if isinstance(tensor, torch.Tensor) and (
            isinstance(module, GLOBAL_POOLS) or (fed and single)
        ):
            self._maps[id(tensor)] = tensor
        return pooled_reason(view.shape) if fed and single else view


class _Stop(Exception):
    """Every layer in question has answered: the rest of the forward is not needed."""


def settle(
    undecided: Mapping[Key, Undecided],
    modules: Mapping[str, nn.Module],
    run: Run,
    tensors: Mapping[str, torch.Tensor],
) -> dict[Key, OutputView | str]:
    """Settle each :class:`~cam_core.layers.Undecided` reading with dry runs at other sizes.

    Args:
        undecided: ``{(module path, call): reason}`` from the run at the inputs' own size.
        modules: ``{module path: module}`` covering those paths.
        run: runs the model on ``{modality: (N, C, H, W)}`` (no gradients needed).
        tensors: the inputs of the first run.

    Returns ``{key: OutputView}`` for layers that are ready after all, else ``{key: reason}``.
    """
    sizes = {name: tuple(t.shape[-2:]) for name, t in tensors.items()}
    pending = dict(undecided)
    settled: dict[Key, OutputView | str] = {}
    failures: list[str] = []
    for scale in (0.5, 2.0):
        # Half the size cannot show whether a 1×1 map grows: only larger inputs can.
        wanted = {k: r for k, r in pending.items() if scale > 1 or r.kind == "layout"}
        if not wanted:
            continue
        scaled = {
            n: (max(1, round(h * scale)), max(1, round(w * scale))) for n, (h, w) in sizes.items()
        }
        shapes, failure = _dry_run(run, tensors, scaled, wanted, modules)
        if failure:
            failures.append(f"at {describe_sizes(scaled)}: {failure}")
        for key, reason in wanted.items():
            if key in shapes:
                verdict = _verdict(reason, shapes[key], sizes, scaled)
                if verdict is not None:
                    settled[key] = verdict
                    del pending[key]
    for key, reason in pending.items():
        settled[key] = _unsettled(reason, failures)
    return settled


def _dry_run(
    run: Run,
    tensors: Mapping[str, torch.Tensor],
    scaled: Mapping[str, tuple[int, int]],
    wanted: Mapping[Key, Undecided],
    modules: Mapping[str, nn.Module],
) -> tuple[dict[Key, tuple[int, ...]], str]:
    """Output shapes of the ``wanted`` calls with every input resized to ``scaled``.

    Returns ``(shapes, failure)``: ``failure`` is the model's error when it did not run there.
    """
    shapes: dict[Key, tuple[int, ...]] = {}
    counts: dict[str, int] = {}

    def recorder(path: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            call = counts.get(path, 0)
            counts[path] = call + 1
            reason = wanted.get((path, call))
            if reason is None:
                return
            tensor = output if reason.element is None else output[reason.element]
            shapes[(path, call)] = tuple(tensor.shape)
            if len(shapes) == len(wanted):
                raise _Stop

        return hook

    paths = {path for path, _ in wanted}
    handles = [modules[path].register_forward_hook(recorder(path)) for path in paths]
    resized = {
        name: F.interpolate(t, size=scaled[name], mode="bilinear", align_corners=False)
        for name, t in tensors.items()
    }
    try:
        with torch.no_grad():
            run(resized)
    except _Stop:
        pass
    except _SIZE_ERRORS as exc:
        return shapes, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        for handle in handles:
            handle.remove()
    return shapes, ""


def _verdict(
    reason: Undecided,
    shape: tuple[int, ...],
    sizes: Mapping[str, tuple[int, int]],
    scaled: Mapping[str, tuple[int, int]],
) -> OutputView | str | None:
    """What the second ``shape`` tells about ``reason``; None when it tells nothing."""
    first = reason.shape
    if len(shape) != 4:
        return None
    at = describe_sizes(scaled)
    if reason.kind == "layout":
        # Channels stay when the input size changes; spatial sizes follow it.
        channels_first = shape[1] == first[1] and shape[2:] != first[2:]
        channels_last = shape[3] == first[3] and shape[1:3] != first[1:3]
        if channels_first == channels_last:
            return None
        layout = "nchw" if channels_first else "nhwc"
        return OutputView(reason.element, layout, decided_by=f"told by a dry run at {at}")
    h, w = (shape[2], shape[3]) if reason.layout == "nchw" else (shape[1], shape[2])
    if h * w > 1:
        return (
            f"the input is too small for this layer: {describe_sizes(dict(sizes))} gives 1×1 "
            f"({at} gives {h}×{w}) — use larger inputs or an earlier layer"
        )
    return pooled_reason(first)


def _unsettled(reason: Undecided, failures: list[str]) -> str:
    """The reason for a layer no dry run could settle, with the fix."""
    why = "; ".join(failures) if failures else "the dry runs did not reach this layer"
    if reason.kind == "layout":
        return (
            f"{reason}; a dry run at another input size could not tell them apart ({why}) — "
            "add ':nchw' or ':nhwc' to the layer to say which"
        )
    return f"{reason} (a dry run at a larger size did not run: {why})"
