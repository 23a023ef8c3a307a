"""How good the bundled demo model is, and where each CAM method's heatmaps land.

    python bench/demo_quality.py                       # the README's table (a few minutes)
    python bench/demo_quality.py --n 60 --slow-n 8     # a quick look

Everything is measured on samples generated from ``--seed`` (not a seed training uses), through
the public API (``cam_core.demo.load_explainer()`` and ``Explainer.explain``):

- accuracy on all ``--n`` samples, and with one modality shuffled across samples (how much the
  model relies on it);
- for every method of ``explainer.methods()`` at the two scene branches, the fusion and the head
  layer, on the edited samples (spliced, retouched: authentic images have no region) with the
  true class as target: pointing game (share of samples whose CAM maximum lies inside the
  edited region), energy inside the mask (share of the CAM's sum inside the region; a uniform
  map scores the mask's area) and wall time per image of ``explain()`` on the batch;
- the frequency modality, which is not spatially aligned: what its heatmap at the spectrum
  branch says, next to the chance level it should be judged against.

Methods that run the model on perturbed copies of each sample (ScoreCAM, AblationCAM) use the
first ``--slow-n`` edited samples.  Prints markdown; ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

# Run as a script from anywhere: the repository root holds cam_core.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cam_core.demo import (  # noqa: E402
    CLASSES,
    DEFAULT_LAYER,
    IMAGE_SIZE,
    MODALITIES,
    generate,
    load_explainer,
)

LAYERS = ("rgb_branch", "texture_branch", "fusion", "head.features")
ALIGNED = [m.name for m in MODALITIES if m.aligned]


def pointing_game(cams: np.ndarray, masks: np.ndarray) -> float:
    """Share of samples whose CAM ``(N, H, W)`` maximum lies in their bool mask ``(N, H, W)``."""
    return float(np.mean([m.flat[int(np.argmax(c))] for c, m in zip(cams, masks)]))


def energy_inside(cams: np.ndarray, masks: np.ndarray) -> float:
    """Mean share of each CAM's sum that falls inside its mask (a uniform map: the mask area)."""
    shares = [c[m].sum() / c.sum() if c.sum() > 0 else 0.0 for c, m in zip(cams, masks)]
    return float(np.mean(shares))


