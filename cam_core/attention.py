"""Raw attention maps of attention layers, mapped back onto each modality.

A cross-attention fusion (RGB tokens query texture and frequency tokens) answers "where does
this RGB position look in the other modalities?"; a ViT's self-attention, where one patch looks
in its own image.  :func:`read_attention` runs the model once with hooks that read the weights
of one layer — the model's own code is untouched and its outputs unchanged — and finds which
tokens came from which modality by perturbing one input at a time and seeing which query/key
tokens move, so equal sized modalities are never confused, whatever order the model
concatenates them in.

Three kinds of layer are read, each by a small installer function:

* ``nn.MultiheadAttention``: called with ``need_weights=True, average_attn_weights=False``.
* timm ``Attention`` (ViT, DeiT, ...): its fused kernel never materializes the weights, so
  ``softmax(q kᵀ · scale)`` is recomputed from the block's own q and k (its ``q_norm``/``k_norm``
  outputs) — the block itself still runs as it always does.
* Hugging Face attention: eager mode returns the weights with the output; ViT-style classes
  running scaled-dot-product attention get them recomputed from their ``q_proj``/``k_proj``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .errors import InputError, LayerError
from .layers import TokenSegment, token_segments

__all__ = [
    "AttentionCall",
    "AttentionRecorder",
    "AttentionResult",
    "Head",
    "attention_kind",
    "fuse_heads",
    "heatmap",
    "read_attention",
    "token_grids",
    "token_owners",
]

#: A head index, or ``"mean"`` / ``"max"`` over the heads (None: the mean).
Head = int | str | None


def fuse_heads(weights: np.ndarray, head: Head, axis: int) -> np.ndarray:
    """One head of ``weights`` along ``axis``, or their mean/max/min (``head`` a name)."""
    if head is None or head == "mean":
        return weights.mean(axis=axis)
    if head in ("max", "min"):
        return getattr(weights, head)(axis=axis)
    if isinstance(head, (int, np.integer)) and 0 <= head < weights.shape[axis]:
        return np.take(weights, int(head), axis=axis)
    raise InputError(
        f"head {head!r} is not one of 'mean', 'max', 'min' or 0..{weights.shape[axis] - 1}."
    )


def heatmap(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 ``(h, w)`` or ``(N, h, w)`` → ``(…, H, W)`` in [0, 1]: bilinear resize (half-pixel
    centres) to ``size = (H, W)``, then per-map min-max like a CAM (a constant map gives 0)."""
    import cv2

    grids = np.asarray(grid, np.float32)
    flat = grids.reshape(-1, *grids.shape[-2:])
    height, width = size
    out = np.empty((len(flat), height, width), np.float32)
    for i, one in enumerate(flat):
        resized = cv2.resize(one, (width, height), interpolation=cv2.INTER_LINEAR)
        span = resized.max() - resized.min()
        out[i] = (resized - resized.min()) / span if span > 0 else 0.0
    return out.reshape(*grids.shape[:-2], height, width)


