"""Train the demo model and write its weights and sample images.

    python -m cam_core.demo.train                 # writes cam_core/demo/weights.pt + samples/
    python -m cam_core.demo.train --steps 5 --out /tmp/demo   # a quick run elsewhere

Seeded and reproducible: the same arguments give the same weights, bit for bit, on the same
machine and thread count (``--threads`` is part of the recipe: another count may sum gradients
in another order).  One thread by default: on a machine whose cores are busy with other work,
two threads that must meet at every operation wait for each other and run several times slower
than one, while one thread on an idle 2-core machine still finishes in about 6 minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from . import CLASSES, IMAGE_SIZE, MODALITIES, DemoBatch, generate
from .model import DemoNet

__all__ = ["SAMPLE_PLAN", "TrainConfig", "main", "to_tensors", "train"]

# Seeds of the held-out sets: generate() draws them from their own seeds, never from the
# training pool's.
VALIDATION_SEED = 10_001
SAMPLES_SEED = 10_002

#: The sample sets written for the app, in the order it lists them (the first is preloaded).
SAMPLE_PLAN: tuple[tuple[str, str], ...] = (
    ("1-spliced", "spliced"),
    ("2-retouched", "retouched"),
    ("3-authentic", "authentic"),
    ("4-spliced", "spliced"),
)


@dataclass
class TrainConfig:
    """The training recipe (the command line's defaults)."""

    steps: int = 500
    batch_size: int = 64
    pool: int = 8000
    lr: float = 3e-3
    seed: int = 0
    threads: int = 1
    validation: int = 1000
    out: Path = Path(__file__).parent
    progress: bool = True


def to_tensors(batch: DemoBatch | dict[str, np.ndarray]) -> list[torch.Tensor]:
    """uint8 images per modality -> normalized float32 ``(N, C, H, W)`` tensors in forward order.

    Uses :meth:`Modality.normalize`, the Explainer's own preprocessing, so the model is trained
    on exactly what it is explained on.
    """
    inputs = batch.inputs if isinstance(batch, DemoBatch) else batch
    tensors = []
    for modality in MODALITIES:
        images = inputs[modality.name]
        tensors.append(modality.normalize(images[..., None] if images.ndim == 3 else images))
    return tensors


def train(config: TrainConfig) -> dict:
    """Train with ``config``; write ``weights.pt``, ``samples/`` and ``training.json`` under
    ``config.out``.  Returns the summary written to ``training.json``."""
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(config.seed)
        pool = generate(config.pool, seed=config.seed)
        labels = torch.from_numpy(pool.labels)
        model = DemoNet(classes=len(CLASSES), image_size=IMAGE_SIZE)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=max(config.steps, 1), pct_start=0.15
        )
        order = torch.Generator().manual_seed(config.seed)
        model.train()
        bar = tqdm(range(config.steps), desc="training", unit="step", disable=not config.progress)
        for _ in bar:
            index = torch.randint(0, len(pool), (config.batch_size,), generator=order)
            # The pool stays uint8 (a fifth of the float size); batches are normalized on the fly.
            inputs = to_tensors({k: v[index.numpy()] for k, v in pool.inputs.items()})
            loss = F.cross_entropy(model(*inputs), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        model.eval()

        held_out = generate(config.validation, seed=VALIDATION_SEED)
        predicted = _predict(model, held_out)
        accuracy = float((predicted == held_out.labels).mean()) if len(held_out) else float("nan")

        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out / "weights.pt")
        samples = _write_samples(model, out / "samples")
    finally:
        torch.set_num_threads(threads_before)
    recipe = {k: v for k, v in asdict(config).items() if k not in ("out", "progress")}
    summary = {
        **recipe,
        "held_out_accuracy": round(accuracy, 4),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(_cpu_seconds() - cpu_started, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "samples": samples,
    }
    (Path(config.out) / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _predict(model: DemoNet, batch: DemoBatch, chunk: int = 250) -> np.ndarray:
    """Predicted class indices int64 ``(N,)``."""
    tensors = to_tensors(batch)
    predicted = []
    with torch.no_grad():
        for start in range(0, len(batch), chunk):
            logits = model(*(x[start : start + chunk] for x in tensors))
            predicted.append(logits.argmax(1).numpy())
    return np.concatenate(predicted) if predicted else np.zeros(0, np.int64)


def _write_samples(model: DemoNet, folder: Path) -> list[dict]:
    """One folder per :data:`SAMPLE_PLAN` entry: ``rgb.png``, ``frequency.png``,
    ``texture.png`` (the model's inputs), ``mask.png`` (the edited region, white) and
    ``truth.json``.  Each is the first sample of its class, drawn from ``SAMPLES_SEED``, that the
    model classifies correctly (a demo should open on a working example; the README's figures
    are measured on unselected samples)."""
    pool = generate(96, seed=SAMPLES_SEED)
    predicted = _predict(model, pool)
    used: set[int] = set()
    written = []
    for name, wanted in SAMPLE_PLAN:
        label = CLASSES.index(wanted)
        candidates = [i for i in range(len(pool)) if pool.labels[i] == label and i not in used]
        correct = [i for i in candidates if predicted[i] == label]
        i = (correct or candidates)[0]
        used.add(i)
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for modality, images in pool.inputs.items():
            Image.fromarray(images[i]).save(target / f"{modality}.png")
        Image.fromarray(pool.masks[i].astype(np.uint8) * 255).save(target / "mask.png")
        truth = {
            "class": wanted,
            "label": label,
            "predicted": CLASSES[int(predicted[i])],
            "seed": SAMPLES_SEED,
            "index": i,
        }
        (target / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
        written.append({"name": name, **truth})
    return written


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m cam_core.demo.train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--pool", type=int, default=defaults.pool, help="generated training samples"
    )
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads")
    parser.add_argument(
        "--validation", type=int, default=defaults.validation, help="held-out samples"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=defaults.out,
        help="folder for weights.pt, samples/, training.json (default: the package folder)",
    )
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")
    config = TrainConfig(**vars(parser.parse_args(argv)))
    for name in ("steps", "batch_size", "pool", "threads"):
        if getattr(config, name) < (0 if name == "steps" else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive")
    summary = train(config)
    print(
        f"held-out accuracy {summary['held_out_accuracy']:.1%} on {config.validation} samples; "
        f"{summary['wall_seconds']:.0f} s wall, {summary['cpu_seconds']:.0f} s CPU; "
        f"wrote {Path(config.out) / 'weights.pt'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
