"""Explainer.sweep (one forward + one autograd.grad for many layers) against one explain per layer.

    python bench/sweep_speed.py [--repeats 5]

Model: the example forgery spec (examples/forgery_spec.py, three 64 px inputs, cross-attention),
batch of 8, Grad-CAM at 4 layers. Prints the median of each and their ratio, measured in one run
(this machine is shared: compare the ratio, not the seconds), plus the largest difference
between the two results (they must agree).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).absolute().parents[1]
sys.path.insert(0, str(ROOT))

from cam_core import Explainer, load_spec  # noqa: E402

LAYERS = ["rgb_branch", "texture_branch.body.3", "cross.attn", "fusion"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    spec = load_spec(ROOT / "examples" / "forgery_spec.py")
    explainer: Explainer = spec.build_explainer(device="cpu")
    g = torch.Generator().manual_seed(0)
    inputs = {
        m.name: torch.randn(8, m.channels, *m.size, generator=g) for m in explainer.modalities
    }
    explainer.sweep(inputs, LAYERS)  # warm-up (imports, allocator)
    per_layer, swept = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        singles = {layer: explainer.explain(inputs, layer) for layer in LAYERS}
        per_layer.append(time.perf_counter() - start)
        start = time.perf_counter()
        sweep = explainer.sweep(inputs, LAYERS)
        swept.append(time.perf_counter() - start)
    diff = max(
        float(np.abs(sweep[layer].cams[m] - singles[layer].cams[m]).max())
        for layer in LAYERS
        for m in explainer.names
    )
    a, b = statistics.median(per_layer), statistics.median(swept)
    print(f"# torch threads {torch.get_num_threads()}, {len(LAYERS)} layers, batch 8, 64 px")
    print(f"explain per layer  {a * 1000:8.1f} ms (median of {args.repeats})")
    print(f"sweep              {b * 1000:8.1f} ms")
    print(f"ratio              {a / b:8.2f}x faster")
    print(f"max |difference|   {diff:.2e}")


if __name__ == "__main__":
    main()
