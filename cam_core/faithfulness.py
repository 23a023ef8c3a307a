"""Faithfulness of a heatmap to the model: does removing what it highlights change the answer?

The heatmap of one modality ranks that modality's pixels; the model is then run on copies of the
input in which a growing share of them is taken away (the other modalities untouched):

* ``"deletion"`` — the most relevant pixels first are replaced by the modality's baseline, in
  ``steps`` equal steps from none to all; the score is the area under the target class's
  probability curve, in ``[0, 1]``.  **Lower is more faithful**: the probability falls fast.
* ``"insertion"`` — starting from the baseline, the most relevant pixels first are put back;
  area under the curve in ``[0, 1]``.  **Higher is more faithful.**

Both are Petsiuk et al. (RISE, 2018), run as batched forwards without gradients.  grad-cam's own
metrics are offered as they are (``pytorch_grad_cam.metrics``), each with its own range:

* ``"road"`` — ROAD (Rong et al., 2022) combined: the mean change in the target probability when
  the least relevant pixels are imputed minus when the most relevant are, over 20/40/60/80 %,
  halved: in ``[-1, 1]``, higher is more faithful.  Imputation solves a sparse system per image
  and percentile: slow.
* ``"confidence-drop"`` — the drop of the target probability when the input is multiplied by
  the heatmap (grad-cam's ``DropInConfidence``), in ``[0, 1]``, lower is more faithful.

The *baseline* of a modality is :meth:`Modality.baseline_of`: ``Modality.baseline`` where the
modality has one (a number, a tensor that broadcasts to the input, or a function of the input
tensor), otherwise zeros of the normalized tensor — the mean input when the modality has a mean
and std.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .modality import Batch, Modality

__all__ = [
    "FAITHFULNESS_METRICS",
    "FaithfulnessMetric",
    "area_under_curve",
    "evaluate",
    "relevance_order",
]

#: ``bind(tensors, explained)`` -> the model as a function of ``explained``'s tensor, the other
#: modalities bound to ``tensors`` (batch 1 or the incoming batch); it returns logits.
Binder = Callable[[Mapping[str, torch.Tensor], str], nn.Module]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FaithfulnessMetric:
    """What a faithfulness score means.

    Attributes:
        name: the ``metric=`` value.
        label: a short human name.
        higher_is_better: the direction of a more faithful map.
        low, high: the range of the score.
        slow: True when it costs far more than a few batched forwards per sample.
        description: one sentence for the UI.
    """

    name: str
    label: str
    higher_is_better: bool
    low: float
    high: float
    slow: bool
    description: str


FAITHFULNESS_METRICS: dict[str, FaithfulnessMetric] = {
    m.name: m
    for m in (
        FaithfulnessMetric(
            "deletion", "Deletion AUC", False, 0.0, 1.0, False,
            "Area under the target probability as the most relevant pixels are replaced by "
            "the baseline; lower is more faithful.",
        ),
        FaithfulnessMetric(
            "insertion", "Insertion AUC", True, 0.0, 1.0, False,
            "Area under the target probability as the most relevant pixels are put back "
            "onto the baseline; higher is more faithful.",
        ),
        FaithfulnessMetric(
            "road", "ROAD (grad-cam)", True, -1.0, 1.0, True,
            "grad-cam's ROADCombined over 20/40/60/80 %: least- minus most-relevant-first "
            "imputation; higher is more faithful. Slow (a sparse solve per image).",
        ),
        FaithfulnessMetric(
            "confidence-drop", "Drop in confidence (grad-cam)", False, 0.0, 1.0, False,
            "grad-cam's DropInConfidence: probability lost when the input is multiplied by "
            "the heatmap; lower is more faithful.",
        ),
    )
}  # fmt: skip

_ROAD_PERCENTILES = (20, 40, 60, 80)


def evaluate(
    bind: Binder,
    modalities: Sequence[Modality],
    batch: Batch,
    cams: Mapping[str, np.ndarray],
    targets: Sequence[int],
    metric: str = "deletion",
    steps: int = 20,
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Scores ``{modality: float32 (N,)}`` of the maps ``cams`` for the classes ``targets``.

    Runs without gradients; the caller holds the model's lock and eval mode.  ``cams[m]`` is
    ``(N, H, W)`` (any size: resized bilinearly to the modality's input), ``targets`` one class
    per sample.  ``progress(done, total)`` is called after each model run.
    """
    info = _metric(metric)
    steps = _check_steps(steps)
    by_name = {m.name: m for m in modalities}
    maps = _check_cams(cams, batch, by_name)
    plan = [(name, chunk) for name in maps for chunk in _chunks(batch.size, steps, batch_size)]
    if info.name in ("road", "confidence-drop"):
        plan = [(name, None) for name in maps]
    total, done = len(plan), 0
    scores: dict[str, np.ndarray] = {}
    for name, cam in maps.items():
        x = batch.tensors[name]
        baseline = by_name[name].baseline_of(x)
        if info.name in ("deletion", "insertion"):
            curves = []
            for _, samples in (item for item in plan if item[0] == name):
                curves.append(
                    _curves(bind, batch, name, x, baseline, cam, targets, samples, steps, info)
                )
                done += 1
                if progress is not None:
                    progress(done, total)
            scores[name] = area_under_curve(np.concatenate(curves))
        else:
            scores[name] = _grad_cam_metric(bind, batch, name, x, cam, targets, info.name)
            done += 1
            if progress is not None:
                progress(done, total)
    return scores