def _subset(inputs: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {name: images[index] for name, images in inputs.items()}


def _pct(value: float) -> str:
    return f"{100 * value:.0f}"


def _cell(values: dict[str, float]) -> str:
    """One number, or ``rgb / texture`` when the aligned modalities differ (input-dependent
    methods run once per modality)."""
    shown = [_pct(values[name]) for name in ALIGNED]
    return shown[0] if len(set(shown)) == 1 else " / ".join(shown)


def _outer_half(size: int) -> tuple[np.ndarray, float]:
    """The outer half of a centred ``size x size`` spectrum by area: bool ``(size, size)``, and
    its inner radius in cycles/pixel (the spectrum's pixel spacing is 1/size cycle/pixel)."""
    radius = size / np.sqrt(2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] - size // 2
    return np.hypot(yy, xx) > radius, radius / size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=600, help="held-out samples (default 600)")
    parser.add_argument("--slow-n", type=int, default=60, help="samples for ScoreCAM/AblationCAM")
    parser.add_argument("--seed", type=int, default=20_001)
    parser.add_argument("--layers", nargs="+", default=list(LAYERS))
    parser.add_argument("--methods", nargs="+", default=None, help="default: all")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    explainer = load_explainer(device="cpu")
    data = generate(args.n, seed=args.seed)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    # -- accuracy, and reliance on each modality ------------------------------------------------
    predicted = explainer.predict(data.inputs).argmax(axis=1)
    accuracy = float((predicted == data.labels).mean())
    shuffle = np.random.default_rng(args.seed).permutation(args.n)
    reliance = {}
    for name in explainer.names:
        swapped = {**data.inputs, name: data.inputs[name][shuffle]}
        reliance[name] = float((explainer.predict(swapped).argmax(axis=1) == data.labels).mean())
    per_class = {c: float((predicted[data.labels == i] == i).mean()) for i, c in enumerate(CLASSES)}
    edited = np.flatnonzero(data.labels != CLASSES.index("authentic"))
    inputs, masks = _subset(data.inputs, edited), data.masks[edited]
    targets = data.labels[edited].tolist()
    area = float(masks.mean(axis=(1, 2)).mean())
    # Another sample's mask for each sample: the hit rate a map unrelated to the edit gets,
    # centre bias included (regions lie inside the image, heatmaps often peak near the middle).
    other = np.roll(np.arange(len(edited)), 1)

    say(f"Held-out accuracy: **{accuracy:.1%}** on {args.n} generated samples (seed {args.seed})")
    say(f"({', '.join(f'{c} {v:.1%}' for c, v in per_class.items())}).")
    say(
        "Accuracy with one modality taken from another sample: "
        + ", ".join(f"{name} {value:.1%}" for name, value in reliance.items())
        + f" (chance {1 / len(CLASSES):.1%})."
    )
    say()

    # -- every method at every layer ------------------------------------------------------------
    layers = list(args.layers)
    say(
        f"{len(edited)} edited samples (spliced + retouched; mean region area {area:.1%} of the "
        f"image, so a random point lands inside {area:.0%} of the time). Target: the true class. "
        f"Each cell: pointing game % · energy inside mask % · ms per image, on "
        f"{', '.join(ALIGNED)} "
        "(one number where they agree; `rgb / texture` where the method runs per modality). "
        f"`DEFAULT_LAYER = {DEFAULT_LAYER!r}`."
    )
    say()
    header = "| method | " + " | ".join(f"`{layer}`" for layer in layers) + " |"
    say(header)
    say("|---" * (len(layers) + 1) + "|")
    methods = args.methods or explainer.methods()
    for method in methods:
        info = explainer.method_info(method)
        count = min(args.slow_n, len(edited)) if info.per_sample else len(edited)
        chosen = np.arange(count)
        # One untimed sample first: the first call of a method pays for imports and set-up.
        explainer.explain(_subset(inputs, chosen[:1]), layers[0], method, targets[:1])
        cells = []
        for layer in layers if info.uses_layer else layers[:1]:
            started = time.perf_counter()
            result = explainer.explain(
                _subset(inputs, chosen), layer=layer, method=method, target=targets[:count]
            )
            ms = 1000 * (time.perf_counter() - started) / count
            pg = {name: pointing_game(result.cams[name], masks[chosen]) for name in ALIGNED}
            em = {name: energy_inside(result.cams[name], masks[chosen]) for name in ALIGNED}
            cells.append(f"{_cell(pg)} · {_cell(em)} · {ms:.1f}")
        if not info.uses_layer:  # FullGrad ignores the layer: one run, shown once.
            cells += ["(ignores the layer)"] * (len(layers) - 1)
        note = f" ({count} samples)" if count != len(edited) else ""
        say(f"| {method}{note} | " + " | ".join(cells) + " |")
    say()
    control = explainer.explain(inputs, layer=DEFAULT_LAYER, method="gradcam", target=targets)
    say(
        f"Control: Grad-CAM at `{DEFAULT_LAYER}` scored against another sample's region "
        f"(a map that knows nothing of the edit, centre bias included): "
        + ", ".join(
            f"{name} {pointing_game(control.cams[name], masks[other]):.0%}" for name in ALIGNED
        )
        + "."
    )
    say()

    # -- the frequency modality: not spatially aligned -------------------------------------------
    band, cutoff = _outer_half(IMAGE_SIZE)
    result = explainer.explain(inputs, layer="frequency_branch", method="gradcam", target=targets)
    cams = result.cams["frequency"]
    labels = data.labels[edited]
    outer = {
        CLASSES[c]: float(np.mean([cam[band].sum() / cam.sum() for cam in cams[labels == c]]))
        for c in sorted(set(labels.tolist()))
    }
    say(
        "**Frequency is not spatially aligned.** Grad-CAM at `frequency_branch`: the maximum of "
        "the spectrum heatmap falls inside the scene's edited region "
        f"{pointing_game(cams, masks):.0%} of the time (inside another sample's region: "
        f"{pointing_game(cams, masks[other]):.0%}). A pixel of the spectrum is a frequency, not "
        "a place, so this is no localization score. "
        f"What the heatmap does say: its share above {cutoff:.2f} cycle/pixel (the outer half of "
        "the spectrum: the finest detail, and the noise) is "
        + ", ".join(f"{v:.0%} for {c}" for c, v in outer.items())
        + ". Only layers of the frequency branch give a map of frequencies: at the scene layers "
        "of the table, the frequency heatmap is the scene's map resized onto the spectrum and "
        "means nothing."
    )
    say()
    say(
        f"Measured with torch {torch.__version__}, torch threads: {args.threads}, "
        f"{os.cpu_count()} cores visible; load average {os.getloadavg()[0]:.1f} at the end."
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
