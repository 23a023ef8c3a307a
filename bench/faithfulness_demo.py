"""Which heatmap to trust on the demo: faithfulness and ground truth per layer and method.

    python bench/faithfulness_demo.py [--samples 48] [--seed 31337]

Generates samples, keeps the edited ones (spliced, retouched), explains their true class with
Explainer.compare over 4 layers x 4 fast methods, and prints per cell, for the texture
modality: deletion AUC (lower = more faithful), insertion AUC (higher = more faithful), the
share of samples where the map beats a uniform random map on both, pointing game and energy in
mask.  A random map's own scores are the first row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).absolute().parents[1]
sys.path.insert(0, str(ROOT))

from cam_core import metrics  # noqa: E402
from cam_core.demo import generate, load_explainer  # noqa: E402

LAYERS = ["rgb_branch", "texture_branch", "fusion", "head.features"]
METHODS = ["gradcam", "gradcam++", "hirescam", "layercam"]
NAME = "texture"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--seed", type=int, default=31337)
    args = parser.parse_args()
    start = time.perf_counter()
    explainer = load_explainer(device="cpu")
    data = generate(args.samples, seed=args.seed)
    edited = data.masks.reshape(len(data.labels), -1).any(axis=1)
    inputs = explainer.prepare({k: v[edited] for k, v in data.inputs.items()})
    masks, targets = data.masks[edited], [int(t) for t in data.labels[edited]]
    grid = explainer.compare(inputs, LAYERS, METHODS, target=targets)
    rng = np.random.default_rng(0)
    random_map = rng.random(grid[(LAYERS[0], METHODS[0])].cams[NAME].shape, np.float32)

    def scores(cams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return tuple(
            explainer.faithfulness(inputs, {NAME: cams}, targets, metric=m)[NAME]
            for m in ("deletion", "insertion")
        )

    chance = scores(random_map)
    print(
        f"# {int(edited.sum())} edited samples (seed {args.seed}), target: true class, "
        f"modality {NAME}, steps 20, torch threads {torch.get_num_threads()}"
    )
    print("| layer · method | deletion ↓ | insertion ↑ | beats random | pointing | energy |")
    print("|---|---|---|---|---|---|")
    print(
        f"| random map | {chance[0].mean():.3f} | {chance[1].mean():.3f} | — | "
        f"{metrics.pointing_game(random_map, masks).mean():.0%} | "
        f"{metrics.energy_in_mask(random_map, masks).mean():.0%} |"
    )
    for (layer, method), result in grid.items():
        cams = result.cams[NAME]
        deletion, insertion = scores(cams)
        beats = ((deletion < chance[0]) & (insertion > chance[1])).mean()
        print(
            f"| `{layer}` · {method} | {deletion.mean():.3f} | {insertion.mean():.3f} | "
            f"{beats:.0%} | {metrics.pointing_game(cams, masks).mean():.0%} | "
            f"{metrics.energy_in_mask(cams, masks).mean():.0%} |"
        )
    print(f"# {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
