"""Stock torchvision convnext_tiny at 384 px: stage 0's channels-last tensors are (N, 96, 96, 96).

    python bench/layer_reading.py

Random weights (``weights=None``), one seeded image.  For the block's LayerNorm and second Linear
(channels-last) and the stage output (channels-first), prints the layout the layer tree shows,
the largest difference from grad-cam run with the reshape that layout needs (a permute for
channels-last), and the cost of the dry run at 192 px that settles the layout, as a ratio to the
plain dry run at 384 px measured in the same run (this machine is shared: compare ratios).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

ROOT = Path(__file__).absolute().parents[1]
sys.path.insert(0, str(ROOT))

from cam_core import Explainer, Modality  # noqa: E402
from cam_core.layers import analyze_output  # noqa: E402

LAYERS = ["features.1.0.block.2", "features.1.0.block.5", "features.1"]


def main() -> None:
    from torchvision.models import convnext_tiny

    torch.manual_seed(0)
    model = convnext_tiny(weights=None).eval()
    x = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(1))
    explainer = Explainer(model, [Modality("rgb")], device="cpu")
    modules = dict(model.named_modules())

    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    plain = time.perf_counter() - start
    start = time.perf_counter()
    rows = {r.path: r for r in explainer.layer_tree({"rgb": x})}
    tree = time.perf_counter() - start
    print(f"layer tree at 384 px (dry run + settling run): {tree / plain:.2f}x one forward")

    for layer in LAYERS:
        row = rows[layer]
        result = explainer.explain({"rgb": x}, layer, "gradcam", target=3)
        reshape = (lambda t: t.permute(0, 3, 1, 2)) if row.layout == "nhwc" else None
        with GradCAM(model, [modules[layer]], reshape_transform=reshape) as cam:
            expected = cam(x, [ClassifierOutputTarget(3)])
        with GradCAM(model, [modules[layer]], reshape_transform=None) as cam:
            as_first = cam(x, [ClassifierOutputTarget(3)])
        diff = np.abs(result.cams["rgb"] - expected).max()
        wrong = np.abs(as_first - expected).max()
        print(
            f"{layer:24s} {row.output_shape} → {row.reason}\n"
            f"{'':24s} max |ours - grad-cam with that reshape| = {diff:.2g}; "
            f"grad-cam read channels-first instead differs by {wrong:.2f}"
        )
    # The reading by shape alone, for the record: both layouts fit at this size.
    probe = torch.zeros(1, 96, 96, 96)
    print("shape alone:", analyze_output(probe, 1, {"rgb": (384, 384)}))


if __name__ == "__main__":
    main()
