"""The layer tree: which modules of a model can be a CAM target, and how their outputs are read.

A CAM needs a spatial feature map ``(N, C, h, w)``.  Real layers return many other things; the
rules (from ``DESIGN.md``) are applied by :func:`analyze_output`, which turns one output into a
:class:`OutputView` (how to get the map, and how to put a modified map back) or a reason why not:

* ``(N, C, h, w)`` tensor: ready as is.
* tuple / list (``nn.MultiheadAttention`` returns ``(out, weights)``): the first tensor is used.
* tokens ``(N, L, C)`` (or sequence-first ``(L, N, C)``): reshaped to a grid when ``L``, or ``L-1``
  with a class token, is a modality's patch grid or a square; tokens that concatenate several
  modalities' grids are split per modality.
* channels-last ``(N, h, w, C)`` (Swin): permuted.

A module called several times per forward (a shared encoder) gets one row per call; its path
then carries the call index: ``"encoder@1"``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import LayerError

__all__ = [
    "LayerInfo",
    "OutputView",
    "TokenSegment",
    "analyze_output",
    "parse_layer",
    "patch_grid",
    "resolve_module",
    "token_segments",
]

CALL_SEPARATOR = "@"


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer tree: one call of one module.

    ``path`` is what ``Explainer.explain(layer=...)`` takes (``"fusion.attn"``, or
    ``"encoder@1"`` for the second call of a shared module).  ``reason`` says why the layer
    cannot be a target, or, when it can, how its output is read.
    """

    path: str
    module_path: str
    call: int
    calls: int
    type: str
    params: int
    output_shape: tuple[int, ...] | None
    ready: bool
    reason: str
    depth: int


@dataclass(frozen=True)
class TokenSegment:
    """A run of tokens forming one ``h x w`` grid, starting at token ``start``."""

    start: int
    height: int
    width: int
    modality: str | None


