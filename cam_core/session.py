"""UI-free helpers of an interactive session: batches of uploads, cache keys, a result cache.

The Streamlit pages stay thin by calling these: they pair per-modality uploads into one batch,
re-check upload sizes (the browser-side limit is not a guarantee), hash input *content* for cache
keys, and keep computed :class:`~cam_core.CamResult` objects in a bounded, thread-safe LRU so that
a slider move (colormap, image_weight) never calls the model again.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from .errors import CamError, InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "Decoded",
    "ModelCaches",
    "ResultCache",
    "RESULT_CACHE_MB",
    "SESSION_DECODED_MB",
    "bytes_digest",
    "cam_key",
    "charge",
    "nbytes",
    "check_upload_size",
    "content_hash",
    "decode_input",
    "inputs_digest",
    "list_samples",
    "pair_batches",
    "top_k",
]

#: File suffixes offered by the upload widgets and recognised in sample folders.
IMAGE_SUFFIXES = ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "gif")

T = TypeVar("T")
V = TypeVar("V")

#: Bytes of CAM results one model's cache keeps (all sessions together): 16 demo results take
#: under 2 MB, one 2000x2000 three-modality result about 29 MB.
RESULT_CACHE_MB = 256
#: Decoded pixels one browser session keeps for its uploads: a 115 KB PNG under the 40 MP cap
#: decodes to 119 MB, so two such files fit and a third is refused with this limit named.
SESSION_DECODED_MB = 256
_MB = 1024 * 1024


def nbytes(value: Any) -> int:
    """Bytes held by the arrays and tensors in ``value`` (numpy, torch, and dicts, lists,
    tuples and objects of them, e.g. a :class:`~cam_core.CamResult`); other data counts 0."""
    return _nbytes(value, set())


def _nbytes(value: Any, seen: set[int]) -> int:
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return int(value.nelement() * value.element_size())
    if isinstance(value, Mapping):
        return sum(_nbytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v, seen) for v in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return _nbytes(vars(value), seen)
    if hasattr(value, "__dataclass_fields__"):  # slotted dataclass
        return sum(_nbytes(getattr(value, f), seen) for f in value.__dataclass_fields__)
    return 0


def content_hash(array: np.ndarray) -> str:
    """Hex digest of an array's dtype, shape and bytes: equal pixels give equal keys.

    Hashing decoded pixels rather than file bytes makes the same picture saved twice (or
    re-uploaded under another name) hit the same cached CAM.
    """
    array = np.ascontiguousarray(array)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def inputs_digest(inputs: Mapping[str, Sequence[np.ndarray]]) -> dict[str, list[str]]:
    """Per modality, the content hashes of its images, in batch order."""
    return {name: [content_hash(image) for image in images] for name, images in inputs.items()}


def cam_key(
    model: str,
    digests: Mapping[str, Sequence[str]],
    *,
    layer: str,
    method: str,
    target: int | None,
    options: Mapping[str, Any] | None = None,
) -> tuple:
    """Cache key of one explain request: (model, input content hashes, layer, method, target,
    options). Everything that changes the CAM is in it; display settings are not.

    Args:
        digests: per modality, the :func:`content_hash` of each input image, in batch order
            (see :func:`inputs_digest`; the app keeps them from decoding time).
    """
    inputs = tuple((name, tuple(digests[name])) for name in sorted(digests))
    opts = tuple(sorted((options or {}).items()))
    return (model, inputs, layer, method, target, opts)


@dataclass(frozen=True)
class Decoded:
    """One input file after decoding: the image and its content hash, or why it failed."""

    name: str
    image: np.ndarray | None = None
    digest: str | None = None
    notes: tuple[str, ...] = ()
    error: str | None = None


def decode_input(
    data: bytes, name: str, *, channels: int, limit_mb: float, modality: str
) -> Decoded:
    """Size-check and decode one uploaded file with :func:`~cam_core.load_image`.

    Never raises for a bad file: the returned :class:`Decoded` carries the error message
    (a UI shows it next to that modality's input and keeps the others).
    """
    from .images import load_image

    notes: list[str] = []
    try:
        check_upload_size(name, len(data), limit_mb, modality=modality)
        image = load_image(data, channels=channels, notes=notes)
    except CamError as exc:
        return Decoded(name, error=str(exc))
    return Decoded(name, image, content_hash(image), tuple(notes))


def charge(
    decoded: Decoded, spent: int, limit_mb: float = SESSION_DECODED_MB
) -> tuple[Decoded, int]:
    """Count one decoded upload against a session's budget of decoded pixels.

    Args:
        spent: bytes of the session's uploads counted so far (in upload order).
    Returns:
        ``(decoded, spent + its bytes)``, or, when it does not fit, a :class:`Decoded` with an
        error and no pixels (so the caller's memo drops them) and ``spent`` unchanged.
    """
    if decoded.image is None:
        return decoded, spent
    size = decoded.image.nbytes
    if spent + size <= limit_mb * _MB:
        return decoded, spent + size
    error = (
        f"decoded, it takes {size / _MB:.1f} MB, and this session's other images already take "
        f"{spent / _MB:.1f} MB; the limit is {limit_mb:g} MB of decoded images per session. "
        "Remove some files (or downscale this one) and upload it again."
    )
    return Decoded(decoded.name, error=error), spent


def pair_batches(files: Mapping[str, Sequence[T]], modalities: Sequence[str]) -> dict[str, list[T]]:
    """Check that every modality has inputs and all have the same count; items pair by order.

    Args:
        files: per modality name, its items (uploads, decoded images, ...) in upload order.
        modalities: the model's modality names, in order.
    Returns:
        ``{modality: list of items}`` in the order of ``modalities``; item ``i`` of each list
        together form sample ``i``.
    Raises:
        InputError: a modality has no input (``.modality`` set), or the counts differ.
    """
    for name in modalities:
        if not files.get(name):
            raise InputError(
                f"No image for modality {name!r}: upload one per sample "
                f"(the model needs {', '.join(modalities)}).",
                modality=name,
            )
    counts = {name: len(files[name]) for name in modalities}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{name}: {n}" for name, n in counts.items())
        raise InputError(
            f"Different numbers of images per modality ({listing}). Images are paired across "
            "modalities by upload order, so give every modality the same number of files."
        )
    return {name: list(files[name]) for name in modalities}


def check_upload_size(
    filename: str,
    size: int,
    limit_mb: float,
    *,
    modality: str | None,
    hint: str = "Downscale or recompress it.",
) -> None:
    """Refuse a file over the size limit, naming the file, its size and the limit.

    The per-widget limit of a file uploader is enforced by the browser only, and the server's
    ``server.maxUploadSize`` may be configured larger than what decoding should accept.

    Args:
        modality: the modality the file was uploaded for (``None`` for a checkpoint).
        hint: what to do about it, appended to the message.
    """
    if size > limit_mb * 1024 * 1024:
        raise InputError(
            f"{filename} is {size / 1024 / 1024:.1f} MB; the limit is {limit_mb:g} MB per file. "
            + hint,
            modality=modality,
        )


def bytes_digest(data: bytes | memoryview) -> str:
    """Hex digest of raw bytes (an uploaded checkpoint): equal files give equal keys."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def top_k(
    probabilities: np.ndarray, class_name: Any, k: int = 5
) -> list[list[tuple[int, str, float]]]:
    """Per sample, the ``k`` most probable classes as ``(index, name, probability)``.

    Args:
        probabilities: ``(N, K)`` float.
        class_name: callable ``index -> str`` (e.g. ``CamResult.class_name``).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    rows = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")[:k]
        rows.append([(int(i), str(class_name(int(i))), float(row[i])) for i in order])
    return rows


def list_samples(directory: str | Path | None, modalities: Sequence[str]) -> dict[str, dict]:
    """Sample sets in ``directory``: each sub-folder holding one image per modality.

    Returns ``{folder name: {modality: path}}``, sorted by name; folders missing a modality are
    skipped (a sample must be complete to be explained).
    """
    if directory is None or not Path(directory).is_dir():
        return {}
    samples: dict[str, dict] = {}
    for folder in sorted(p for p in Path(directory).iterdir() if p.is_dir()):
        found = {}
        for name in modalities:
            for suffix in IMAGE_SUFFIXES:
                path = folder / f"{name}.{suffix}"
                if path.is_file():
                    found[name] = path
                    break
        if len(found) == len(modalities):
            samples[folder.name] = found
    return samples


class ResultCache(Generic[V]):
    """A least-recently-used mapping bounded in entries *and* bytes, safe to share between
    sessions (threads).

    One instance is shared by all browser sessions (``st.cache_resource``); keys carry the
    input content, so one user's hit is never another user's image.  A value's bytes are those
    of its arrays and tensors (:func:`nbytes`); one larger than ``max_bytes`` is not kept.
    """

    def __init__(self, max_entries: int = 16, max_bytes: int = RESULT_CACHE_MB * _MB) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        """The cached value, or ``None``; a hit becomes the most recently used."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: V) -> None:
        """Store a value, evicting the least recently used beyond ``max_entries`` or
        ``max_bytes``; a value over ``max_bytes`` on its own is not stored."""
        size = nbytes(value)
        with self._lock:
            self._items.pop(key, None)
            self._sizes.pop(key, None)
            if size > self.max_bytes:
                return
            self._items[key] = value
            self._sizes[key] = size
            while len(self._items) > self.max_entries or self._total() > self.max_bytes:
                old, _ = self._items.popitem(last=False)
                del self._sizes[old]

    @property
    def bytes(self) -> int:
        """Bytes of every cached value's arrays and tensors."""
        with self._lock:
            return self._total()

    def _total(self) -> int:
        return sum(self._sizes.values())

    def clear(self) -> None:
        """Forget everything (e.g. after the model was reloaded)."""
        with self._lock:
            self._items.clear()
            self._sizes.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class ModelCaches:
    """One :class:`ResultCache` per loaded model, forgotten together with the model.

    Keyed by the model object itself (weakly), not by its name: a model reloaded under the same
    name (new weights) never sees the old model's CAMs, and memory stays bounded when models
    are swapped.
    """

    def __init__(self, max_entries: int = 16, max_bytes: int = RESULT_CACHE_MB * _MB) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._caches: weakref.WeakKeyDictionary[Any, ResultCache] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def for_model(self, model: Any) -> ResultCache:
        """The cache of ``model`` (created on first use)."""
        with self._lock:
            cache = self._caches.get(model)
            if cache is None:
                cache = self._caches[model] = ResultCache(self.max_entries, self.max_bytes)
            return cache

    def __len__(self) -> int:
        with self._lock:
            return len(self._caches)
