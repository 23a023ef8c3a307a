"""What a layer x method comparison grid needs beyond :meth:`Explainer.compare`.

* :func:`suggest_layers` — a default set of rows: the model's recommended layer, each modality's
  own branch (where the explainer can find branches), and a few layers across the depth.
* :func:`fast_methods` — the default columns (methods not marked slow).
* :func:`grid_scale` — one modality's maps of every cell on a shared scale (raw values), or
  each on its own (grad-cam's per-image scaling).
* :func:`rank_cells` — cells ordered by a faithfulness score, most faithful first.

The app's Compare page and the command line call these; nothing here imports streamlit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .faithfulness import FAITHFULNESS_METRICS
from .result import CamResult
from .scale import shared_scale

__all__ = ["fast_methods", "grid_scale", "rank_cells", "suggest_layers"]

Cell = tuple[str, str]

# Layers whose map adds nothing to their neighbour's: an activation or a no-op repeats the
# module before it.
_PASS_THROUGH = {
    "ReLU", "ReLU6", "GELU", "SiLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Hardswish",
    "Dropout", "Dropout2d", "Identity", "Flatten",
}  # fmt: skip


def fast_methods(explainer: Any) -> list[str]:
    """The explainer's methods not marked slow (a forward and a backward or so each)."""
    return [name for name in explainer.methods() if not explainer.method_info(name).slow]


def suggest_layers(explainer: Any, tree: Sequence[Any], count: int = 4) -> list[str]:
    """Up to ``count`` CAM-ready layers, in forward order: the recommended layer, each
    modality's branch, then layers spread evenly across the depth.

    Args:
        explainer: the model's :class:`~cam_core.Explainer` (its ``default_layer``, and its
            ``branches()`` when it has them).
        tree: :meth:`Explainer.layer_tree` rows.
    """
    ready = [row for row in tree if row.ready]
    order = [row.path for row in ready]
    picked: list[str] = []
    if explainer.default_layer in order:
        picked.append(explainer.default_layer)
    branches = getattr(explainer, "branches", None)
    if callable(branches):
        try:
            found = branches()
        except Exception:  # noqa: BLE001 — a suggestion only: without branches, spread evenly
            found = {}
        picked += [layer for layer in (found or {}).values() if layer in order]
    # The outermost ready modules (a branch, not its inner conv) that compute something.
    outer = [
        row.path
        for row in ready
        if row.type not in _PASS_THROUGH and row.path.rpartition(".")[0] not in order
    ]
    candidates = outer or order
    if candidates:
        spread = np.linspace(0, len(candidates) - 1, num=min(count, len(candidates)))
        for index in spread.round().astype(int):
            if len(dict.fromkeys(picked)) >= count:
                break
            picked.append(candidates[index])
    chosen = set(list(dict.fromkeys(picked))[:count])
    return [path for path in order if path in chosen]


def grid_scale(
    grid: Mapping[Cell, CamResult], modality: str, shared: bool
) -> tuple[dict[Cell, np.ndarray], float]:
    """One modality's maps of every cell, float32 ``(N, H, W)`` in ``[0, 1]``, and the raw value
    at the top of the scale.

    ``shared=False``: each map as grad-cam scales it (``CamResult.cams``; ``high`` is 1.0).
    ``shared=True``: the raw maps' positive parts over one maximum across all cells and
    samples (:func:`~cam_core.scale.shared_scale`), at the modality's input size; ``high`` is
    that maximum.  Cells without a raw map keep their own scaling.
    """
    if not shared:
        return {cell: result.cams[modality] for cell, result in grid.items()}, 1.0
    with_raw = [cell for cell, result in grid.items() if modality in result.raw]
    sizes = [grid[cell].cams[modality].shape[-2:] for cell in with_raw]
    scaled, high = shared_scale([grid[cell].raw[modality] for cell in with_raw], sizes)
    maps = {cell: result.cams[modality] for cell, result in grid.items()}
    maps.update(zip(with_raw, scaled))
    return maps, high


def rank_cells(
    scores: Mapping[Cell, Mapping[str, np.ndarray]], metric: str, modality: str, sample: int = 0
) -> list[Cell]:
    """Cells ordered most faithful first by ``scores[cell][modality][sample]`` (the direction
    is the metric's: lower first for deletion); cells without that score last."""
    better_high = FAITHFULNESS_METRICS[metric].higher_is_better

    def key(cell: Cell) -> tuple[bool, float]:
        values = scores.get(cell, {}).get(modality)
        if values is None or not np.isfinite(values[sample]):
            return (True, 0.0)
        value = float(values[sample])
        return (False, -value if better_high else value)

    return sorted(scores, key=key)
