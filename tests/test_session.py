"""cam_core.session: pairing uploads, size checks, cache keys and the shared result cache."""

from __future__ import annotations

import gc
import io
import threading

import numpy as np
import pytest
from PIL import Image

from cam_core.errors import InputError
from cam_core.session import (
    ModelCaches,
    ResultCache,
    bytes_digest,
    cam_key,
    check_upload_size,
    content_hash,
    decode_input,
    inputs_digest,
    list_samples,
    pair_batches,
    top_k,
)


def test_pairing_keeps_upload_order_per_modality() -> None:
    paired = pair_batches({"texture": ["t1", "t2"], "rgb": ["r1", "r2"]}, ["rgb", "texture"])
    assert list(paired) == ["rgb", "texture"]
    assert paired["rgb"] == ["r1", "r2"] and paired["texture"] == ["t1", "t2"]


def test_pairing_different_counts_is_a_clear_error() -> None:
    with pytest.raises(InputError, match=r"rgb: 3, texture: 2.*same number"):
        pair_batches({"rgb": [1, 2, 3], "texture": [1, 2]}, ["rgb", "texture"])


def test_pairing_names_the_missing_modality() -> None:
    with pytest.raises(InputError, match="'texture'") as info:
        pair_batches({"rgb": [1], "texture": []}, ["rgb", "texture"])
    assert info.value.modality == "texture"


def test_upload_over_the_limit_states_the_limit() -> None:
    check_upload_size("ok.png", 1024, 1, modality="rgb")
    with pytest.raises(InputError, match=r"big\.png is 2\.0 MB; the limit is 1 MB") as info:
        check_upload_size("big.png", 2 * 1024 * 1024, 1, modality="rgb")
    assert info.value.modality == "rgb"


def test_upload_size_check_of_a_checkpoint_gives_its_own_hint() -> None:
    with pytest.raises(InputError, match=r"w\.pt is 3\.0 MB; the limit is 2 MB.*half") as info:
        check_upload_size("w.pt", 3 * 1024 * 1024, 2, modality=None, hint="Save it in half.")
    assert info.value.modality is None
    assert "Downscale" not in str(info.value)


def test_bytes_digest_depends_on_content_only() -> None:
    data = b"\x80\x02checkpoint bytes"
    assert bytes_digest(data) == bytes_digest(bytearray(data)) == bytes_digest(memoryview(data))
    assert bytes_digest(data) != bytes_digest(data + b"\0")
    assert len(bytes_digest(data)) == 32


def test_content_hash_depends_on_pixels_shape_and_dtype() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    assert content_hash(a) == content_hash(a.copy())
    assert content_hash(a) != content_hash(np.zeros((4, 4, 1), np.uint8))
    assert content_hash(a) != content_hash(a.astype(np.float32))
    b = a.copy()
    b[0, 0, 0] = 1
    assert content_hash(a) != content_hash(b)
    assert content_hash(a[:, ::2]) == content_hash(np.ascontiguousarray(a[:, ::2]))


def test_cam_key_changes_with_everything_that_changes_the_cam() -> None:
    digests = inputs_digest({"rgb": [np.zeros((2, 2, 3), np.uint8)]})
    base = {"layer": "fusion", "method": "gradcam", "target": None, "options": {"aug_smooth": 0}}
    key = cam_key("demo", digests, **base)
    same = inputs_digest({"rgb": [np.zeros((2, 2, 3), np.uint8)]})
    assert key == cam_key("demo", same, **base)
    assert key != cam_key("other", digests, **base)
    other = inputs_digest({"rgb": [np.ones((2, 2, 3), np.uint8)]})
    assert key != cam_key("demo", other, **base)
    for change in (
        {"layer": "x"},
        {"method": "scorecam"},
        {"target": 1},
        {"options": {"aug_smooth": 1}},
    ):
        assert key != cam_key("demo", digests, **{**base, **change})
    hash(key)


def test_decode_input_returns_pixels_and_their_hash() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (5, 4), (255, 0, 0, 0)).save(buffer, "PNG")
    decoded = decode_input(buffer.getvalue(), "a.png", channels=3, limit_mb=1, modality="rgb")
    assert decoded.error is None and decoded.image.shape == (4, 5, 3)
    assert decoded.digest == content_hash(decoded.image)
    assert decoded.notes  # the transparent pixels were composited: the user is told


def test_decode_input_reports_broken_and_oversized_files_without_raising() -> None:
    broken = decode_input(b"not an image", "x.png", channels=3, limit_mb=1, modality="rgb")
    assert broken.image is None and broken.digest is None and broken.error
    huge = decode_input(b"\0" * 2048, "huge.png", channels=3, limit_mb=0.001, modality="rgb")
    assert huge.image is None and "limit is 0.001 MB" in huge.error


def test_result_cache_is_a_bounded_lru() -> None:
    cache: ResultCache[int] = ResultCache(max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0


def test_result_cache_survives_concurrent_sessions() -> None:
    cache: ResultCache[int] = ResultCache(max_entries=8)

    def work(offset: int) -> None:
        for i in range(500):
            cache.put((offset, i % 20), i)
            cache.get((offset, (i + 3) % 20))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 8


def test_top_k_orders_by_probability_with_names() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    rows = top_k(probs, lambda k: "abc"[k], k=2)
    assert rows[0] == [(1, "b", pytest.approx(0.7)), (2, "c", pytest.approx(0.2))]
    assert [i for i, _, _ in rows[1]] == [0, 1]


def test_list_samples_needs_every_modality(tmp_path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "rgb.png").write_bytes(b"x")
    (tmp_path / "one" / "depth.jpg").write_bytes(b"x")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "rgb.png").write_bytes(b"x")
    samples = list_samples(tmp_path, ["rgb", "depth"])
    assert list(samples) == ["one"]
    assert samples["one"]["depth"].name == "depth.jpg"
    assert list_samples(tmp_path / "missing", ["rgb"]) == {}


def test_model_caches_are_per_model_and_dropped_with_it() -> None:
    class Model:
        pass

    caches = ModelCaches(max_entries=4)
    a, b = Model(), Model()
    caches.for_model(a).put("k", 1)
    assert caches.for_model(a).get("k") == 1
    assert caches.for_model(b).get("k") is None  # same key, other model: no leak
    del a
    gc.collect()
    assert len(caches) == 1