@dataclass(frozen=True)
class OutputView:
    """How to read a feature map out of a layer's output, and write a changed one back.

    ``element`` picks a tensor out of a tuple/list output; ``layout`` is ``"nchw"``,
    ``"nhwc"``, ``"tokens"`` (``(N, L, C)``) or ``"tokens-seq-first"`` (``(L, N, C)``).
    Token layouts carry one grid segment, or one per modality when the tokens concatenate
    several modalities (``split``).
    """

    element: int | None
    layout: str
    segments: tuple[TokenSegment, ...] = ()
    prefix: int = 0

    @property
    def split(self) -> bool:
        return len(self.segments) > 1

    def segment_for(self, modality: str) -> int | None:
        """Index of the segment holding ``modality``'s tokens (None when it has none)."""
        if not self.split:
            return 0
        for i, seg in enumerate(self.segments):
            if seg.modality == modality:
                return i
        return None

    def describe(self, shape: Sequence[int]) -> str:
        """One line for the layer tree: how the output becomes a map."""
        picked = f"element {self.element} of the tuple; " if self.element is not None else ""
        if self.layout == "nchw":
            return f"{picked}feature map {shape[1]}×{shape[2]}×{shape[3]}"
        if self.layout == "nhwc":
            return f"{picked}channels-last {shape[1]}×{shape[2]}×{shape[3]}, permuted"
        grids = ", ".join(
            (f"{s.modality} " if s.modality else "") + f"{s.height}×{s.width}"
            for s in self.segments
        )
        cls = "class token dropped, " if self.prefix else ""
        kind = "tokens split per modality" if self.split else "tokens"
        return f"{picked}{kind} → {cls}grid {grids}"

    # -- reading and writing -------------------------------------------------------------------

    def pick(self, output: object) -> torch.Tensor:
        """The tensor inside ``output`` this view reads."""
        return output if self.element is None else output[self.element]  # type: ignore[index]

    def put(self, output: object, tensor: torch.Tensor) -> object:
        """``output`` with the picked tensor replaced by ``tensor``."""
        if self.element is None:
            return tensor
        items = list(output)  # type: ignore[call-overload]
        items[self.element] = tensor
        return type(output)(items) if isinstance(output, tuple) else items

    def to_map(self, tensor: torch.Tensor, segment: int = 0) -> torch.Tensor:
        """``(N, C, h, w)`` view of ``tensor`` (for token layouts, of one segment)."""
        if self.layout == "nchw":
            return tensor
        if self.layout == "nhwc":
            return tensor.permute(0, 3, 1, 2)
        tokens = self._batch_first(tensor)
        seg = self.segments[segment]
        part = tokens[:, seg.start : seg.start + seg.height * seg.width]
        return part.reshape(part.shape[0], seg.height, seg.width, part.shape[2]).permute(0, 3, 1, 2)

    def from_map(self, tensor: torch.Tensor, fmap: torch.Tensor, segment: int = 0) -> torch.Tensor:
        """Inverse of :meth:`to_map`: ``tensor`` with the map's values written back.

        ``fmap`` may have a different batch size than ``tensor`` (AblationCAM's ablation layer
        returns its own batch); tokens outside the segment are then repeated to match.
        """
        if self.layout == "nchw":
            return fmap
        if self.layout == "nhwc":
            return fmap.permute(0, 2, 3, 1)
        tokens = self._batch_first(tensor)
        if fmap.shape[0] != tokens.shape[0]:
            tokens = tokens[:1].expand(fmap.shape[0], *tokens.shape[1:])
        seg = self.segments[segment]
        grid = fmap.permute(0, 2, 3, 1).reshape(fmap.shape[0], -1, fmap.shape[1])
        end = seg.start + seg.height * seg.width
        merged = torch.cat([tokens[:, : seg.start], grid, tokens[:, end:]], dim=1)
        return merged.transpose(0, 1) if self.layout == "tokens-seq-first" else merged

    def _batch_first(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.transpose(0, 1) if self.layout == "tokens-seq-first" else tensor


# -- output analysis -------------------------------------------------------------------------------


def _is_grid(h: int, w: int, sizes: Sequence[tuple[int, int]]) -> bool:
    """Whether an ``h x w`` map looks like a downsampled grid of one of the input ``sizes``."""
    for height, width in sizes:
        if (
            1 <= h <= height
            and 1 <= w <= width
            and math.isclose(height / h, width / w, rel_tol=0.15)
        ):
            return True
    return False


def patch_grid(tokens: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """The ``(h, w)`` grid with ``h*w == tokens`` of a modality of ``size`` (equal strides)."""
    height, width = size
    for stride in range(1, max(height, width) + 1):
        h, w = math.ceil(height / stride), math.ceil(width / stride)
        if h * w == tokens:
            return h, w
        if h * w < tokens:
            break
    return None


def token_segments(
    length: int, modality_sizes: dict[str, tuple[int, int]]
) -> tuple[tuple[TokenSegment, ...], int] | None:
    """Grid segments for ``length`` tokens, and the number of leading (class) tokens."""
    names = list(modality_sizes)
    for prefix in (0, 1):
        count = length - prefix
        if count < 1:
            continue
        for name in names:
            grid = patch_grid(count, modality_sizes[name])
            if grid:
                return (TokenSegment(prefix, *grid, None),), prefix
        root = math.isqrt(count)
        if root * root == count:
            return (TokenSegment(prefix, root, root, None),), prefix
    # Several modalities' grids concatenated (same stride), in modality order.
    for prefix in (0, 1):
        for subset in _ordered_subsets(names):
            max_side = max(max(modality_sizes[n]) for n in subset)
            for stride in range(1, max_side + 1):
                grids = [
                    (
                        math.ceil(modality_sizes[n][0] / stride),
                        math.ceil(modality_sizes[n][1] / stride),
                    )
                    for n in subset
                ]
                total = sum(h * w for h, w in grids)
                if total == length - prefix:
                    segments, start = [], prefix
                    for name, (h, w) in zip(subset, grids):
                        segments.append(TokenSegment(start, h, w, name))
                        start += h * w
                    return tuple(segments), prefix
                if total < length - prefix:
                    break
    return None


def _ordered_subsets(names: list[str]) -> Iterator[list[str]]:
    """Subsets of two or more names in their original order, largest first."""
    from itertools import combinations

    for k in range(len(names), 1, -1):
        for combo in combinations(names, k):
            yield list(combo)


def analyze_output(
    output: object, batch: int, modality_sizes: dict[str, tuple[int, int]]
) -> OutputView | str:
    """How to read a CAM-able map from a layer's ``output``, or why it cannot be done.

    ``batch`` is the batch size of the forward that produced it and ``modality_sizes`` the
    ``(H, W)`` of every modality's input: they decide token grids and channels-last layouts.
    """
    element = None
    if isinstance(output, (tuple, list)):
        found = [i for i, item in enumerate(output) if isinstance(item, torch.Tensor)]
        if not found:
            return f"output is a {type(output).__name__} with no tensor in it"
        element = found[0]
        output = output[element]
    if not isinstance(output, torch.Tensor):
        return f"output is a {type(output).__name__}, not a tensor"
    shape = tuple(output.shape)
    sizes = list(modality_sizes.values())
    if not output.is_floating_point():
        return f"output has dtype {output.dtype}: not a feature map"
    if output.dim() == 4:
        if shape[0] != batch:
            return f"output {shape} does not start with the batch size {batch}"
        if _is_grid(shape[2], shape[3], sizes) or not _is_grid(shape[1], shape[2], sizes):
            layout, h, w = "nchw", shape[2], shape[3]
        else:
            layout, h, w = "nhwc", shape[1], shape[2]
        if h * w == 1:
            return f"spatial size is 1×1 {shape}: after global pooling — choose an earlier layer"
        return OutputView(element, layout)
    if output.dim() == 3:
        if shape[0] == batch:
            layout, length = "tokens", shape[1]
        elif shape[1] == batch:
            layout, length = "tokens-seq-first", shape[0]
        else:
            return f"3-D output {shape} has no batch dimension of size {batch}"
        found_segments = token_segments(length, modality_sizes)
        if found_segments is None:
            return (
                f"{length} tokens are neither a square grid nor a patch grid of any modality "
                f"({', '.join(f'{n} {h}×{w}' for n, (h, w) in modality_sizes.items())})"
            )
        segments, prefix = found_segments
        if segments[0].height * segments[0].width == 1 and len(segments) == 1:
            return f"a single token {shape}: no spatial layout"
        return OutputView(element, layout, segments, prefix)
    if output.dim() == 2:
        return f"output {shape} has no spatial dimensions — choose an earlier layer"
    return f"{output.dim()}-D output {shape} is not supported (2-D feature maps or tokens only)"


# -- paths -----------------------------------------------------------------------------------------


def parse_layer(path: str) -> tuple[str, int | None]:
    """``"encoder@1"`` → ``("encoder", 1)``; ``"fusion"`` → ``("fusion", None)``."""
    if not isinstance(path, str) or not path:
        raise LayerError(f"layer must be a dotted module path such as 'layer4', got {path!r}.")
    module_path, sep, call = path.rpartition(CALL_SEPARATOR)
    if not sep:
        return path, None
    if not call.isdigit():
        raise LayerError(
            f"layer {path!r}: the part after '{CALL_SEPARATOR}' must be a call index such as "
            f"'{module_path}{CALL_SEPARATOR}1'."
        )
    return module_path, int(call)


def resolve_module(model: nn.Module, module_path: str) -> nn.Module:
    """The submodule at ``module_path``; a LayerError with close matches when there is none."""
    modules = dict(model.named_modules())
    if module_path and module_path in modules:
        return modules[module_path]
    names = [name for name in modules if name]
    close = difflib.get_close_matches(module_path, names, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
    raise LayerError(
        f"layer {module_path!r} is not a module of {type(model).__name__}.{hint} "
        f"See Explainer.layer_tree() for every layer."
    )
