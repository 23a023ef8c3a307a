"""How much each modality mattered: the target's probability lost when one input is blanked.

For each modality, that input alone is replaced by its baseline (:meth:`Modality.baseline_of`:
by default zeros of the normalized tensor, i.e. the mean input) and the batch is run again; the
contribution is the drop of the target class's probability, per sample.  One batched forward per
modality, no gradients.  A negative value means the model was *more* sure of the target without
that input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from .modality import Modality

__all__ = ["probability_drops"]


def probability_drops(
    probabilities: Callable[[Mapping[str, torch.Tensor]], np.ndarray],
    tensors: Mapping[str, torch.Tensor],
    modalities: Sequence[Modality],
    base: np.ndarray,
    targets: Sequence[int],
) -> dict[str, np.ndarray]:
    """``{modality: float32 (N,)}``: ``base[i, t_i]`` minus the probability of ``t_i`` with that
    modality at its baseline.

    Args:
        probabilities: runs the model on ``{name: (N, C, H, W)}`` → float ``(N, classes)``.
        tensors: the normalized inputs.
        modalities: every modality (its ``baseline`` says what replaces it).
        base: probabilities ``(N, classes)`` on the unchanged inputs.
        targets: the class per sample.
    """
    rows = np.arange(len(targets))
    columns = np.asarray(targets, dtype=np.int64)
    drops = {}
    for modality in modalities:
        blanked = dict(tensors)
        blanked[modality.name] = modality.baseline_of(tensors[modality.name])
        changed = probabilities(blanked)[rows, columns]
        drops[modality.name] = (base[rows, columns] - changed).astype(np.float32)
    return drops