@dataclass
class AttentionResult:
    """Attention weights of one layer and the token grids they refer to.

    Attributes:
        weights: float32 ``(N, heads, Lq, Lk)``; each row sums to 1 over the keys.
        query_segments / key_segments: the grids of query / key tokens, one per modality
            they come from (``modality`` None when the tokens mix several modalities).
        display: ``{modality: uint8 (N, H, W, 3)}`` the images, for overlays.
        layer: the layer path.
        kind: which kind of attention layer it is (see :func:`attention_kind`).
    """

    weights: np.ndarray
    query_segments: tuple[TokenSegment, ...]
    key_segments: tuple[TokenSegment, ...]
    display: dict[str, np.ndarray]
    layer: str
    kind: str = "nn.MultiheadAttention"

    @property
    def heads(self) -> int:
        """Number of attention heads."""
        return int(self.weights.shape[1])

    @property
    def query_modalities(self) -> list[str]:
        """Modalities whose tokens are queries (on whose image a query can be picked); a grid
        of mixed tokens is drawn on every modality."""
        return _drawn_on([s.modality for s in self.query_segments], self.display)

    def query_index(self, query: int | tuple[int, int], modality: str | None = None) -> int:
        """Token index of a query: an index as is, or ``(row, col)`` in a query grid."""
        if isinstance(query, (int, np.integer)):
            if not 0 <= query < self.weights.shape[2]:
                raise InputError(f"query {query} is out of range: {self.weights.shape[2]} queries.")
            return int(query)
        segment = self.query_segment(modality)
        row, col = query
        if not (0 <= row < segment.height and 0 <= col < segment.width):
            raise InputError(
                f"query position {(row, col)} is outside the {segment.height}×{segment.width} "
                "query grid."
            )
        return segment.start + row * segment.width + col

    def query_segment(self, modality: str | None = None) -> TokenSegment:
        """The query grid of ``modality`` (the first grid when None, or when the grid mixes
        modalities)."""
        return _segment(self.query_segments, modality, "query")

    def query_at(
        self, modality: str, x: float, y: float, shown: tuple[int, int] | None = None
    ) -> tuple[int, int]:
        """``(row, col)`` in ``modality``'s query grid of the pixel ``(x, y)`` clicked on its
        image, shown ``shown = (width, height)`` pixels large (default: the image's size)."""
        segment = self.query_segment(modality)
        height, width = self.display[modality].shape[1:3]
        shown_w, shown_h = shown or (width, height)
        row = int(np.clip(y / max(shown_h, 1) * segment.height, 0, segment.height - 1))
        col = int(np.clip(x / max(shown_w, 1) * segment.width, 0, segment.width - 1))
        return row, col

    def query_box(self, modality: str, query: tuple[int, int]) -> tuple[int, int, int, int]:
        """Pixel box ``(x0, y0, x1, y1)`` (exclusive ends) of query ``(row, col)`` on the
        ``modality`` image: where to mark the chosen query."""
        segment = self.query_segment(modality)
        height, width = self.display[modality].shape[1:3]
        row, col = query
        return (
            int(col * width / segment.width),
            int(row * height / segment.height),
            int((col + 1) * width / segment.width),
            int((row + 1) * height / segment.height),
        )

    def query_image(
        self, modality: str, query: tuple[int, int], *, sample: int = 0, size: int = 256
    ) -> np.ndarray:
        """uint8 ``(h, w, 3)``: sample ``sample`` of ``modality``'s image enlarged (nearest
        neighbour, an integer factor, to about ``size`` px on its longer side) with query
        ``(row, col)``'s cell outlined — the picture to click on to choose a query."""
        import cv2

        image = self.display[modality][sample]
        scale = max(1, round(size / max(image.shape[:2])))
        big = np.ascontiguousarray(np.repeat(np.repeat(image, scale, axis=0), scale, axis=1))
        x0, y0, x1, y1 = (v * scale for v in self.query_box(modality, query))
        cv2.rectangle(big, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 0), 3)  # dark rim: any image
        cv2.rectangle(big, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
        return big

    def key_maps(
        self,
        query: int | tuple[int, int],
        *,
        sample: int = 0,
        head: Head = None,
        query_modality: str | None = None,
    ) -> dict[str, np.ndarray]:
        """``{modality: float32 (h, w)}`` attention of one query over each key grid.

        ``head``: an index, ``"mean"`` (also None) or ``"max"`` over the heads.  Keys that mix
        modalities are keyed ``"tokens"``.
        """
        index = self.query_index(query, query_modality)
        row = fuse_heads(self.weights[sample, :, index], head, axis=0)
        maps = {}
        for seg in self.key_segments:
            part = row[seg.start : seg.start + seg.height * seg.width]
            maps[seg.modality or "tokens"] = part.reshape(seg.height, seg.width).astype(np.float32)
        return maps

    def key_heatmaps(self, query: int | tuple[int, int], **where: Any) -> dict[str, np.ndarray]:
        """``{modality: float32 (H, W) in [0, 1]}``: :meth:`key_maps` (same keywords) at each
        modality's size, min-max scaled like a CAM, ready for :func:`cam_core.overlay.blend`.
        Mixed tokens (``"tokens"``) are drawn on every modality."""
        heatmaps = {}
        for name, grid in self.key_maps(query, **where).items():
            for target in _drawn_on([None if name == "tokens" else name], self.display):
                heatmaps[target] = heatmap(grid, self.display[target].shape[1:3])
        return heatmaps


def _drawn_on(owners: Sequence[str | None], display: Mapping[str, np.ndarray]) -> list[str]:
    """The modalities a token grid is drawn on: its own, or all for mixed tokens."""
    names: list[str] = []
    for owner in owners:
        for name in [owner] if owner in display else list(display):
            if name not in names:
                names.append(name)
    return names


def _segment(segments: tuple[TokenSegment, ...], modality: str | None, what: str) -> TokenSegment:
    if not segments:
        raise InputError(f"the {what} tokens have no known grid; give a token index instead.")
    if modality is None:
        return segments[0]
    for seg in segments:
        if seg.modality == modality:
            return seg
    found = ", ".join(str(s.modality) for s in segments)
    raise InputError(f"no {what} tokens of {modality!r} in this layer (it has {found}).")


# -- readers: one small function per kind of attention module ------------------------------------

#: ``report(weights (N, heads, Lq, Lk), query tokens (N, Lq, C), key tokens (N, Lk, C))``
Report = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
Installer = Callable[[nn.Module, Report], list[RemovableHandle]]

#: Hugging Face attention classes whose ``forward`` is ViT's (``q_proj``/``k_proj``, ``scaling``,
#: additive ``attention_mask``): their weights are recomputed from q and k when the model runs
#: scaled-dot-product attention, which returns none.  Others must run in eager mode.
HF_RECOMPUTABLE = frozenset(
    {
        "ASTAttention",
        "BeitAttention",
        "DeiTAttention",
        "Dinov2Attention",
        "Dinov2WithRegistersAttention",
        "IJepaAttention",
        "ViTAttention",
        "ViTMAEAttention",
        "ViTMSNAttention",
        "VivitAttention",
    }
)


_EAGER_FIX = (
    "Load the model with attn_implementation='eager' (from_pretrained(..., "
    "attn_implementation='eager'), or call model.set_attn_implementation('eager'))."
)


def _argument(args: tuple, kwargs: dict, position: int, name: str, default: Any = None) -> Any:
    return args[position] if len(args) > position else kwargs.get(name, default)


def _mha_hooks(module: nn.MultiheadAttention, report: Report) -> list[RemovableHandle]:
    """``nn.MultiheadAttention``: ask it for per-head weights (its own output, unchanged)."""

    def pre_hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        args = list(args)
        # forward(query, key, value, key_padding_mask, need_weights, attn_mask, average_...)
        for position, name, value in (
            (4, "need_weights", True),
            (6, "average_attn_weights", False),
        ):
            if len(args) > position:
                args[position] = value
            else:
                kwargs[name] = value
        return tuple(args), kwargs

    def hook(_module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        query = _argument(args, kwargs, 0, "query")
        key = _argument(args, kwargs, 1, "key")
        if not module.batch_first:
            query, key = query.transpose(0, 1), key.transpose(0, 1)
        weights = output[1]
        if weights.dim() == 3:  # a subclass that averaged the heads anyway
            weights = weights[:, None]
        report(weights, query, key)

    return [
        module.register_forward_pre_hook(pre_hook, with_kwargs=True),
        module.register_forward_hook(hook, with_kwargs=True),
    ]


def _masked(scores: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """``scores`` with an attention mask applied the way scaled_dot_product_attention does."""
    if causal:
        length_q, length_k = scores.shape[-2:]
        keep = torch.ones(length_q, length_k, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask.float()


def _softmax_of(q: torch.Tensor, k: torch.Tensor, scale: float, mask: Any, causal: bool):
    """softmax(q kᵀ · scale + mask), float32: q, k ``(N, heads, L, d)`` → ``(N, heads, Lq, Lk)``."""
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    return _masked(scores, mask, bool(causal)).softmax(dim=-1)


def _keeper(seen: dict[str, torch.Tensor], name: str) -> Callable[..., None]:
    """A forward hook keeping a submodule's output in ``seen[name]`` (its last call's)."""

    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        seen[name] = output

    return hook


def _timm_hooks(module: nn.Module, report: Report) -> list[RemovableHandle]:
    """timm ``Attention``: its fused kernel keeps no weights, so they are recomputed from the
    block's own q and k (the outputs of its ``q_norm``/``k_norm``, called on every forward)."""
    seen: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, args: tuple, kwargs: dict, _output: Any) -> None:
        x = _argument(args, kwargs, 0, "x")
        mask = _argument(args, kwargs, 1, "attn_mask")
        causal = _argument(args, kwargs, 2, "is_causal", False)
        weights = _softmax_of(seen.pop("q"), seen.pop("k"), module.scale, mask, causal)
        report(weights, x, x)

    return [
        module.q_norm.register_forward_hook(_keeper(seen, "q")),
        module.k_norm.register_forward_hook(_keeper(seen, "k")),
        module.register_forward_hook(hook, with_kwargs=True),
    ]


def _hf_hooks(module: nn.Module, report: Report) -> list[RemovableHandle]:
    """Hugging Face attention: in eager mode the module returns ``(output, weights)``; under
    scaled-dot-product attention (``weights`` None) ViT-style classes get them recomputed from
    their own ``q_proj``/``k_proj`` outputs."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    if type(module).__name__ in HF_RECOMPUTABLE:
        handles += [
            module.q_proj.register_forward_hook(_keeper(seen, "q")),
            module.k_proj.register_forward_hook(_keeper(seen, "k")),
        ]

    def heads(tokens: torch.Tensor) -> torch.Tensor:
        return tokens.view(*tokens.shape[:-1], -1, module.head_dim).transpose(1, 2)

    def hook(_module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        hidden = _argument(args, kwargs, 0, "hidden_states")
        context = kwargs.get("encoder_hidden_states")
        key = hidden if context is None else context
        weights = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
        if isinstance(weights, torch.Tensor):
            report(weights, hidden, key)
            return
        if "q" not in seen:
            raise LayerError(
                f"this {type(module).__name__} runs with attn_implementation="
                f"{_hf_implementation(module)!r}, which returned no attention weights. "
                f"{_EAGER_FIX}"
            )
        mask = _argument(args, kwargs, 1, "attention_mask")
        weights = _softmax_of(
            heads(seen.pop("q")), heads(seen.pop("k")), module.scaling, mask, False
        )
        report(weights, hidden, key)

    return [*handles, module.register_forward_hook(hook, with_kwargs=True)]


def _hf_implementation(module: nn.Module) -> str | None:
    return getattr(getattr(module, "config", None), "_attn_implementation", None)


def _is_timm_attention(module: nn.Module) -> bool:
    timm = sys.modules.get("timm.layers")  # a timm module exists only once timm is imported
    return timm is not None and isinstance(module, timm.Attention)


def _is_hf_module(module: nn.Module) -> bool:
    kind = type(module)
    return kind.__module__.startswith("transformers.") and kind.__name__.endswith("Attention")


def _is_hf_attention(module: nn.Module) -> bool:
    """A Hugging Face attention module whose weights can be read: eager mode, or a ViT-style
    class (recomputed from q and k)."""
    return _is_hf_module(module) and (
        type(module).__name__ in HF_RECOMPUTABLE or _hf_implementation(module) == "eager"
    )


def attention_kind(module: nn.Module) -> str | None:
    """The kind of attention layer ``module`` is, when its weights can be read; else None."""
    if isinstance(module, nn.MultiheadAttention):
        return "nn.MultiheadAttention"
    if _is_timm_attention(module):
        return "timm Attention"
    if _is_hf_attention(module):
        return "transformers attention"
    return None


def _installer(module: nn.Module) -> Installer:
    kind = attention_kind(module)
    if kind is None and _is_hf_module(module):
        raise LayerError(
            f"this {type(module).__name__} runs with attn_implementation="
            f"{_hf_implementation(module)!r}, which returns no attention weights. "
            f"{_EAGER_FIX}"
        )
    if kind is None:
        raise LayerError(
            f"attention maps are read from nn.MultiheadAttention, timm Attention and Hugging Face "
            f"attention layers (eager mode, or ViT-style); this one is {type(module).__name__}. "
            "Pick one of Explainer.attention_layers()."
        )
    return {
        "nn.MultiheadAttention": _mha_hooks,
        "timm Attention": _timm_hooks,
        "transformers attention": _hf_hooks,
    }[kind]


# -- recording ----------------------------------------------------------------------------------


@dataclass
class AttentionCall:
    """One call of one attention module: which module (index into the recorded ones), which
    call of it, its weights float32 ``(N, heads, Lq, Lk)`` and its query/key tokens
    ``(N, L, C)``."""

    module: int
    call: int
    weights: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor

    @property
    def is_self_attention(self) -> bool:
        """Queries and keys are the same tokens."""
        return self.query.shape == self.key.shape and bool(torch.equal(self.query, self.key))


class _Stop(Exception):
    """Raised by a hook to end a forward once the call needed has been recorded."""


class AttentionRecorder:
    """Hooks on attention modules recording every call, in forward order.

    Use as a context manager: hooks are installed on entry and removed on exit (also after an
    error).  The model's outputs are those it computes without the recorder.
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        self.installers = [_installer(m) for m in self.modules]
        self.calls: list[AttentionCall] = []
        self._handles: list[RemovableHandle] = []
        self._stop: tuple[int, int] | None = None

    def __enter__(self) -> AttentionRecorder:
        try:
            for index, (module, install) in enumerate(zip(self.modules, self.installers)):
                self._handles += install(module, self._reporter(index))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook (safe to call twice)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def reset(self) -> None:
        """Forget the recorded calls (before another forward)."""
        self.calls = []

    def run_until(
        self,
        run: Callable[[Mapping[str, torch.Tensor]], Any],
        tensors: Mapping[str, torch.Tensor],
        module: int,
        call: int,
    ) -> AttentionCall | None:
        """Record a forward of ``run(tensors)`` up to call ``call`` of module ``module`` and
        return that call: the rest of the forward is skipped (no output is needed)."""
        self.reset()
        self._stop = (module, call)
        try:
            run(tensors)
        except _Stop:
            pass
        finally:
            self._stop = None
        return self.find(module, call)

    def find(self, module: int, call: int) -> AttentionCall | None:
        """Call ``call`` of module ``module``, if it ran."""
        for record in self.calls:
            if record.module == module and record.call == call:
                return record
        return None

    def _reporter(self, index: int) -> Report:
        def report(weights: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> None:
            call = sum(1 for c in self.calls if c.module == index)
            self.calls.append(
                AttentionCall(index, call, weights.detach().float(), query.detach(), key.detach())
            )
            if self._stop == (index, call):
                raise _Stop

        return report


def read_attention(
    module: nn.Module,
    call: int,
    run: Callable[[Mapping[str, torch.Tensor]], Any],
    tensors: Mapping[str, torch.Tensor],
) -> tuple[np.ndarray, tuple[TokenSegment, ...], tuple[TokenSegment, ...]]:
    """Attention weights of call ``call`` of ``module`` and its query/key token grids.

    ``run(tensors)`` runs the model (under no_grad) on ``{modality: (N, C, H, W)}``.
    Returns ``(weights float32 (N, heads, Lq, Lk), query segments, key segments)``.
    """
    with AttentionRecorder([module]) as recorder:
        run(tensors)
        found = recorder.find(0, call)
        if found is None:
            raise LayerError(
                f"the attention layer was called {len(recorder.calls)} time(s) in the forward "
                f"pass; there is no call {call}."
            )
        owners_q, owners_k = token_owners(run, tensors, recorder, found)
    sizes = {name: tuple(t.shape[-2:]) for name, t in tensors.items()}
    weights = found.weights.cpu().numpy()
    return weights, token_grids(owners_q, sizes), token_grids(owners_k, sizes)


def token_owners(
    run: Callable[[Mapping[str, torch.Tensor]], Any],
    tensors: Mapping[str, torch.Tensor],
    recorder: AttentionRecorder,
    base: AttentionCall,
    trials: int = 3,
) -> tuple[list[str | None], list[str | None]]:
    """Which modality each query/key token of ``base`` comes from: perturb one input at a time.

    A token is owned by a modality when perturbing that input (and no other) moves it; several
    random perturbations are combined, since a token behind a ReLU can stay put for one.
    Returns two lists of owners per token (None: no input moves it, e.g. a class token;
    ``"*"``: several do, i.e. the tokens already mix modalities).
    """
    generator = torch.Generator(device="cpu").manual_seed(0)
    moved_q: dict[str, torch.Tensor] = {}
    moved_k: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        for _ in range(trials):
            noise = torch.randn(tensor.shape, generator=generator).to(tensor.device)
            perturbed = dict(tensors)
            perturbed[name] = tensor + noise * 3 * (tensor.std() + 1.0)
            again = recorder.run_until(run, perturbed, base.module, base.call)
            q, k = _moved(again.query, base.query), _moved(again.key, base.key)
            moved_q[name] = moved_q[name] | q if name in moved_q else q
            moved_k[name] = moved_k[name] | k if name in moved_k else k
    return _owners(moved_q), _owners(moved_k)


def _moved(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """bool (L,): tokens whose vectors changed, in any sample."""
    scale = before.abs().amax().clamp_min(1e-6)
    return ((after - before).abs() > 1e-5 * scale).any(dim=-1).any(dim=0).cpu()


def _owners(moved: dict[str, torch.Tensor]) -> list[str | None]:
    names = list(moved)
    length = len(next(iter(moved.values())))
    owners: list[str | None] = []
    for i in range(length):
        movers = [n for n in names if moved[n][i]]
        owners.append(movers[0] if len(movers) == 1 else ("*" if movers else None))
    # A token that never moved between two tokens of one modality is that modality's too.
    for i in range(1, length - 1):
        if owners[i] is None and owners[i - 1] == owners[i + 1] not in (None, "*"):
            owners[i] = owners[i - 1]
    return owners


def token_grids(
    owners: list[str | None], sizes: dict[str, tuple[int, int]]
) -> tuple[TokenSegment, ...]:
    """Grids of contiguous runs of tokens from one modality (a leading class token skipped), or
    the grids of mixed tokens (split per modality when they concatenate several grids)."""
    runs: list[tuple[str | None, int, int]] = []
    for i, owner in enumerate(owners):
        if runs and runs[-1][0] == owner:
            runs[-1] = (owner, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((owner, i, 1))
    segments = []
    for owner, start, count in runs:
        if owner is None:
            continue
        found = token_segments(count, sizes if owner == "*" else {owner: sizes[owner]})
        if found is None:
            continue
        for seg in found[0]:
            name = seg.modality if owner == "*" else owner
            segments.append(TokenSegment(start + seg.start, seg.height, seg.width, name))
    return tuple(segments)
