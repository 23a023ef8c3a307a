"""Export a :class:`~cam_core.CamResult`: overlay PNGs, one ZIP of everything, a settings file.

The app shows exactly the PNG bytes :func:`overlay_pngs` returns and puts the same bytes in the
ZIP, so what a user downloads is pixel for pixel what they saw.

ZIP layout (``i`` = sample index, two digits; ``m`` = modality name)::

    settings.json            model, layer(s), method, target, colormap, image_weight, ...
    overlays/{i}_{m}.png     heatmap blended on the image, uint8 RGB at the upload's own size
    originals/{i}_{m}.png    the image the heatmap is drawn on (un-normalized), same size
    cams/{i}_{m}.npy         float32 (H, W) in [0, 1]: the CAM at the modality's input size
    raw/{i}_{m}.npy          float32 (h, w): the un-normalized map at the layer's resolution
"""

from __future__ import annotations

import functools
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .overlay import to_png

__all__ = [
    "original_pngs",
    "overlay_png",
    "overlay_pngs",
    "read_settings",
    "result_zip",
    "settings_dict",
    "zip_names",
]

SETTINGS_VERSION = 1


def overlay_pngs(result: Any, *, colormap: str, image_weight: float) -> dict[str, list[bytes]]:
    """Per modality, one PNG (bytes) per sample of the overlay at these display settings.

    Blending and PNG encoding run on a small thread pool (OpenCV and numpy release the GIL):
    this is the work of every slider move in the app.
    """
    names = list(result.cams)
    pool = _pool()
    blended = dict(
        zip(names, pool.map(lambda n: result.overlay(n, colormap, image_weight, True), names))
    )
    jobs = [(name, i) for name in names for i in range(len(blended[name]))]
    encoded = pool.map(lambda job: to_png(blended[job[0]][job[1]]), jobs)
    out: dict[str, list[bytes]] = {name: [] for name in names}
    for (name, _), png in zip(jobs, encoded):
        out[name].append(png)
    return out


def overlay_png(
    result: Any, modality: str, index: int, *, colormap: str, image_weight: float
) -> bytes:
    """PNG bytes of one overlay: sample ``index`` of ``modality``."""
    return to_png(result.overlay(modality, colormap, image_weight, True)[index])


def original_pngs(result: Any) -> dict[str, list[bytes]]:
    """Per modality, one PNG per sample of the (un-normalized) image the CAM is drawn on."""
    return {name: [to_png(image) for image in result.images(name)] for name in result.cams}


def zip_names(index: int, modality: str) -> dict[str, str]:
    """The ZIP member names of one sample/modality, by kind (overlay, original, cam, raw)."""
    stem = f"{index:02d}_{modality}"
    return {
        "overlay": f"overlays/{stem}.png",
        "original": f"originals/{stem}.png",
        "cam": f"cams/{stem}.npy",
        "raw": f"raw/{stem}.npy",
    }


