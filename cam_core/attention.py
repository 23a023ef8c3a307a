"""Raw attention maps of ``nn.MultiheadAttention`` layers, mapped back onto each modality.

A cross-attention fusion (RGB tokens query texture and frequency tokens) answers "where does
this RGB position look in the other modalities?".  :func:`read_attention` runs the model once
with the attention weights switched on (``need_weights=True, average_attn_weights=False``; the
model's own code is untouched and its outputs unchanged), and finds which tokens came from which
modality by perturbing one input at a time and seeing which query/key tokens move — so equal
sized modalities are never confused, whatever order the model concatenates them in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InputError, LayerError
from .layers import TokenSegment, patch_grid, token_segments

__all__ = ["AttentionResult", "read_attention"]


@dataclass
class AttentionResult:
    """Attention weights of one layer and the token grids they refer to.

    Attributes:
        weights: float32 ``(N, heads, Lq, Lk)``; each row sums to 1 over the keys.
        query_segments / key_segments: the grids of query / key tokens, one per modality
            they come from (``modality`` None when the tokens mix several modalities).
        display: ``{modality: uint8 (N, H, W, 3)}`` the images, for overlays.
        layer: the layer path.
    """

    weights: np.ndarray
    query_segments: tuple[TokenSegment, ...]
    key_segments: tuple[TokenSegment, ...]
    display: dict[str, np.ndarray]
    layer: str

    def query_index(self, query: int | tuple[int, int], modality: str | None = None) -> int:
        """Token index of a query: an index as is, or ``(row, col)`` in a query grid."""
        if isinstance(query, (int, np.integer)):
            if not 0 <= query < self.weights.shape[2]:
                raise InputError(f"query {query} is out of range: {self.weights.shape[2]} queries.")
            return int(query)
        segment = _segment(self.query_segments, modality, "query")
        row, col = query
        if not (0 <= row < segment.height and 0 <= col < segment.width):
            raise InputError(
                f"query position {(row, col)} is outside the {segment.height}×{segment.width} "
                "query grid."
            )
        return segment.start + row * segment.width + col

    def key_maps(
        self,
        query: int | tuple[int, int],
        *,
        sample: int = 0,
        head: int | None = None,
        query_modality: str | None = None,
    ) -> dict[str, np.ndarray]:
        """``{modality: float32 (h, w)}`` attention of one query over each key grid.

        ``head=None`` averages the heads.  Keys that mix modalities are keyed ``"tokens"``.
        """
        index = self.query_index(query, query_modality)
        weights = self.weights[sample, :, index]
        row = weights.mean(axis=0) if head is None else weights[head]
        maps = {}
        for seg in self.key_segments:
            part = row[seg.start : seg.start + seg.height * seg.width]
            maps[seg.modality or "tokens"] = part.reshape(seg.height, seg.width).astype(np.float32)
        return maps

    def key_heatmaps(self, query: int | tuple[int, int], **where: Any) -> dict[str, np.ndarray]:
        """``{modality: float32 (H, W) in [0, 1]}``: :meth:`key_maps` (same keywords) at each
        modality's size, min-max scaled like a CAM, ready for :func:`cam_core.overlay.blend`."""
        import cv2

        heatmaps = {}
        for name, grid in self.key_maps(query, **where).items():
            targets = [name] if name in self.display else list(self.display)
            for target in targets:
                height, width = self.display[target].shape[1:3]
                resized = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
                span = resized.max() - resized.min()
                scaled = (resized - resized.min()) / span if span > 0 else resized * 0
                heatmaps[target] = scaled.astype(np.float32)
        return heatmaps


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


def read_attention(
    module: nn.Module,
    call: int,
    run: Callable[[Mapping[str, torch.Tensor]], Any],
    tensors: Mapping[str, torch.Tensor],
) -> tuple[np.ndarray, tuple[TokenSegment, ...], tuple[TokenSegment, ...]]:
    """Attention weights of call ``call`` of ``module`` and its query/key token grids.

    ``run(tensors)`` runs the model (under no_grad) on ``{modality: (N, C, H, W)}``.
    Returns ``(weights (N, heads, Lq, Lk), query segments, key segments)``.
    """
    if not isinstance(module, nn.MultiheadAttention):
        raise LayerError(
            f"attention maps are read from nn.MultiheadAttention layers; this one is "
            f"{type(module).__name__}. Pick an nn.MultiheadAttention in the layer tree."
        )
    captured: dict[str, Any] = {}
    seen = {"n": 0}

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
        index = seen["n"]
        seen["n"] += 1
        if index != call:
            return
        query = args[0] if args else kwargs["query"]
        key = args[1] if len(args) > 1 else kwargs["key"]
        if not module.batch_first:
            query, key = query.transpose(0, 1), key.transpose(0, 1)
        captured.update(weights=output[1], query=query.detach(), key=key.detach())

    handles = [
        module.register_forward_pre_hook(pre_hook, with_kwargs=True),
        module.register_forward_hook(hook, with_kwargs=True),
    ]
    try:
        run(tensors)
        if "weights" not in captured:
            raise LayerError(
                f"the attention layer was called {seen['n']} time(s) in the forward pass; "
                f"there is no call {call}."
            )
        weights = captured["weights"].detach().float().cpu()
        base_query, base_key = captured["query"], captured["key"]
        owners_q, owners_k = _token_owners(run, tensors, captured, seen, base_query, base_key)
    finally:
        for handle in handles:
            handle.remove()
    if weights.dim() == 3:  # a subclass that averaged the heads anyway
        weights = weights[:, None]
    sizes = {name: tuple(t.shape[-2:]) for name, t in tensors.items()}
    return (
        weights.numpy(),
        _segments(owners_q, sizes),
        _segments(owners_k, sizes),
    )


def _token_owners(run, tensors, captured, seen, base_query, base_key, trials: int = 3):
    """Which modality each query/key token comes from: perturb one input at a time.

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
            seen["n"] = 0
            run(perturbed)
            q, k = _moved(captured["query"], base_query), _moved(captured["key"], base_key)
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


def _segments(
    owners: list[str | None], sizes: dict[str, tuple[int, int]]
) -> tuple[TokenSegment, ...]:
    """Grids of contiguous runs of tokens from one modality (or the mixed tokens' grid)."""
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
        if owner == "*":
            found = token_segments(count, sizes)
            if found is not None and len(found[0]) == 1:
                seg = found[0][0]
                segments.append(TokenSegment(start + seg.start, seg.height, seg.width, None))
            continue
        grid = patch_grid(count, sizes[owner])
        if grid is None:
            root = int(round(count**0.5))
            grid = (root, root) if root * root == count else None
        if grid is not None:
            segments.append(TokenSegment(start, grid[0], grid[1], owner))
    return tuple(segments)
