"""The layer tree: which modules of a model can be a CAM target, and how their outputs are read.

A CAM needs a spatial feature map ``(N, C, h, w)``.  Real layers return many other things; the
rules (from ``DESIGN.md``) are applied by :func:`analyze_output`, which turns one output into a
:class:`OutputView` (how to get the map, and how to put a modified map back) or a reason why not:

* ``(N, C, h, w)`` tensor: ready as is.
* tuple / list (``nn.MultiheadAttention`` returns ``(out, weights)``): the first tensor is used.
* tokens ``(N, L, C)`` (or sequence-first ``(L, N, C)``): reshaped to a grid when ``L``, or ``L-1``
  with a class token, is a modality's patch grid or a square; tokens that concatenate several
  modalities' grids are split per modality.
* channels-last ``(N, h, w, C)`` (Swin, ConvNeXt blocks): permuted.  Which of the two a 4-D
  output is comes from the module's type (a conv, norm or pooling layer is channels-first),
  else from which reading is a grid over the inputs; when both are (channels equal to a spatial
  size), a dry run at a second input size decides (:mod:`cam_core.probe`), or the user does with
  a suffix: ``layer="stages.0:nhwc"``.  Nothing is guessed silently.
* a ``1×1`` map is refused, saying whether it follows a global pooling or the input is too small
  for the layer (a dry run at a larger size tells them apart).

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
    "GLOBAL_POOLS",
    "LAYOUTS",
    "LayerInfo",
    "OutputView",
    "TokenSegment",
    "Undecided",
    "UndecidedLayer",
    "analyze_output",
    "describe_sizes",
    "layout_override",
    "parse_layer",
    "patch_grid",
    "pooled_reason",
    "resolve_module",
    "suggest_layer",
    "token_segments",
]

CALL_SEPARATOR = "@"
# Leading tokens tried after 0 and 1 (class token): class + distillation token, class + 4 or 8
# registers, 4 or 8 registers alone.
_EXTRA_PREFIXES = (2, 5, 9, 4, 8)
LAYOUT_SEPARATOR = ":"
LAYOUTS = ("nchw", "nhwc")

# Modules whose 4-D output is channels-first by construction: their layout is never guessed.
_CHANNELS_FIRST = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Upsample,
    nn.PixelShuffle,
    nn.Dropout2d,
)
GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


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
    layout: str | None = None  # "nchw"/"nhwc" for 4-D maps, "tokens..." for tokens


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
    several modalities (``split``).  ``decided_by`` says how the layout was found when that is
    worth telling (a dry run, the user's suffix, a square grid assumed).
    """

    element: int | None
    layout: str
    segments: tuple[TokenSegment, ...] = ()
    prefix: int = 0
    decided_by: str = ""

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
        how = f" ({self.decided_by})" if self.decided_by else ""
        if self.layout == "nchw":
            return f"{picked}feature map {shape[1]}×{shape[2]}×{shape[3]}, channels-first{how}"
        if self.layout == "nhwc":
            return f"{picked}channels-last {shape[1]}×{shape[2]}×{shape[3]}, permuted{how}"
        grids = ", ".join(
            (f"{s.modality} " if s.modality else "") + f"{s.height}×{s.width}"
            for s in self.segments
        )
        cls = {0: "", 1: "class token dropped, "}.get(
            self.prefix, f"{self.prefix} leading tokens (class, distillation/registers) dropped, "
        )
        kind = "tokens split per modality" if self.split else "tokens"
        return f"{picked}{kind} → {cls}grid {grids}{how}"

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

    def ablate_prefix(
        self, tensor: torch.Tensor, fmap: torch.Tensor, channels: Sequence[int]
    ) -> torch.Tensor:
        """``tensor`` (tokens, from :meth:`from_map`) with row ``i``'s leading (class) tokens
        set, in channel ``channels[i]``, to the value ``fmap`` holds there (the ablated one)."""
        tokens = self._batch_first(tensor).clone()
        for i, channel in enumerate(channels):
            tokens[i, : self.prefix, channel] = fmap[i, channel].reshape(-1)[0]
        return tokens.transpose(0, 1) if self.layout == "tokens-seq-first" else tokens

    def _batch_first(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.transpose(0, 1) if self.layout == "tokens-seq-first" else tensor


# -- the default layer -----------------------------------------------------------------------------


def _positions(info: LayerInfo) -> int:
    """Spatial positions of a ready layer's map: ``h*w`` of an NCHW/NHWC map (the two smallest
    non-batch sizes, which ignores the channel count either way), ``L`` of tokens."""
    shape = info.output_shape or ()
    if len(shape) == 4:
        low = sorted(shape[1:])[:2]
        return low[0] * low[1]
    return shape[1] if len(shape) == 3 else 0


def suggest_layer(tree: Sequence[LayerInfo], preferred: str | None = None) -> str | None:
    """The layer to show first: ``preferred`` when it is a ready row of ``tree``; otherwise the
    last CAM-ready layer whose map has spatial extent (more than one position), pooling layers
    excluded, raised to its enclosing block while the block's output has the same shape: a
    ResNet's ``layer4`` rather than ``layer4.1.bn2``, a conv block rather than its last ReLU.

    Args:
        tree: rows of ``Explainer.layer_tree()``, in model order.
        preferred: a spec's ``DEFAULT_LAYER``.
    Returns:
        A row's ``path``, or ``None`` when no row can be a CAM target.
    """
    by_path = {info.path: info for info in tree}
    if preferred in by_path and by_path[preferred].ready:
        return preferred
    ready = [i for i in tree if i.ready]
    spatial = [i for i in ready if _positions(i) > 1 and "Pool" not in i.type]
    if not spatial:
        return ready[-1].path if ready else None
    chosen = spatial[-1]
    while "." in chosen.module_path:
        parent = by_path.get(chosen.module_path.rsplit(".", 1)[0])
        if parent is None or not parent.ready or parent.output_shape != chosen.output_shape:
            break
        chosen = parent
    return chosen.path


# -- output analysis -------------------------------------------------------------------------------


class Undecided(str):
    """A reason a layer is not ready *yet*: a dry run at another input size can settle it.

    ``kind`` is ``"layout"`` (a 4-D output reads as a map both channels-first and channels-last)
    or ``"single"`` (a 1×1 map: after a global pooling, or an input too small for the layer);
    ``element`` and ``shape`` are those of the tensor read, ``layout`` the 1×1 map's layout.
    """

    kind: str
    element: int | None
    shape: tuple[int, ...]
    layout: str | None

    @classmethod
    def make(
        cls,
        text: str,
        kind: str,
        element: int | None,
        shape: tuple[int, ...],
        layout: str | None = None,
    ) -> Undecided:
        reason = cls(text)
        reason.kind, reason.element, reason.shape, reason.layout = kind, element, shape, layout
        return reason


class UndecidedLayer(LayerError):
    """Raised by a routing hook when the layer's reading is :class:`Undecided` (the explainer
    settles it with a dry run and retries)."""

    def __init__(self, message: str, reason: Undecided) -> None:
        super().__init__(message)
        self.reason = reason


def _fits_grid(h: int, w: int, sizes: Sequence[tuple[int, int]]) -> bool:
    """Whether an ``h x w`` map can be a grid over one of the input ``sizes``.

    Some stride ``s`` must give ``h ≈ H/s`` and ``w ≈ W/s`` together, within the ±1.5 cells
    that rounding, padding and kernel edges add.  Loose on purpose: a map that fits both
    channels-first and channels-last is settled by a dry run, never by this test alone.
    """
    for height, width in sizes:
        low = max(height / (h + 1.5), width / (w + 1.5))
        high = min(height / max(h - 1.5, 0.5), width / max(w - 1.5, 0.5))
        if low <= high:
            return True
    return False


def patch_grid(tokens: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """The ``(h, w)`` grid of ``tokens`` patches over an input of ``size`` = ``(H, W)``.

    A patch embedding of stride ``s`` gives ``⌊H/s⌋ × ⌊W/s⌋`` patches (no padding) or
    ``⌈H/s⌉ × ⌈W/s⌉`` (padded).  Every stride and both roundings are tried; of the grids with
    ``h * w == tokens``, the one whose aspect ratio is closest to the input's wins.  None when no
    stride gives that many patches.
    """
    height, width = size
    found: set[tuple[int, int]] = set()
    for stride in range(1, max(height, width) + 1):
        ceil = (-(-height // stride), -(-width // stride))
        for h, w in ((height // stride, width // stride), ceil):
            if h >= 1 and w >= 1 and h * w == tokens:
                found.add((h, w))
        if ceil[0] * ceil[1] < tokens:
            break
    if not found:
        return None
    aspect = math.log(height / width)
    return min(found, key=lambda g: (abs(math.log(g[0] / g[1]) - aspect), g))


def token_segments(
    length: int, modality_sizes: dict[str, tuple[int, int]]
) -> tuple[tuple[TokenSegment, ...], int] | None:
    """Grid segments for ``length`` tokens, and the number of leading (class) tokens.

    Grids come from the inputs' sizes first — one modality's patch grid, with or without a
    class token, then several modalities' grids concatenated, then one modality's grid after
    more leading tokens (distillation, registers: ``_EXTRA_PREFIXES``) — and only when none fits
    from a square (a model that resizes its input to a square); :func:`analyze_output` says so.
    """
    names = list(modality_sizes)
    for prefix in (0, 1):
        for name in names:
            grid = patch_grid(length - prefix, modality_sizes[name]) if length > prefix else None
            if grid:
                return (TokenSegment(prefix, *grid, None),), prefix
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
    # More leading tokens before one modality's patches: a distillation token (DeiT distilled:
    # 2), register tokens (timm's *_reg4_*: 1 + 4, reg8: 1 + 8; DINOv2 with registers).
    for prefix in _EXTRA_PREFIXES:
        for name in names:
            grid = patch_grid(length - prefix, modality_sizes[name]) if length > prefix else None
            if grid:
                return (TokenSegment(prefix, *grid, None),), prefix
    for prefix in (0, 1):
        root = math.isqrt(max(length - prefix, 0))
        if root >= 1 and root * root == length - prefix:
            return (TokenSegment(prefix, root, root, None),), prefix
    return None


def _ordered_subsets(names: list[str]) -> Iterator[list[str]]:
    """Subsets of two or more names in their original order, largest first."""
    from itertools import combinations

    for k in range(len(names), 1, -1):
        for combo in combinations(names, k):
            yield list(combo)


def describe_sizes(sizes: dict[str, tuple[int, int]]) -> str:
    """``"32×32 px"``, or ``"rgb 32×32 px, depth 16×16 px"`` when the sizes differ."""
    distinct = set(sizes.values())
    if len(distinct) == 1:
        h, w = next(iter(distinct))
        return f"{h}×{w} px"
    return ", ".join(f"{name} {h}×{w} px" for name, (h, w) in sizes.items())


def analyze_output(
    output: object,
    batch: int,
    modality_sizes: dict[str, tuple[int, int]],
    layout: str | None = None,
    module: nn.Module | None = None,
) -> OutputView | str:
    """How to read a CAM-able map from a layer's ``output``, or why it cannot be done.

    ``batch`` is the batch size of the forward that produced it and ``modality_sizes`` the
    ``(H, W)`` of every modality's input: they decide token grids and channels-last layouts.
    ``layout`` (``"nchw"``/``"nhwc"``) is a 4-D layout already known (the user's suffix or a
    dry run); ``module`` is the layer, whose type can tell the layout.  The reason is an
    :class:`Undecided` when a dry run at another input size can settle it.
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
    if layout is not None and output.dim() != 4:
        return (
            f"the layout suffix ':{layout}' applies to 4-D outputs; this layer gives "
            f"{output.dim()}-D {shape}"
        )
    if output.dim() == 4:
        if shape[0] != batch:
            return f"output {shape} does not start with the batch size {batch}"
        return _map_view(element, shape, modality_sizes, layout, module)
    if output.dim() == 3:
        if shape[0] == batch:
            kind, length = "tokens", shape[1]
        elif shape[1] == batch:
            kind, length = "tokens-seq-first", shape[0]
        else:
            return f"3-D output {shape} has no batch dimension of size {batch}"
        found_segments = token_segments(length, modality_sizes)
        if found_segments is None:
            return (
                f"{length} tokens are neither a patch grid of any modality "
                f"({', '.join(f'{n} {h}×{w}' for n, (h, w) in modality_sizes.items())}) nor a "
                "square grid"
            )
        segments, prefix = found_segments
        if segments[0].height * segments[0].width == 1 and len(segments) == 1:
            return f"a single token {shape}: no spatial layout"
        square = len(segments) == 1 and not any(
            patch_grid(segments[0].height * segments[0].width, s) for s in sizes
        )
        note = (
            f"square: no input's patch grid has {length - prefix} tokens, so the model is "
            "assumed to resize its input to a square"
            if square
            else ""
        )
        return OutputView(element, kind, segments, prefix, note)
    if output.dim() == 2:
        return f"output {shape} has no spatial dimensions — choose an earlier layer"
    return f"{output.dim()}-D output {shape} is not supported (2-D feature maps or tokens only)"


def pooled_reason(shape: Sequence[int]) -> str:
    """Why a 1×1 map that follows a global pooling cannot be a target."""
    return f"spatial size is 1×1 {tuple(shape)}: after global pooling — choose an earlier layer"


def _map_view(
    element: int | None,
    shape: tuple[int, ...],
    modality_sizes: dict[str, tuple[int, int]],
    layout: str | None,
    module: nn.Module | None,
) -> OutputView | str:
    """The view of a 4-D output: channels-first or channels-last, decided, never guessed."""
    sizes = list(modality_sizes.values())
    if layout is not None:
        if layout not in LAYOUTS:
            return f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}"
    elif isinstance(module, _CHANNELS_FIRST):
        layout = "nchw"
    else:
        first = _fits_grid(shape[2], shape[3], sizes)
        last = _fits_grid(shape[1], shape[2], sizes)
        if first and last:
            return Undecided.make(
                f"output {shape} reads as a map both channels-first ({shape[1]} channels of "
                f"{shape[2]}×{shape[3]}) and channels-last ({shape[3]} channels of "
                f"{shape[1]}×{shape[2]}) at {describe_sizes(modality_sizes)}",
                "layout",
                element,
                shape,
            )
        layout = "nhwc" if last else "nchw"
    h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    if h * w == 1:
        if isinstance(module, GLOBAL_POOLS):
            return pooled_reason(shape)
        return Undecided.make(
            f"spatial size is 1×1 {shape}: after a global pooling, or the input "
            f"({describe_sizes(modality_sizes)}) is too small for this layer — choose an "
            "earlier layer or larger inputs",
            "single",
            element,
            shape,
            layout,
        )
    return OutputView(element, layout)


# -- paths -----------------------------------------------------------------------------------------


def layout_override(path: str) -> str | None:
    """The layout the user wrote after the layer: ``"stages.0:nhwc"`` → ``"nhwc"``, else None."""
    if not isinstance(path, str):
        return None
    rest, sep, layout = path.rpartition(LAYOUT_SEPARATOR)
    if not sep:
        return None
    if layout.lower() not in LAYOUTS:
        raise LayerError(
            f"layer {path!r}: the part after '{LAYOUT_SEPARATOR}' must be a layout, "
            f"{' or '.join(repr(x) for x in LAYOUTS)} (e.g. '{rest}{LAYOUT_SEPARATOR}nhwc' for a "
            "channels-last (N, H, W, C) output)."
        )
    return layout.lower()


def parse_layer(path: str) -> tuple[str, int | None]:
    """``"encoder@1"`` → ``("encoder", 1)``; ``"fusion"`` → ``("fusion", None)``.

    A layout suffix (``"stages.0:nhwc"``, see :func:`layout_override`) is ignored here.
    """
    if not isinstance(path, str) or not path:
        raise LayerError(f"layer must be a dotted module path such as 'layer4', got {path!r}.")
    if layout_override(path) is not None:
        path = path.rpartition(LAYOUT_SEPARATOR)[0]
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