def settings_dict(
    result: Any,
    *,
    model: str,
    target: int | None,
    colormap: str,
    image_weight: float,
    inputs: Mapping[str, Sequence[str]] | None = None,
    samples: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Everything needed to reproduce a view, JSON-ready (:func:`read_settings` reads it back).

    Args:
        result: the CamResult shown.
        model: the model's name in the app (``"demo"``, a spec file's name, ...).
        target: the requested target: ``None`` = the predicted class of each sample.
        colormap, image_weight: the display settings.
        inputs: per modality, the file names of the inputs, in batch order.
        samples: the bundled samples explained, when the inputs are samples.
    """
    probabilities = np.asarray(result.probabilities, dtype=np.float64)
    targets = [int(t) for t in result.targets]
    return {
        "version": SETTINGS_VERSION,
        "model": model,
        "layer": result.layer,
        "layers": dict(result.layers),
        "method": result.method,
        "target": None if target is None else int(target),
        "targets": targets,
        "target_names": [result.class_name(t) for t in targets],
        "options": {k: _jsonable(v) for k, v in dict(result.options).items()},
        "colormap": colormap,
        "image_weight": float(image_weight),
        "modalities": list(result.cams),
        "classes": None if result.classes is None else list(result.classes),
        "probabilities": [[round(float(p), 6) for p in row] for row in probabilities],
        "no_signal": {name: [bool(e) for e in result.empty[name]] for name in result.empty},
        "notices": list(result.notices),
        "inputs": None if inputs is None else {k: list(v) for k, v in inputs.items()},
        "samples": None if not samples else list(samples),
    }


#: What :func:`read_settings` returns, with the JSON types each value must have.
_VIEW_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "layer": (str, type(None)),
    "method": (str,),
    "target": (int, type(None)),
    "colormap": (str,),
    "image_weight": (int, float),
    "options": (dict,),
    "samples": (list, type(None)),
}


def read_settings(data: bytes | str, source: str = "settings.json") -> dict[str, Any]:
    """The view a ``settings.json`` (from :func:`settings_dict` or a downloaded ZIP) describes.

    Returns:
        ``{"model", "layer", "method", "target", "colormap", "image_weight", "options",
        "samples"}``, the ones the file has (older files lack ``samples``).
    Raises:
        InputError: the file is not such a JSON object, or a value has the wrong type.
    """
    from .errors import InputError

    try:
        settings = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(
            f"{source} is not a settings file (not valid JSON). Load the settings.json of a "
            "downloaded ZIP."
        ) from None
    if not isinstance(settings, dict) or "method" not in settings:
        raise InputError(
            f"{source} is not a settings file: it has no method. Load the settings.json of a "
            "downloaded ZIP."
        )
    view = {}
    for name, types in _VIEW_FIELDS.items():
        if name not in settings:
            continue
        value = settings[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise InputError(
                f"{source}: {name} is {value!r}, which is not a valid {name}. Load the "
                "settings.json of a downloaded ZIP, or correct that value."
            )
        view[name] = value
    return view


def result_zip(
    result: Any,
    *,
    colormap: str,
    image_weight: float,
    settings: Mapping[str, Any],
    overlays: Mapping[str, Sequence[bytes]] | None = None,
) -> bytes:
    """One ZIP with overlays, originals, CAMs and raw maps of every sample and modality, plus
    ``settings.json`` (see the module docstring for the layout).

    ``overlays``: the PNGs of :func:`overlay_pngs` at these settings when the caller already
    has them (the app passes what it shows); encoded here otherwise.
    """
    if overlays is None:
        overlays = overlay_pngs(result, colormap=colormap, image_weight=image_weight)
    originals = original_pngs(result)
    buffer = io.BytesIO()
    # PNGs are already compressed: store them; deflate only the .npy arrays and the JSON.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        files = ["settings.json"]
        for name in result.cams:
            for i in range(len(result.cams[name])):
                names = zip_names(i, name)
                archive.writestr(names["overlay"], overlays[name][i])
                archive.writestr(names["original"], originals[name][i])
                archive.writestr(
                    names["cam"], _npy(result.cams[name][i]), compress_type=zipfile.ZIP_DEFLATED
                )
                files.extend([names["overlay"], names["original"], names["cam"]])
                # Some methods have no layer-resolution map (``raw`` lacks the modality).
                if name in result.raw:
                    archive.writestr(
                        names["raw"], _npy(result.raw[name][i]), compress_type=zipfile.ZIP_DEFLATED
                    )
                    files.append(names["raw"])
        payload = dict(settings)
        payload["files"] = files
        archive.writestr(
            "settings.json",
            json.dumps(payload, indent=2, default=_json_default),
            compress_type=zipfile.ZIP_DEFLATED,
        )
    return buffer.getvalue()


@functools.cache
def _pool() -> ThreadPoolExecutor:
    # One pool per process, created on first use; a few threads suffice for a screenful.
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="export")


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return out.getvalue()


def _jsonable(value: Any) -> Any:
    # numpy scalars/arrays and tuples appear in result.options; JSON needs plain types.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    converted = _jsonable(value)
    return str(value) if converted is value else converted
