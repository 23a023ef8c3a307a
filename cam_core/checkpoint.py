"""Loading a state_dict checkpoint into a model safely.

``torch.load(..., weights_only=True, map_location="cpu")`` only: a file that needs arbitrary
pickles (a whole pickled model, custom classes, a ``__reduce__`` payload) is refused before any
of its code can run.  Every key, shape and tensor (dense, strided, on the CPU, not meta, a dtype
``copy_`` can take) is checked before the model is touched, so a failed load leaves the model
exactly as it was; ``load_state_dict`` itself stops half-way on a sparse or meta tensor.
NaN or infinite values load, with a warning and a line in the report (a diverged training run
is still worth a look).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import re
import sys
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from .errors import ModelLoadError

__all__ = [
    "CheckpointReport",
    "CheckpointSource",
    "apply_state_dict",
    "load_checkpoint",
    "read_state_dict",
    "strip_wrapper_prefix",
]

CheckpointSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

# Keys under which training scripts commonly nest the weights, tried in this order.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")
# Prefixes added by wrappers: DataParallel/DistributedDataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 8
_HOW_TO_SAVE = (
    "save the weights only with `torch.save(model.state_dict(), 'weights.pt')` "
    "and load that file instead"
)


@dataclass(frozen=True)
class CheckpointReport:
    """What :func:`load_checkpoint` found and did.

    Attributes:
        source: the file name (or ``"<bytes>"``) the checkpoint came from.
        tensors: number of tensors loaded into the model.
        nested_under: key the state_dict was found under (``"state_dict"``, ``"model"``, ...),
            ``None`` for a bare state_dict.
        stripped_prefix: wrapper prefix removed from every key (``"module."``), or ``None``.
        ignored_entries: other top-level entries of a nested checkpoint (``"epoch"``,
            ``"optimizer"``, ...), not loaded.
        non_finite: keys of loaded tensors that hold NaN or infinite values.
    """

    source: str
    tensors: int
    nested_under: str | None = None
    stripped_prefix: str | None = None
    ignored_entries: tuple[str, ...] = field(default_factory=tuple)
    non_finite: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        parts = [f"loaded {self.tensors} tensors from {self.source}"]
        if self.nested_under is not None:
            parts.append(f"state_dict found under {self.nested_under!r}")
        if self.stripped_prefix is not None:
            parts.append(f"prefix {self.stripped_prefix!r} stripped")
        if self.ignored_entries:
            parts.append(f"ignored {_listing(self.ignored_entries)}")
        if self.non_finite:
            parts.append(f"NaN or infinite values in {_listing(self.non_finite)}")
        return "; ".join(parts)


def load_checkpoint(model: nn.Module, source: CheckpointSource) -> CheckpointReport:
    """Load a state_dict checkpoint into ``model`` (strict), leaving it unchanged on failure.

    Args:
        model: the module to load into; its parameters and buffers are copied in place.
        source: path, raw bytes, or a binary file object of a ``.pt``/``.pth`` file saved with
            ``torch.save``.  Accepted content: a bare state_dict, or a dict holding one under
            ``state_dict``, ``model_state_dict`` or ``model``; a ``module.``/``_orig_mod.``
            prefix on every key is stripped.  Tensors saved on a GPU load on the CPU.

    Returns:
        A :class:`CheckpointReport` of what was loaded, nested or stripped.

    Raises:
        ModelLoadError: empty, truncated or non-checkpoint file; a file that needs arbitrary
            pickles; missing, unexpected or mis-shaped keys (all listed).
    """
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"load_checkpoint needs an nn.Module to load into, got {type(model).__name__}."
        )
    state, report = read_state_dict(source)
    return apply_state_dict(model, state, report)


def apply_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], report: CheckpointReport
) -> CheckpointReport:
    """Second half of :func:`load_checkpoint`, for a state_dict already read by
    :func:`read_state_dict`: strip a wrapper prefix, check every key and shape, then load."""
    state, prefix = strip_wrapper_prefix(state, model.state_dict().keys())
    _check_compatible(state, model, report.source)
    non_finite = _non_finite(state, report.source)
    # Every key, shape, layout, device and dtype matched above, so this strict load cannot
    # stop half-way; should torch still refuse, say so rather than pass its error on raw.
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"Checkpoint {report.source} could not be copied into the model: "
            f"{_first_line(str(exc))}. Reload the model before using it."
        ) from exc
    return dataclasses.replace(
        report, tensors=len(state), stripped_prefix=prefix, non_finite=non_finite
    )


def _non_finite(state: Mapping[str, torch.Tensor], name: str) -> tuple[str, ...]:
    """Keys whose (floating) tensor holds NaN or inf; warns when there are any."""
    keys = tuple(
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    )
    if keys:
        warnings.warn(
            f"Checkpoint {name}: NaN or infinite values in {_listing(keys)}; the model's "
            "outputs and heatmaps may be NaN (was the training run diverging?).",
            RuntimeWarning,
            stacklevel=3,
        )
    return keys


def read_state_dict(source: CheckpointSource) -> tuple[dict[str, torch.Tensor], CheckpointReport]:
    """Read the state_dict out of a checkpoint without loading it into any model.

    Returns the ``{key: tensor}`` dict (on the CPU, keys as saved) and a report whose
    ``tensors``, ``nested_under`` and ``ignored_entries`` describe it.
    """
    data, name = _read_bytes(source)
    obj = _safe_torch_load(data, name)
    return _find_state_dict(obj, name)


def _read_bytes(source: CheckpointSource) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<uploaded bytes>"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise ModelLoadError(f"Checkpoint {name}: no such file; check the path.")
        if path.is_dir():
            raise ModelLoadError(
                f"Checkpoint {name} is a folder; give the .pt/.pth file inside it."
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"Checkpoint {name} could not be read: {exc}.") from exc
    elif hasattr(source, "read"):
        name = str(getattr(source, "name", "<uploaded file>"))
        if hasattr(source, "seek"):
            source.seek(0)
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ModelLoadError(
                f"Checkpoint {name}: the file object returned {type(data).__name__}, not bytes; "
                "open it in binary mode ('rb')."
            )
        data = bytes(data)
    else:
        raise ModelLoadError(
            f"Checkpoint source must be a path, bytes or a binary file object, got "
            f"{type(source).__name__}."
        )
    if not data:
        raise ModelLoadError(
            f"Checkpoint {name} is empty (0 bytes); the upload or save did not complete."
        )
    return data, name


def _safe_torch_load(data: bytes, name: str) -> object:
    if data[:1] == b"{" or data[8:10] == b'{"':
        raise ModelLoadError(
            f"Checkpoint {name} looks like a JSON or safetensors file, not a torch.save file; "
            f"{_HOW_TO_SAVE}."
        )
    if data[:2] != b"PK" and data[:1] != b"\x80":
        # torch.save writes a zip archive (new format) or a protocol-2 pickle (legacy format).
        raise ModelLoadError(
            f"Checkpoint {name} ({len(data)} bytes, starts with {data[:8]!r}) is not a PyTorch "
            f"checkpoint; {_HOW_TO_SAVE}."
        )
    try:
        with warnings.catch_warnings():
            # Protocol-version chatter from the weights-only unpickler says nothing to a user.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(_refused_pickle_message(name, str(exc))) from exc
    except Exception as exc:  # torch raises a zoo of types on garbage: EOF, KeyError, Runtime...
        kind = "truncated or corrupted" if data[:2] == b"PK" else "not a PyTorch checkpoint"
        raise ModelLoadError(
            f"Checkpoint {name} ({len(data)} bytes) is {kind}: torch.load failed with "
            f"{type(exc).__name__}: {_first_line(str(exc))} — save it again with "
            "`torch.save(model.state_dict(), path)` and upload the whole file."
        ) from exc


def _refused_pickle_message(name: str, error: str) -> str:
    match = re.search(r"GLOBAL ([\w.]+)", error)
    if match is None:
        return (
            f"Checkpoint {name} was refused: it is a pickle that a weights-only load does not "
            f"accept ({_first_line(error.split('WeightsUnpickler error:')[-1])}), and loading it "
            f"fully could run arbitrary code. Only state_dicts are loaded: {_HOW_TO_SAVE}."
        )
    found = match.group(1)
    what = (
        f"it is a whole pickled model ({found})"
        if _is_module_class(found)
        else f"it holds a pickled Python object ({found}), not only tensors"
    )
    return (
        f"Checkpoint {name} was refused: {what}, and loading it would run arbitrary code. "
        f"Only state_dicts are loaded: {_HOW_TO_SAVE}."
    )


def _is_module_class(qualified: str) -> bool:
    module_name, _, attr = qualified.rpartition(".")
    if module_name.startswith("torch.nn"):
        return True
    # Do not import anything the file names; look only at modules already loaded.
    module = sys.modules.get(module_name)
    obj = getattr(module, attr, None) if module is not None else None
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def _find_state_dict(obj: object, name: str) -> tuple[dict[str, torch.Tensor], CheckpointReport]:
    if not isinstance(obj, Mapping):
        raise ModelLoadError(
            f"Checkpoint {name} holds a {type(obj).__name__}, not a state_dict (a dict of "
            f"tensors); {_HOW_TO_SAVE}."
        )
    if _is_state_dict(obj):
        return dict(obj), CheckpointReport(source=name, tensors=len(obj))
    for key in _NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and _is_state_dict(inner):
            ignored = tuple(str(k) for k in obj if k != key)
            report = CheckpointReport(
                source=name, tensors=len(inner), nested_under=key, ignored_entries=ignored
            )
            return dict(inner), report
    keys = [str(k) for k in obj]
    non_tensors = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not _is_tensor(v)]
    raise ModelLoadError(
        f"Checkpoint {name} is a dict but not a state_dict: top-level keys {_listing(keys)}; "
        f"non-tensor values {_listing(non_tensors)}. Expected tensors at the top level or under "
        f"one of {', '.join(_NESTED_KEYS)}; {_HOW_TO_SAVE}."
    )


def _is_tensor(value: object) -> bool:
    return isinstance(value, torch.Tensor)


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and _is_tensor(v) for k, v in obj.items())


def strip_wrapper_prefix(
    state: Mapping[str, torch.Tensor], model_keys: Collection[str]
) -> tuple[dict[str, torch.Tensor], str | None]:
    """Remove a ``module.``/``_orig_mod.`` prefix carried by every key, unless the model's own
    keys (``model_keys``) carry it too.  Returns the new dict and the prefix removed (or None)."""
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state) and not any(
            k.startswith(prefix) for k in model_keys
        ):
            return {k[len(prefix) :]: v for k, v in state.items()}, prefix
    return dict(state), None


def _check_compatible(state: Mapping[str, torch.Tensor], model: nn.Module, name: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    kinds = [
        f"{k} {problem}"
        for k, v in expected.items()
        if k in state and (problem := _tensor_problem(state[k], v)) is not None
    ]
    if not (missing or unexpected or shapes or kinds):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} with the wrong shape: {_listing(shapes)}")
    if kinds:
        problems.append(f"{len(kinds)} that cannot be loaded: {_listing(kinds)}")
    raise ModelLoadError(
        f"Checkpoint {name} does not fit this model ({type(model).__name__}): "
        + "; ".join(problems)
        + ". Check that the checkpoint was saved from the same architecture and settings "
        "(number of classes, image size); the model was left unchanged."
    )


def _tensor_problem(src: torch.Tensor, dst: torch.Tensor) -> str | None:
    """Why ``src`` cannot be copied into the model's ``dst`` without a half-done load, or None.

    ``load_state_dict`` copies tensor by tensor and raises on the first it cannot take
    (sparse, meta, quantized, complex into real), after the others were overwritten.
    """
    if src.layout != torch.strided:
        return f"is a {str(src.layout).removeprefix('torch.')} tensor; save it dense (.to_dense())"
    if src.is_meta:
        return "is a meta tensor (no data: saved from a model built on the 'meta' device)"
    if src.device.type != "cpu":
        return f"is on {src.device}, not the CPU"
    if src.is_quantized:
        return f"is quantized ({src.dtype}); save the float weights"
    if dst.is_floating_point():
        if not src.is_floating_point():
            return f"is {src.dtype}, not floating point (model {dst.dtype})"
    elif src.dtype != dst.dtype and not (_is_integer(src) and _is_integer(dst)):
        return f"checkpoint {src.dtype} vs model {dst.dtype}"
    return None


def _is_integer(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _listing(items: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "") if items else "none"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else "(no message)"
    return line if len(line) <= 200 else line[:197] + "..."
