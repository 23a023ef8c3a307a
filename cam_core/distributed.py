"""A dataset's CAMs on Ray: ``python -m cam_core explain ... --ray ADDRESS|local``.

The samples become a Ray Data dataset of ``(index, name, paths)`` rows; ``map_batches`` sends
batches of ``--batch-size`` to a fixed pool of ``--workers`` actors, each holding one
:class:`~cam_core.Explainer` (the model is loaded once per actor; ``--gpus-per-worker`` GPUs and
``--cpus-per-worker`` CPUs, which are also its torch threads).  An actor runs exactly the plain
run's batch code (:func:`cam_core.cli.explain_chunk`), which writes ``overlays/``, ``cams/`` and
``raw/`` under ``--out``, so the maps are the plain run's.  Each row comes back with its
sample's summary entry or its error: when a batch fails, its samples are run one at a time, and
a sample that still fails (an unreadable image, the model raising) is reported under
``skipped`` and never stops the run.  The driver shows progress as rows arrive and writes
``summary.json`` in the samples' order, as the plain run does.

``local`` starts Ray on this machine (and stops it afterwards); any other value is the address
of a running cluster (``ray://head:10001``, or ``auto`` on a node of it).  On a cluster the
inputs, ``--masks`` and ``--out`` must be at the same path on every node (a shared filesystem),
and ``cam_core`` and the spec's code importable there (``pip install .`` on the nodes).
Ray is optional: ``pip install -r requirements-scale.txt``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["explain_on_ray"]

# The folder holding the cam_core package: local Ray workers import cam_core from it.
_PACKAGE_ROOT = Path(__file__).absolute().parents[1]
# What an actor needs from the command line (see cam_core.cli: _load, explain_chunk, _write).
_OPTIONS = (
    "model",
    "device",
    "method",
    "aug_smooth",
    "eigen_smooth",
    "colormap",
    "image_weight",
    "cpus_per_worker",
    "gpus_per_worker",
)
_PATH_OPTIONS = ("spec", "checkpoint", "masks", "out")


def explain_on_ray(
    args: argparse.Namespace,
    samples: Sequence[Any],
    layer: str | None,
    target: int | str | None,
    run: Any,
    progress: Any,
) -> None:
    """Explain ``samples`` (``cam_core.cli._Sample``) on Ray; fills ``run`` (``_Run``) with the
    summary entries, skipped samples and notices, in the samples' order.

    ``progress`` is updated by one per sample as results arrive (a tqdm bar).

    Raises:
        InputError: Ray is not installed, or ``--gpus-per-worker``/``--cpus-per-worker`` is
            negative.
    """
    ray = _import_ray()
    if args.gpus_per_worker < 0 or args.cpus_per_worker <= 0:
        raise InputError(
            f"--gpus-per-worker {args.gpus_per_worker} / --cpus-per-worker "
            f"{args.cpus_per_worker}: give a GPU count >= 0 and a CPU count > 0."
        )
    options = {name: getattr(args, name) for name in _OPTIONS}
    options.update(
        {
            name: None if getattr(args, name) is None else str(Path(getattr(args, name)).absolute())
            for name in _PATH_OPTIONS
        }
    )
    options.update(layer=layer, target=target, traceback=False)
    rows = [
        {
            "index": i,
            "name": sample.name,
            "paths": json.dumps({m: str(Path(p).absolute()) for m, p in sample.paths.items()}),
        }
        for i, sample in enumerate(samples)
    ]
    started = _connect(ray, args.ray, args.workers, args.cpus_per_worker)
    outcomes: dict[int, dict[str, Any]] = {}
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours is the bar
        dataset = ray.data.from_items(rows).map_batches(
            _Worker,
            fn_constructor_kwargs={"options": options},
            batch_size=args.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=args.workers),
            num_cpus=args.cpus_per_worker,
            num_gpus=args.gpus_per_worker,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for index, outcome in zip(batch["index"], batch["outcome"]):
                outcomes[int(index)] = json.loads(outcome)
                progress.update(1)
    finally:
        if started:
            ray.shutdown()
    for i, sample in enumerate(samples):
        outcome = outcomes.get(i, {"skipped": _skip(sample.name, "no result came back")})
        if "sample" in outcome:
            run.samples.append(outcome["sample"])
        else:
            run.skipped.append(outcome["skipped"])
        run.notices.extend(n for n in outcome["notices"] if n not in run.notices)


class _Worker:
    """One Ray actor: one Explainer, loaded once; ``__call__`` explains a batch of rows."""

    def __init__(self, options: dict[str, Any]) -> None:
        import torch

        from .cli import _load

        torch.set_num_threads(max(1, math.floor(options["cpus_per_worker"])))
        paths = {k: Path(options[k]) for k in _PATH_OPTIONS if options[k] is not None}
        self.args = argparse.Namespace(**{**options, **paths})
        if self.args.device == "auto" and not self.args.gpus_per_worker:
            self.args.device = "cpu"  # an actor without GPUs must not take a node's GPU
        _, self.explainer, _ = _load(self.args)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .cli import _Run, _Sample

        chunk = [
            _Sample(str(name), {m: Path(p) for m, p in json.loads(str(paths)).items()})
            for name, paths in zip(batch["name"], batch["paths"])
        ]
        run = _Run()
        try:
            self._explain(chunk, run)
        except Exception:  # one sample may have failed the batch: run them one at a time
            run = _Run()
            for sample in chunk:
                try:
                    self._explain([sample], run)
                except Exception as exc:  # reported in the summary; the run goes on
                    message = " ".join(str(exc).split())
                    run.skipped.append(_skip(sample.name, f"{type(exc).__name__}: {message}"))
        outcomes = {s["name"]: {"sample": s} for s in run.samples}
        outcomes.update({s["name"]: {"skipped": s} for s in run.skipped})
        return {
            "index": batch["index"],
            "outcome": np.array(
                [json.dumps({**outcomes[sample.name], "notices": run.notices}) for sample in chunk],
                dtype=object,
            ),
        }

    def _explain(self, chunk: list, run: Any) -> None:
        from .cli import explain_chunk

        explain_chunk(self.explainer, chunk, self.args.layer, self.args.target, self.args, run)


def _skip(name: str, error: str) -> dict[str, str]:
    return {"name": name, "error": f"{name}: {error}"}


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data ships with ray[data])
    except ImportError as exc:
        raise InputError(
            f"--ray needs Ray Data ({exc}): pip install -r requirements-scale.txt "
            "(or pip install 'cam-explorer[scale]')."
        ) from exc
    return ray


def _connect(ray: Any, address: str, workers: int, cpus_per_worker: float) -> bool:
    """Start Ray here (``local``) or join a cluster; False when Ray was already initialized."""
    if ray.is_initialized():
        return False
    pythonpath = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p)
    settings = {
        "runtime_env": {"env_vars": {"PYTHONPATH": pythonpath}},
        "logging_level": logging.WARNING,
        "log_to_driver": False,  # a worker's failures are in summary.json, not on the console
    }
    if address == "local":
        # The actors' CPUs plus one for reading rows; logical, so a small machine still runs.
        cpus = max(os.cpu_count() or 1, math.ceil(workers * cpus_per_worker) + 1)
        ray.init(num_cpus=cpus, include_dashboard=False, **settings)
    else:
        ray.init(address=address, **settings)
    return True
