"""Each modality's own evidence on the demo: branch CAMs and modality contributions.

    python bench/branch_quality.py            # the README's figures (about a minute)
    python bench/branch_quality.py --n 90     # a quick look

On ``--n`` fresh samples (``--seed``, not a seed training uses), through the public API:

- ``Explainer.branches()`` of the demo model;
- pointing game and energy inside the edited region of Grad-CAM on the edited samples (true
  class as target), for the texture and rgb maps of ``explain_branches()`` (each from its own
  branch) next to the fused ``head.features`` (one map drawn on every input);
- ``Explainer.contributions()``: the mean drop of the target's probability per modality at its
  baseline, and how often each modality contributes most, on the edited samples (true class)
  and on all samples (predicted class); next to accuracy with each modality at its baseline.

Prints markdown.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cam_core import metrics  # noqa: E402
from cam_core.demo import CLASSES, generate, load_explainer  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=600, help="fresh samples (default 600)")
    parser.add_argument("--seed", type=int, default=20_002)
    parser.add_argument("--method", default="gradcam")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    explainer = load_explainer(device="cpu")
    data = generate(args.n, seed=args.seed)
    edited = np.flatnonzero(data.labels != CLASSES.index("authentic"))
    inputs = {name: images[edited] for name, images in data.inputs.items()}
    masks, targets = data.masks[edited], data.labels[edited].tolist()
    other = masks[np.roll(np.arange(len(edited)), 1)]  # another sample's region: the control

    branches = explainer.branches()
    print(f"`explainer.branches()` on the demo: `{branches}`.\n")
    own = explainer.explain_branches(inputs, args.method, targets)
    fused = explainer.explain(inputs, "head.features", args.method, targets)
    print(
        f"{len(edited)} edited samples of {args.n} (seed {args.seed}), {args.method}, target = "
        "the true class. Pointing game % · energy inside the region % "
        "(control: pointing game against another sample's region):\n"
    )
    print("| map | texture | rgb |")
    print("|---|---|---|")
    for label, result in (("each modality's own branch", own), ("`head.features` (fused)", fused)):
        cells = []
        for name in ("texture", "rgb"):
            cam = result.cams[name]
            cells.append(
                f"{metrics.pointing_game(cam, masks).mean():.0%} · "
                f"{metrics.energy_in_mask(cam, masks).mean():.0%} "
                f"(control {metrics.pointing_game(cam, other).mean():.0%})"
            )
        layers = ", ".join(f"{n}: `{result.layers[n]}`" for n in ("texture", "rgb"))
        print(f"| {label} ({layers}) | " + " | ".join(cells) + " |")
    print()

    names = explainer.names
    for title, chosen, target in (
        ("edited samples, true class", inputs, targets),
        ("all samples, predicted class", data.inputs, None),
    ):
        drops = explainer.contributions(chosen, target)
        table = np.stack([drops[n] for n in names], axis=1)
        first = np.bincount(table.argmax(axis=1), minlength=len(names)) / len(table)
        print(
            f"Contributions ({title}, {len(table)} samples): mean drop of the target's "
            "probability with the modality at its baseline: "
            + ", ".join(f"{n} {v:+.3f}" for n, v in zip(names, table.mean(axis=0)))
            + "; contributes most: "
            + ", ".join(f"{n} {v:.0%}" for n, v in zip(names, first))
            + "."
        )
    tensors = explainer.prepare(data.inputs).tensors
    accuracy = {}
    for modality in explainer.modalities:
        blanked = {**tensors, modality.name: modality.baseline_of(tensors[modality.name])}
        predicted = explainer.predict(blanked).argmax(axis=1)
        accuracy[modality.name] = float((predicted == data.labels).mean())
    plain = float((explainer.predict(data.inputs).argmax(axis=1) == data.labels).mean())
    print(
        f"\nAccuracy on all {args.n}: {plain:.1%}; with one modality at its baseline: "
        + ", ".join(f"{n} {v:.1%}" for n, v in accuracy.items())
        + "."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
