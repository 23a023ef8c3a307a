"""Explainer.compare (a 4 layers x 4 methods grid) against one explain per cell.

    python bench/compare_speed.py [--repeats 5] [--batch 4]

Model: the bundled demo (three 64 px inputs, cross-attention), Grad-CAM, Grad-CAM++, XGradCAM and
LayerCAM at ``rgb_branch``, ``texture_branch``, ``fusion`` and ``head.features``.  Prints, as
medians measured in one run (this machine is shared: compare the ratios, not the seconds), the
time of the grid, of 16 explains (one per cell) and of 4 explains (one per method, at one
layer), the grid's cost in explains, and the largest difference between grid and explains.
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

from cam_core.demo import DEFAULT_LAYER, generate, load_explainer  # noqa: E402

LAYERS = ["rgb_branch", "texture_branch", "fusion", "head.features"]
METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    explainer = load_explainer(device="cpu")
    inputs = explainer.prepare(generate(args.batch, seed=7).inputs)
    explainer.compare(inputs, LAYERS, METHODS)  # warm-up (imports, allocator)
    grid_s, cells_s, methods_s = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        grid = explainer.compare(inputs, LAYERS, METHODS)
        grid_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        cells = {(ly, m): explainer.explain(inputs, ly, m) for m in METHODS for ly in LAYERS}
        cells_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        for method in METHODS:
            explainer.explain(inputs, DEFAULT_LAYER, method)
        methods_s.append(time.perf_counter() - start)
    diff = max(
        float(np.abs(grid[key].cams[m] - cells[key].cams[m]).max())
        for key in grid
        for m in explainer.names
    )
    g, c, four = (statistics.median(s) for s in (grid_s, cells_s, methods_s))
    one = four / len(METHODS)
    print(
        f"# torch threads {torch.get_num_threads()}, {len(LAYERS)} layers x {len(METHODS)} "
        f"methods, batch {args.batch}, 64 px, median of {args.repeats}"
    )
    print(f"compare (grid)       {g * 1000:8.1f} ms  = {g / one:5.1f} explains")
    print(f"16 explains (cells)  {c * 1000:8.1f} ms  = {c / g:5.2f}x the grid")
    print(f"4 explains (methods) {four * 1000:8.1f} ms  = {four / g:5.2f}x the grid")
    print(f"max |difference|     {diff:.2e}")


if __name__ == "__main__":
    main()
