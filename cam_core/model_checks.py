"""Checks of a model against its inputs that turn raw torch errors into :class:`CamError` s.

* :func:`check_signature` — the modalities against ``forward``'s arguments, when the
  :class:`~cam_core.Explainer` is built (not at the first request, as a ``TypeError``).
* :func:`input_size_error` — a ``RuntimeError`` from the model's forward that comes from an
  input of a size it cannot take, as an :class:`InputError` naming the modality and the size
  it accepts.
* :func:`is_out_of_memory` — whether an exception is an allocation failure (CUDA or CPU).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .errors import InputError
from .modality import Modality

__all__ = ["check_signature", "input_size_error", "is_out_of_memory"]

_P = inspect.Parameter
_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
# Words of torch's messages for inputs of the wrong size (conv, linear, view, cat, attention).
_SIZE_WORDS = ("shape", "size", "mat1 and mat2", "dimension")
_FIX = (
    "list one Modality per forward argument, in order, or pass one by keyword with "
    "Modality(name, arg='x_p')"
)


def check_signature(model: torch.nn.Module, modalities: Sequence[Modality]) -> None:
    """Raise :class:`InputError` when ``modalities`` cannot be passed to ``model.forward``.

    Positional modalities (``arg=None``) fill the positional parameters in order; keyword
    ones need a parameter of that name.  ``*args`` / ``**kwargs`` accept any number / name.
    Models whose signature cannot be read are not checked.
    """
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return
    params = list(signature.parameters.values())
    kinds = {p.kind for p in params}
    positional = [p for p in params if p.kind in _POSITIONAL]
    by_position = [m.name for m in modalities if not m.arg]
    by_keyword = [m.arg for m in modalities if m.arg]
    filled = {p.name for p in positional[: len(by_position)]}
    problems = []
    if len(by_position) > len(positional) and _P.VAR_POSITIONAL not in kinds:
        problems.append(
            f"{len(by_position)} modalities are passed by position ({', '.join(by_position)}) "
            f"but forward takes {len(positional)} positional argument(s)"
        )
    named = {p.name for p in params if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)}
    unknown = [a for a in by_keyword if a not in named and _P.VAR_KEYWORD not in kinds]
    if unknown:
        problems.append(f"forward has no argument named {', '.join(map(repr, unknown))}")
    clash = [a for a in by_keyword if a in filled]
    if clash:
        problems.append(f"{', '.join(map(repr, clash))} would be given twice (position and name)")
    missing = [
        p.name
        for p in params
        if p.default is _P.empty
        and p.kind in (*_POSITIONAL, _P.KEYWORD_ONLY)
        and p.name not in filled
        and p.name not in by_keyword
    ]
    if missing:
        problems.append(f"no modality gives the required argument(s) {', '.join(missing)}")
    if problems:
        raise InputError(
            f"the modalities ({', '.join(m.name for m in modalities)}) do not match "
            f"{type(model).__name__}.forward{signature}: {'; '.join(problems)}. Fix: {_FIX}."
        )


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: CUDA OOM, or the CPU allocator giving up."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def input_size_error(
    exc: RuntimeError, modalities: Sequence[Modality], sizes: Mapping[str, tuple[int, int]]
) -> InputError | None:
    """An :class:`InputError` for a forward that failed on an input's size, or None when
    ``exc`` does not look like one (the caller re-raises it as is: a bug in the model, whatever
    its message, is not disguised as the user's input error).

    It is one when torch's message is about sizes and one modality is out of line: its size
    differs from its ``Modality.size``, or (three or more modalities) from all the others';
    the size it accepts is that declared or common size.
    """
    text = str(exc)
    if is_out_of_memory(exc) or not any(word in text.lower() for word in _SIZE_WORDS):
        return None
    culprit, accepted = _odd_one_out(modalities, sizes)
    if culprit is None:
        return None
    given = ", ".join(f"{name} {h}×{w}" for name, (h, w) in sizes.items())
    first = text.strip().splitlines()[0]
    h, w = sizes[culprit]
    hint = (
        f"{culprit} is {h}×{w}, but the model takes {accepted[0]}×{accepted[1]}: give "
        f"{culprit} at that size (images are resized to Modality(size=...), tensors are not)"
    )
    return InputError(
        f"the model cannot take inputs of these sizes ({given}): its forward raised "
        f"{type(exc).__name__}: {first}. Fix: {hint}.",
        modality=culprit,
    )


def _odd_one_out(
    modalities: Sequence[Modality], sizes: Mapping[str, tuple[int, int]]
) -> tuple[str | None, Any]:
    for m in modalities:
        if m.size is not None and m.name in sizes and tuple(sizes[m.name]) != tuple(m.size):
            return m.name, tuple(m.size)
    values = list(sizes.values())
    for name, size in sizes.items():
        others = [v for n, v in sizes.items() if n != name]
        common = others and all(v == others[0] for v in others) and size != others[0]
        if common and values.count(size) == 1 and len(values) > 2:
            return name, others[0]
    return None, None
