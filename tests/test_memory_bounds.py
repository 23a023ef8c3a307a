"""Memory is bounded in bytes, not only in entries (RELIABILITY row 24, issue 12 item 6).

The shared result cache kept 16 entries of any size (29 MB each at 2000x2000), and a session
kept every decoded upload (a 115 KB PNG under the pixel cap decodes to 119 MB).  Sizes here
are broadcast views: ``nbytes`` reports the full size, no memory is used.
"""

from __future__ import annotations

import numpy as np
import torch

from cam_core.session import (
    RESULT_CACHE_MB,
    SESSION_DECODED_MB,
    Decoded,
    ResultCache,
    charge,
    nbytes,
)

MB = 1024 * 1024


def _big(megabytes: float) -> np.ndarray:
    """A float32 array that claims ``megabytes`` (a broadcast view of one value)."""
    return np.broadcast_to(np.float32(0.5), (int(megabytes * MB) // 4,))


def _result_2000px() -> dict:
    """What one 2000x2000 three-modality CamResult holds: cams and raw float32, display uint8."""
    side = 2000 * 2000
    return {
        "cams": {m: _big(side * 4 / MB) for m in ("rgb", "frequency", "texture")},
        "display": {m: np.broadcast_to(np.uint8(0), (side * 3,)) for m in ("rgb",)},
        "probabilities": np.zeros((1, 3), np.float32),
    }


def test_nbytes_counts_arrays_and_tensors_inside_results():
    class Result:
        def __init__(self):
            self.cams = {"a": np.zeros((2, 8, 8), np.float32)}
            self.raw = [torch.zeros(2, 4, 4), torch.zeros(3, dtype=torch.float64)]
            self.name = "not counted"

    assert nbytes(Result()) == 2 * 8 * 8 * 4 + 2 * 4 * 4 * 4 + 3 * 8


def test_result_cache_default_byte_limit_holds_far_fewer_than_16_large_results():
    one = nbytes(_result_2000px())
    assert 40 * MB < one < 60 * MB  # 3 x 16 MB cams + 12 MB display
    cache = ResultCache(max_entries=16)
    for i in range(16):
        cache.put(i, _result_2000px())
    assert cache.bytes <= RESULT_CACHE_MB * MB
    assert len(cache) == (RESULT_CACHE_MB * MB) // one
    assert cache.get(15) is not None and cache.get(0) is None  # least recently used went first


def test_result_cache_evicts_by_bytes_and_skips_a_value_over_the_limit():
    cache = ResultCache(max_entries=16, max_bytes=25 * MB)
    for key in "abc":
        cache.put(key, {"cam": _big(10)})
    assert [k for k in "abc" if cache.get(k) is not None] == ["b", "c"]
    assert cache.bytes == 20 * MB
    cache.put("huge", {"cam": _big(30)})
    assert cache.get("huge") is None and cache.bytes == 20 * MB  # nothing else was evicted
    cache.put("b", {"cam": _big(1)})  # replacing an entry recounts it
    assert cache.bytes == 11 * MB


def test_session_budget_refuses_the_upload_that_does_not_fit_and_drops_its_pixels():
    pixels = np.broadcast_to(np.uint8(7), (5773, 6928, 3))  # 40 MP: 114 MiB decoded
    spent, kept = 0, []
    for i in range(3):
        decoded, spent = charge(Decoded(f"photo{i}.png", pixels, "digest"), spent)
        kept.append(decoded)
    assert [d.image is not None for d in kept] == [True, True, False]
    assert spent == 2 * pixels.nbytes <= SESSION_DECODED_MB * MB
    assert f"the limit is {SESSION_DECODED_MB} MB of decoded images per session" in kept[2].error
    assert kept[2].name == "photo2.png"
    failed = Decoded("broken.png", error="could not decode")
    assert charge(failed, spent) == (failed, spent)
