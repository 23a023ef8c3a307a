"""Command line: ``python -m cam_core explain ...`` and ``python -m cam_core layers ...``.

``explain`` writes, under ``--out DIR``::

    overlays/{sample}_{modality}.png   heatmap blended on the image, uint8 RGB, at the file's size
    cams/{sample}_{modality}.npy       float32 (H, W) in [0, 1], the modality's input size
    raw/{sample}_{modality}.npy        float32 (h, w), un-normalized, the layer's resolution
    summary.json                       model, settings, and per sample its prediction and files
                                       (with ``--masks DIR``: pointing game and energy in mask)

``--input NAME=PATH`` names one modality's image or folder; folders are paired by file name
(``rgb/0001.png`` with ``texture/0001.png``) and explained in batches with a progress bar.
``--samples DIR`` instead takes one sub-folder per sample holding ``<modality>.png``.
Exit codes: 0 done; 2 bad usage or input (one line on stderr); 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import shutdown
from .errors import CamError, Cancelled, InputError, LayerError, MethodError, ModelLoadError
from .overlay import COLORMAPS
from .session import IMAGE_SUFFIXES, list_samples
from .sources import TORCHVISION_MODELS, ModelSpec, demo_spec, load_spec, torchvision_spec

__all__ = ["build_parser", "explain_chunk", "main"]

# Errors in what the user gave us (exit 2); every other CamError is a failure (exit 1).
_USAGE_ERRORS = (InputError, LayerError, MethodError, ModelLoadError)
_SUMMARY_VERSION = 1


class _UsageError(InputError):
    """A command-line argument that does not make sense."""


@dataclass
class _Sample:
    name: str
    paths: dict[str, Path]


@dataclass
class _Run:
    """What ``explain`` has done so far, for summary.json."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad usage/input, 1 failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with shutdown.stop_on_sigterm():
            return args.command(args)
    except Cancelled as exc:  # SIGTERM: the model run stopped at its next forward; a clean exit
        print(_one_line(exc), file=sys.stderr)
        return 0
    except CamError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, _USAGE_ERRORS) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, or the user's model raising: say so on one line
        print(f"error: unexpected {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        if args.traceback:
            traceback.print_exc()
        else:
            print("(run again with --traceback for details)", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``python -m cam_core``."""
    parser = argparse.ArgumentParser(
        # The console script `cam-core` (pyproject.toml) is the same program.
        prog="cam-core" if Path(sys.argv[0]).name == "cam-core" else "python -m cam_core",
        description="Grad-CAM heatmaps for your own (multi-input) PyTorch model.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    explain = commands.add_parser(
        "explain",
        help="write CAM overlays (PNG), CAMs (.npy) and summary.json",
        description="Explain images with a CAM method; see README 'Use your own model'.",
    )
    _add_model_arguments(explain)
    explain.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="image or folder of images of modality NAME (repeat per modality; NAME may be "
        "left out when the model has one modality)",
    )
    explain.add_argument(
        "--samples",
        type=Path,
        metavar="DIR",
        help="instead of --input: a folder with one sub-folder per sample holding "
        "<modality>.png (the app's sample layout)",
    )
    explain.add_argument("--layer", help="dotted layer path (default: the model's default layer)")
    explain.add_argument("--method", default="gradcam", help="CAM method (default: gradcam)")
    explain.add_argument(
        "--target",
        help="class index or name to explain (default: each sample's predicted class)",
    )
    explain.add_argument("--out", "-o", required=True, type=Path, help="output folder")
    explain.add_argument(
        "--batch-size", type=_positive_int, default=8, help="samples per model run (default 8)"
    )
    explain.add_argument("--colormap", default="jet", choices=sorted(COLORMAPS))
    explain.add_argument(
        "--image-weight",
        type=_unit_float,
        default=0.5,
        help="weight of the image in the overlay, 0..1 (default 0.5)",
    )
    explain.add_argument("--aug-smooth", action="store_true", help="test-time augmentation")
    explain.add_argument("--eigen-smooth", action="store_true", help="first principal component")
    explain.add_argument(
        "--masks",
        type=Path,
        metavar="DIR",
        help="ground-truth masks (white = region) as DIR/<sample>.png or DIR/<sample>/mask.png: "
        "summary.json gets each sample's pointing game and energy in mask",
    )
    explain.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    scale = explain.add_argument_group("on a Ray cluster (pip install -r requirements-scale.txt)")
    scale.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the batches on Ray: 'local' starts Ray on this machine, else a cluster's "
        "address (ray://head:10001, auto); inputs and --out on a filesystem all nodes share",
    )
    scale.add_argument(
        "--workers", type=_positive_int, default=2, help="Explainer actors, one model each (2)"
    )
    scale.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per actor (0)")
    scale.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="CPUs (torch threads) per actor (1)"
    )
    explain.set_defaults(command=_explain)

    layers = commands.add_parser(
        "layers",
        help="print the model's layer tree and which layers can be CAM targets",
        description="Print every layer (one row per call) with its output shape.",
    )
    _add_model_arguments(layers)
    layers.set_defaults(command=_layers)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--spec", type=Path, help="spec file of your model (see README)")
    which.add_argument(
        "--model",
        default="demo",
        help=f"demo (default) or a torchvision model: {', '.join(TORCHVISION_MODELS)}",
    )
    parser.add_argument("--checkpoint", type=Path, help="state_dict (.pt/.pth) to load")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--traceback", action="store_true", help="print the traceback of unexpected errors"
    )


# -- commands -------------------------------------------------------------------------------------


def _layers(args: argparse.Namespace) -> int:
    spec, explainer, _ = _load(args)
    rows = explainer.layer_tree()
    table = [
        (
            "  " * row.depth + row.path,
            row.type,
            "-" if row.output_shape is None else str(tuple(row.output_shape)),
            ("ready" if row.ready else "no")
            + (f": {row.reason}" if row.reason else "")
            + (" (default)" if row.path == spec.default_layer else ""),
        )
        for row in rows
    ]
    header = ("layer", "type", "output", "CAM target")
    widths = [max(len(r[i]) for r in [header, *table]) + 2 for i in range(3)]
    for cells in [header, *table]:
        print("".join(c.ljust(w) for c, w in zip(cells, widths)) + cells[3])
    return 0


def _explain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    spec, explainer, report = _load(args)
    modalities = list(spec.modalities)
    if args.samples is not None:
        samples = _sample_folders(args.samples, modalities, given_inputs=bool(args.input))
    else:
        samples = _samples(_parse_inputs(args.input, [m.name for m in modalities]), modalities)
    explainer.method_info(args.method)  # an unknown method fails before any image is read
    if args.masks is not None and not args.masks.is_dir():
        raise _UsageError(f"--masks {args.masks}: no such folder.")
    layer = args.layer if args.layer is not None else spec.default_layer
    target = _parse_target(args.target)
    for folder in ("overlays", "cams", "raw"):
        (args.out / folder).mkdir(parents=True, exist_ok=True)
    notice = spec.notice_for(args.checkpoint)
    if notice:
        print(f"note: {notice}", file=sys.stderr)

    run = _Run()
    with tqdm(total=len(samples), unit="sample", disable=args.quiet, file=sys.stderr) as bar:
        if args.ray is not None:
            from .distributed import explain_on_ray

            explain_on_ray(args, samples, layer, target, run, bar)
        else:
            for start in range(0, len(samples), args.batch_size):
                shutdown.check()
                chunk = samples[start : start + args.batch_size]
                explain_chunk(explainer, chunk, layer, target, args, run)
                bar.update(len(chunk))

    summary = {
        "version": _SUMMARY_VERSION,
        "model": spec.name,
        "source": spec.source,
        "checkpoint": None if report is None else str(report),
        "notice": notice,
        "device": str(explainer.device),
        "layer": layer,
        "method": args.method,
        "target": target,
        "options": {"aug_smooth": args.aug_smooth, "eigen_smooth": args.eigen_smooth},
        "colormap": args.colormap,
        "image_weight": args.image_weight,
        "modalities": [m.name for m in modalities],
        "classes": explainer.classes,
        "samples": run.samples,
        "skipped": run.skipped,
        "notices": run.notices,
    }
    if args.masks is not None:
        summary["ground_truth"] = _ground_truth_summary(run.samples)
    if args.ray is not None:
        summary["ray"] = {
            "address": args.ray,
            "workers": args.workers,
            "cpus_per_worker": args.cpus_per_worker,
            "gpus_per_worker": args.gpus_per_worker,
        }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    done = len(run.samples)
    print(f"explained {done} of {len(samples)} samples -> {args.out}/ (summary.json)")
    if run.skipped:
        raise InputError(
            f"{len(run.skipped)} of {len(samples)} samples skipped, first: "
            f"{run.skipped[0]['error']} (all listed in {args.out / 'summary.json'})"
        )
    return 0


def explain_chunk(
    explainer: Any,
    chunk: list[_Sample],
    layer: str | None,
    target: int | str | None,
    args: argparse.Namespace,
    run: _Run,
) -> None:
    """Explain one batch of samples and write its files under ``args.out``; records go to
    ``run``.  The plain run and each Ray worker (:mod:`cam_core.distributed`) run this."""
    modalities = list(explainer.modalities)
    for group in _same_size_groups(_decode(chunk, modalities, run)):
        result = explainer.explain(
            {m.name: [images[m.name] for _, images in group] for m in modalities},
            layer=layer,
            method=args.method,
            target=target,
            aug_smooth=args.aug_smooth,
            eigen_smooth=args.eigen_smooth,
        )
        _write(result, [sample for sample, _ in group], args, run)


# -- the model -----------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> tuple[ModelSpec, Any, Any]:
    if args.spec is not None:
        spec = load_spec(args.spec)
    elif args.model == "demo":
        spec = demo_spec()
    else:
        spec = torchvision_spec(args.model)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise _UsageError(f"--checkpoint {args.checkpoint}: no such file.")
    from .explainer import Explainer

    model, report = spec.load_model(args.checkpoint)
    explainer = Explainer(
        model,
        list(spec.modalities),
        device=args.device,
        output=spec.output,
        classes=spec.classes_for(model),
        default_layer=spec.default_layer,
    )
    return spec, explainer, report


# -- inputs ---------------------------------------------------------------------------------------


def _parse_inputs(values: list[str], names: list[str]) -> dict[str, Path]:
    if not values:
        raise _UsageError(
            f"give the images with --input NAME=PATH for each modality: {', '.join(names)}."
        )
    paths: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not (sep and name in names):
            # One modality: a bare path will do, but "rgbb=x.png" is a typo, not a file name.
            if len(names) > 1 or (sep and name.isidentifier()):
                raise _UsageError(
                    f"--input {value!r}: expected NAME=PATH with NAME one of {', '.join(names)}."
                )
            name, path = names[0], value
        if name in paths:
            raise _UsageError(f"--input {name}= given twice; give one file or folder per modality.")
        if not Path(path).exists():
            raise _UsageError(f"--input {name}={path}: no such file or folder.")
        paths[name] = Path(path)
    missing = [n for n in names if n not in paths]
    if missing:
        raise _UsageError(
            f"no --input for modality {', '.join(missing)}; the model needs {', '.join(names)}."
        )
    return paths


def _samples(paths: dict[str, Path], modalities: list) -> list[_Sample]:
    """Pair the inputs into samples: folders by file stem, single files used for every sample."""
    folders = {name: _images_in(path) for name, path in paths.items() if path.is_dir()}
    if not folders:
        first = paths[modalities[0].name]
        return [_Sample(first.stem, dict(paths))]
    stems = {name: set(files) for name, files in folders.items()}
    common = set.intersection(*stems.values())
    for name, own in stems.items():
        extra = sorted(own - common)
        if extra:
            other = next(n for n in stems if extra[0] not in stems[n])
            raise _UsageError(
                f"--input {name}={paths[name]} has {len(extra)} image(s) with no match in "
                f"--input {other}={paths[other]} (paired by file name), first: {extra[0]}."
            )
    return [
        _Sample(stem, {n: folders[n][stem] if n in folders else p for n, p in paths.items()})
        for stem in sorted(common)
    ]


def _sample_folders(folder: Path, modalities: list, *, given_inputs: bool) -> list[_Sample]:
    if given_inputs:
        raise _UsageError("give either --samples or --input, not both.")
    if not folder.is_dir():
        raise _UsageError(f"--samples {folder}: no such folder.")
    names = [m.name for m in modalities]
    found = list_samples(folder, names)
    if not found:
        raise _UsageError(
            f"--samples {folder}: no sub-folder holds one image per modality "
            f"({', '.join(n + '.png' for n in names)})."
        )
    return [_Sample(name, {n: Path(p) for n, p in paths.items()}) for name, paths in found.items()]


def _images_in(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower().lstrip(".") not in IMAGE_SUFFIXES:
            continue
        if path.stem in files:
            raise _UsageError(
                f"{folder} holds both {files[path.stem].name} and {path.name}; images are paired "
                "by file name, so keep one per name."
            )
        files[path.stem] = path
    if not files:
        raise _UsageError(
            f"folder {folder} holds no images ({', '.join('.' + s for s in IMAGE_SUFFIXES)})."
        )
    return files


def _decode(
    chunk: list[_Sample], modalities: list, run: _Run
) -> list[tuple[_Sample, dict[str, np.ndarray]]]:
    """Each sample's images; a sample with an unreadable image is skipped and recorded."""
    from .images import load_image

    decoded = []
    for sample in chunk:
        try:
            images = {m.name: load_image(sample.paths[m.name], m.channels) for m in modalities}
        except InputError as exc:
            message = f"{sample.name}: {_one_line(exc)}"
            run.skipped.append({"name": sample.name, "error": message})
            print(f"\nskipped {message}", file=sys.stderr)
            continue
        decoded.append((sample, images))
    return decoded


def _same_size_groups(decoded: list) -> list[list]:
    """Split a batch where images differ in size (modalities without a fixed ``size``)."""
    groups: dict[tuple, list] = {}
    for sample, images in decoded:
        key = tuple(image.shape[:2] for image in images.values())
        groups.setdefault(key, []).append((sample, images))
    return list(groups.values())


def _parse_target(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


# -- outputs --------------------------------------------------------------------------------------


def _write(result: Any, samples: list[_Sample], args: argparse.Namespace, run: _Run) -> None:
    from .export import overlay_pngs
    from .metrics import score_masks

    pngs = overlay_pngs(result, colormap=args.colormap, image_weight=args.image_weight)
    masks = [_mask_of(sample, args.masks) for sample in samples] if args.masks else []
    truth = score_masks(result, masks) if masks else {}
    probabilities = np.asarray(result.probabilities, dtype=np.float64)
    for i, sample in enumerate(samples):
        files: dict[str, dict[str, str]] = {}
        for name in result.cams:
            stem = f"{sample.name}_{name}"
            files[name] = {"overlay": f"overlays/{stem}.png", "cam": f"cams/{stem}.npy"}
            (args.out / files[name]["overlay"]).write_bytes(pngs[name][i])
            np.save(args.out / files[name]["cam"], result.cams[name][i].astype(np.float32))
            if name in result.raw:
                files[name]["raw"] = f"raw/{stem}.npy"
                np.save(args.out / files[name]["raw"], result.raw[name][i].astype(np.float32))
        predicted = int(probabilities[i].argmax())
        target = int(result.targets[i])
        run.samples.append(
            {
                "name": sample.name,
                "inputs": {name: str(path) for name, path in sample.paths.items()},
                "predicted": predicted,
                "predicted_name": result.class_name(predicted),
                "target": target,
                "target_name": result.class_name(target),
                "probabilities": [round(float(p), 6) for p in probabilities[i]],
                "no_signal": {n: bool(e[i]) for n, e in result.empty.items()},
                "files": files,
            }
        )
        if masks:
            scored = {n: {k: v[i] for k, v in s.items()} for n, s in truth.items()}
            run.samples[-1]["ground_truth"] = (
                None
                if not scored or any(v is None for s in scored.values() for v in s.values())
                else scored
            )
    run.notices.extend(n for n in result.notices if n not in run.notices)


def _mask_of(sample: _Sample, folder: Path) -> Any:
    """The sample's mask from ``folder/<sample>.<image>`` or ``folder/<sample>/mask.png``, at
    the size of the sample's first image; None when there is none."""
    from .metrics import load_mask

    found = [folder / sample.name / "mask.png"]
    found += [folder / f"{sample.name}.{suffix}" for suffix in IMAGE_SUFFIXES]
    path = next((p for p in found if p.is_file()), None)
    return None if path is None else load_mask(path)


def _ground_truth_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per modality over the samples with a mask: the share of pointing-game hits and the mean
    energy in mask."""
    per_modality: dict[str, dict[str, list]] = {}
    for sample in samples:
        for name, scores in (sample.get("ground_truth") or {}).items():
            entry = per_modality.setdefault(name, {"pointing_game": [], "energy_in_mask": []})
            entry["pointing_game"].append(scores["pointing_game"])
            entry["energy_in_mask"].append(scores["energy_in_mask"])
    return {
        name: {
            "samples": len(entry["pointing_game"]),
            "pointing_game": round(float(np.mean(entry["pointing_game"])), 6),
            "energy_in_mask": round(float(np.mean(entry["energy_in_mask"])), 6),
        }
        for name, entry in per_modality.items()
    }


# -- argument types and messages -------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
