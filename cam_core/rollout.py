"""Attention rollout (Abnar & Zuidema 2020): how much each input patch flows into the prediction
through a stack of self-attention layers.

Every layer's attention ``A`` (heads fused by mean, max or min; optionally its lowest weights
discarded) is mixed with the identity for the residual connection, ``0.5·A + 0.5·I``, its rows
renormalized, and the layers multiplied from the first to the last: ``Â_L ⋯ Â_2 Â_1``.  The
class token's row of that product over the patch tokens (the mean over all query rows when
there is no class token) is the rollout map, laid on the patch grid.

Which tokens are patches of which modality, and whether a class token leads them, is found at
the first layer by perturbing one input at a time (:func:`cam_core.attention.token_owners`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .attention import (
    AttentionCall,
    AttentionRecorder,
    fuse_heads,
    heatmap,
    token_grids,
    token_owners,
)
from .errors import InputError, LayerError

__all__ = [
    "HEAD_FUSIONS",
    "RolloutResult",
    "check_rollout_options",
    "joint_attention",
    "record_self_attention",
    "rollout_result",
]

HEAD_FUSIONS = ("mean", "max", "min")


@dataclass
class RolloutResult:
    """The result of :meth:`cam_core.Explainer.rollout`.

    Attributes:
        raw: float32 ``(N, h, w)``: the rollout of the (first) patch grid, unnormalized.
        grids: ``{modality: float32 (N, h, w)}`` every patch grid's rollout (``"tokens"`` for
            a grid of tokens that mix modalities).
        cams: ``{modality: float32 (N, H, W) in [0, 1]}`` at each modality's input size,
            min-max scaled like a CAM.
        display: ``{modality: uint8 (N, H, W, 3)}`` the images, for overlays.
        layers: the self-attention layers multiplied, first to last.
        head_fusion, discard_ratio: the options used.
        class_token: index of the class token whose row was read, None when the mean over all
            query tokens was used.
        notices: sentences worth showing next to the result.
    """

    raw: np.ndarray
    grids: dict[str, np.ndarray]
    cams: dict[str, np.ndarray]
    display: dict[str, np.ndarray]
    layers: list[str]
    head_fusion: str
    discard_ratio: float
    class_token: int | None
    notices: list[str] = field(default_factory=list)

    def overlay(
        self, name: str, colormap: str | int = "jet", image_weight: float = 0.5
    ) -> np.ndarray:
        """The rollout of modality ``name`` drawn on its images: uint8 RGB ``(N, H, W, 3)``."""
        from .overlay import blend

        if name not in self.cams:
            raise InputError(
                f"no rollout for modality {name!r}; this result has {', '.join(self.cams)}.",
                modality=name,
            )
        return blend(self.display[name], self.cams[name], colormap, image_weight)


def check_rollout_options(head_fusion: str, discard_ratio: float) -> None:
    """InputError for an unknown head fusion or a discard ratio outside [0, 1)."""
    if head_fusion not in HEAD_FUSIONS:
        raise InputError(
            f"head_fusion {head_fusion!r} is not one of {', '.join(map(repr, HEAD_FUSIONS))}."
        )
    if not 0.0 <= float(discard_ratio) < 1.0:
        raise InputError(
            f"discard_ratio must be in [0, 1) (the share of lowest weights dropped), got "
            f"{discard_ratio!r}."
        )


def joint_attention(
    weights: Sequence[np.ndarray], head_fusion: str = "mean", discard_ratio: float = 0.0
) -> np.ndarray:
    """Rollout of self-attention weights ``[(N, heads, L, L)]`` (first layer first).

    Per layer: heads fused (``head_fusion``), the lowest ``discard_ratio`` share of each
    sample's fused weights set to 0, ``0.5·A + 0.5·I``, rows renormalized; then the product
    ``Â_last ⋯ Â_first``.  Returns float64 ``(N, L, L)``: row i is how much each input token
    flows into token i at the last layer.
    """
    check_rollout_options(head_fusion, discard_ratio)
    joint = None
    for layer in weights:
        fused = fuse_heads(np.asarray(layer, np.float64), head_fusion, axis=1)  # (N, L, L)
        count, length = fused.shape[0], fused.shape[-1]
        drop = int(length * length * discard_ratio)
        if drop > 0:
            flat = fused.reshape(count, -1)
            lowest = np.argpartition(flat, drop - 1, axis=1)[:, :drop]
            np.put_along_axis(flat, lowest, 0.0, axis=1)
        mixed = 0.5 * fused + 0.5 * np.eye(length)
        mixed /= mixed.sum(axis=-1, keepdims=True)
        joint = mixed if joint is None else mixed @ joint
    if joint is None:
        raise LayerError("rollout needs at least one self-attention layer.")
    return joint


def record_self_attention(
    modules: Sequence[nn.Module],
    wanted: Sequence[tuple[int, int]] | None,
    run: Callable[[Mapping[str, torch.Tensor]], Any],
    tensors: Mapping[str, torch.Tensor],
) -> tuple[list[AttentionCall], list[str | None]]:
    """The self-attention calls of ``modules`` in forward order, and the owner of each token at
    the first of them (see :func:`~cam_core.attention.token_owners`).

    ``wanted``: ``(module index, call)`` pairs to keep; None keeps every self-attention call.
    """
    with AttentionRecorder(modules) as recorder:
        run(tensors)
        calls = list(recorder.calls)
        if wanted is None:
            chosen = [c for c in calls if c.is_self_attention]
        else:
            keys = set(wanted)
            chosen = [c for c in calls if (c.module, c.call) in keys]
            missing = keys - {(c.module, c.call) for c in chosen}
            if missing:
                module, call = sorted(missing)[0]
                raise LayerError(
                    f"{type(modules[module]).__name__} layer has no call {call} in the forward "
                    "pass (calls are numbered from 0)."
                )
            crossed = [c for c in chosen if not c.is_self_attention]
            if crossed:
                raise LayerError(
                    f"a {type(modules[crossed[0].module]).__name__} layer attends from one set "
                    "of tokens to another (cross-attention): rollout multiplies self-attention "
                    "maps only. Leave it out of `layers`."
                )
        if not chosen:
            raise LayerError(
                "this model has no self-attention layer whose weights can be read "
                "(nn.MultiheadAttention, timm Attention, Hugging Face attention): rollout "
                "needs a ViT-style stack. Cross-attention layers are read one at a time "
                "(Explainer.attention)."
            )
        lengths = {c.weights.shape[-1] for c in chosen}
        if len(lengths) > 1:
            raise LayerError(
                f"the chosen self-attention layers have different token counts ({sorted(lengths)})"
                ": rollout multiplies maps of the same tokens. Choose layers of one stack."
            )
        owners, _ = token_owners(run, tensors, recorder, chosen[0])
    return chosen, owners


def rollout_result(
    calls: Sequence[AttentionCall],
    owners: Sequence[str | None],
    display: Mapping[str, np.ndarray],
    layers: Sequence[str],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
) -> RolloutResult:
    """Rollout of recorded self-attention ``calls`` (first to last) laid on the patch grids.

    ``owners``: the modality of each token (None for tokens no input moves, like a class token);
    ``display``: ``{modality: uint8 (N, H, W, 3)}``, whose sizes the CAMs take.
    """
    joint = joint_attention(
        [c.weights.cpu().numpy() for c in calls], head_fusion, discard_ratio
    )  # (N, L, L)
    sizes = {name: image.shape[1:3] for name, image in display.items()}
    segments = token_grids(list(owners), sizes)
    if not segments:
        raise LayerError(
            f"the {joint.shape[-1]} tokens of layer {layers[0]!r} form no patch grid of any "
            "modality, so the rollout cannot be laid on an image."
        )
    class_token = 0 if owners and owners[0] is None else None
    relevance = joint[:, class_token] if class_token is not None else joint.mean(axis=1)
    grids: dict[str, np.ndarray] = {}
    cams: dict[str, np.ndarray] = {}
    for seg in segments:
        part = relevance[:, seg.start : seg.start + seg.height * seg.width]
        grid = part.reshape(len(part), seg.height, seg.width).astype(np.float32)
        grids[seg.modality or "tokens"] = grid
        for name in [seg.modality] if seg.modality in display else list(display):
            cams.setdefault(name, heatmap(grid, sizes[name]))
    notices = []
    for name in display:
        if name not in cams:
            cams[name] = np.zeros((len(joint), *sizes[name]), np.float32)
            notices.append(f"{name}: no tokens of {name} in these layers (shown empty).")
    if class_token is None:
        notices.append("No class token: the rollout is the mean over all query tokens.")
    return RolloutResult(
        raw=next(iter(grids.values())),
        grids=grids,
        cams={name: cams[name] for name in display},
        display=dict(display),
        layers=list(layers),
        head_fusion=head_fusion,
        discard_ratio=float(discard_ratio),
        class_token=class_token,
        notices=notices,
    )