def relevance_order(cam: np.ndarray) -> np.ndarray:
    """Pixel indices of each map ``(N, H, W)``, most relevant first: int64 ``(N, H*W)``.

    Ties keep row-major order (a stable sort), so a constant map removes pixels top-left first.
    """
    flat = np.asarray(cam, np.float64).reshape(len(cam), -1)
    flat = np.nan_to_num(flat, nan=-np.inf)
    return np.argsort(-flat, axis=1, kind="stable")


def area_under_curve(curves: np.ndarray) -> np.ndarray:
    """Trapezoidal area under ``(N, steps + 1)`` curves sampled at ``0, 1/steps, ..., 1``:
    float32 ``(N,)``, in ``[0, 1]`` for probabilities."""
    curves = np.asarray(curves, np.float64)
    steps = curves.shape[1] - 1
    area = (curves.sum(axis=1) - (curves[:, 0] + curves[:, -1]) / 2) / steps
    return area.astype(np.float32)


def _curves(
    bind: Binder,
    batch: Batch,
    name: str,
    x: torch.Tensor,
    baseline: torch.Tensor,
    cam: np.ndarray,
    targets: Sequence[int],
    samples: list[int],
    steps: int,
    info: FaithfulnessMetric,
) -> np.ndarray:
    """Target-probability curves ``(len(samples), steps + 1)`` for one chunk of samples."""
    height, width = x.shape[-2:]
    pixels = height * width
    order = torch.from_numpy(relevance_order(cam[samples])).to(x.device)
    counts = torch.tensor([round(k * pixels / steps) for k in range(steps + 1)], device=x.device)
    # rank[i, p]: position of pixel p in sample i's order; a pixel is taken at step k when its
    # rank is below counts[k].
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(pixels, device=x.device).expand_as(order))
    taken = rank[:, None, :] < counts[None, :, None]  # (n, steps + 1, pixels)
    taken = taken.view(len(samples) * (steps + 1), 1, height, width)
    index = torch.tensor(samples, device=x.device).repeat_interleave(steps + 1)
    original, empty = x[index], baseline[index]
    if info.name == "deletion":
        perturbed = torch.where(taken, empty, original)
    else:
        perturbed = torch.where(taken, original, empty)
    bound = {k: v[index] for k, v in batch.tensors.items()}
    logits = bind(bound, name)(perturbed)
    probabilities = _class_probabilities(logits)
    chosen = torch.tensor([targets[i] for i in samples], device=x.device).repeat_interleave(
        steps + 1
    )
    curve = probabilities.gather(1, chosen[:, None].to(probabilities.device))[:, 0]
    return curve.view(len(samples), steps + 1).float().cpu().numpy()


def _grad_cam_metric(
    bind: Binder,
    batch: Batch,
    name: str,
    x: torch.Tensor,
    cam: np.ndarray,
    targets: Sequence[int],
    metric: str,
) -> np.ndarray:
    """grad-cam's own metric on the bound model, with softmax targets."""
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence
    from pytorch_grad_cam.metrics.road import ROADCombined

    model = bind(batch.tensors, name)
    chosen = [_SoftmaxTarget(t) for t in targets]
    maps = np.clip(np.nan_to_num(cam.astype(np.float32)), 0.0, 1.0)
    if metric == "road":
        # ROAD's imputation adds noise: a fixed seed makes a score reproducible.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            scores = ROADCombined(percentiles=list(_ROAD_PERCENTILES))(x, maps, chosen, model)
    else:
        scores = DropInConfidence()(x, maps, chosen, model)
    return np.asarray(scores, np.float32).reshape(len(targets))


class _SoftmaxTarget:
    """The probability of one class (sigmoid for a single-logit model), per output row."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return _class_probabilities(output[None])[0, self.index]


def _class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes; a single logit is a binary model's sigmoid."""
    logits = logits.float()
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=-1)


def _chunks(n: int, steps: int, batch_size: int) -> list[list[int]]:
    """Sample indices in groups whose perturbed copies fit ``batch_size`` images per forward."""
    per_forward = max(1, batch_size // (steps + 1))
    return [list(range(i, min(n, i + per_forward))) for i in range(0, n, per_forward)]


def _metric(metric: str) -> FaithfulnessMetric:
    if metric not in FAITHFULNESS_METRICS:
        raise InputError(
            f"unknown faithfulness metric {metric!r}; choose one of "
            f"{', '.join(FAITHFULNESS_METRICS)}."
        )
    return FAITHFULNESS_METRICS[metric]


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be a positive int (e.g. 20), got {steps!r}.")
    return int(steps)


def _check_cams(
    cams: Mapping[str, np.ndarray], batch: Batch, modalities: Mapping[str, Modality]
) -> dict[str, np.ndarray]:
    """Maps per modality as float32 ``(N, H, W)`` at that modality's input size."""
    import cv2

    if not cams:
        raise InputError("give at least one map: cams={modality: (N, H, W) array}.")
    sizes = batch.sizes()
    maps = {}
    for name, cam in cams.items():
        if name not in modalities:
            raise InputError(
                f"no modality {name!r} in this model; modalities are {', '.join(modalities)}.",
                modality=name,
            )
        cam = np.asarray(cam, np.float32)
        if cam.ndim == 2:
            cam = cam[None]
        if cam.ndim != 3 or len(cam) != batch.size:
            raise InputError(
                f"the {name} map has shape {cam.shape}; expected (N, H, W) with N = "
                f"{batch.size}, one map per sample.",
                modality=name,
            )
        height, width = sizes[name]
        if cam.shape[1:] != (height, width):
            cam = np.stack(
                [cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in cam]
            )
        maps[name] = cam
    return maps
