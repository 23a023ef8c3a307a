"""One map over several layers: grad-cam's ``target_layers`` list.

grad-cam computes each layer's map, takes its ReLU, min-max scales it and resizes it to the
input, averages the layers, and min-max scales the mean.  :func:`average_layers` does the same
with the raw maps of one :class:`~cam_core.result.CamResult` per layer, per modality.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .errors import LayerError
from .result import CamResult

__all__ = ["average_layers"]


def average_layers(results: Sequence[CamResult]) -> CamResult:
    """The mean of several layers' CAMs of the same inputs, method and targets.

    ``results`` hold one layer each.  Returns a result whose ``cams[m]`` is float32
    ``(N, H, W)`` in ``[0, 1]`` and ``raw[m]`` the mean of the layers' scaled maps at ``(H, W)``
    (before the final min-max); ``layer`` joins the layers' names with ``" + "``.
    """
    from pytorch_grad_cam.utils.image import scale_cam_image

    if not results:
        raise LayerError("give at least one layer to average (a list of layer paths).")
    first = results[0]
    cams, raws, empty = {}, {}, {}
    for name, cam in first.cams.items():
        height, width = cam.shape[-2:]
        scaled = [
            scale_cam_image(np.maximum(np.nan_to_num(r.raw[name]), 0), (width, height))
            for r in results
        ]
        mean = np.mean(scaled, axis=0).astype(np.float32)
        raws[name] = mean
        cams[name] = np.clip(scale_cam_image(mean), 0.0, 1.0).astype(np.float32)
        empty[name] = ~(cams[name].reshape(len(mean), -1).max(axis=1) > 1e-6)
    label = " + ".join(str(r.layer) for r in results)
    notices = list(dict.fromkeys(n for r in results for n in r.notices))
    return dataclasses.replace(
        first,
        cams=cams,
        raw=raws,
        layer=label,
        empty=empty,
        notices=notices,
        layers=dict.fromkeys(cams, label) if first.layers else {},
    )
