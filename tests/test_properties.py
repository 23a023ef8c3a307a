"""Property-based tests (hypothesis): for any input, a result or a CamError, nothing else.

Issue 12: `overlay` on arbitrary arrays, `load_image` on random bytes and on mutated bytes of
real files (every allowed format), and the input checks of `Explainer.prepare`/`predict` on
arbitrary tensors and arrays.  Examples are few (the suite stays fast) and deadlines off (a
shared 2-core CI box).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from cam_core import Explainer, overlay
from cam_core.errors import CamError
from cam_core.images import ALLOWED_FORMATS, load_image
from tests.conftest import ThreeInputNet

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])


def _array(dtype, shape):
    if np.dtype(dtype).kind == "f":
        elements = st.one_of(st.floats(-3, 3, width=32), st.sampled_from([np.nan, np.inf]))
    else:
        elements = None
    return arrays(dtype, shape, elements=elements)


@st.composite
def images(draw):
    dtype = draw(DTYPES)
    shape = draw(array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=6))
    return draw(_array(dtype, shape))


@SETTINGS
@given(
    image=images(),
    cam=images(),
    colormap=st.sampled_from(["jet", "turbo", "viridis", "nope", 2, -1, 99]),
    weight=st.one_of(st.floats(-1, 2), st.just(float("nan"))),
    torch_image=st.booleans(),
)
def test_overlay_gives_an_image_or_a_cam_error(image, cam, colormap, weight, torch_image):
    if torch_image and image.dtype != np.uint16:
        image = torch.from_numpy(np.ascontiguousarray(image))
    try:
        out = overlay(image, cam, colormap=colormap, image_weight=weight)
    except CamError:
        return
    assert out.dtype == np.uint8 and out.shape[-1] == 3 and out.ndim in (3, 4)


def _real_files() -> list[bytes]:
    """Every allowed format, encoded by Pillow from a demo sample, plus the demo PNGs."""
    from cam_core import demo

    sample = sorted(p for p in Path(demo.SAMPLES_DIR).iterdir() if p.is_dir())[0]
    files = [p.read_bytes() for p in sorted(sample.glob("*.png"))]
    rgb = Image.open(sample / "rgb.png").convert("RGB")
    for fmt in ALLOWED_FORMATS:
        buffer = io.BytesIO()
        rgb.save(buffer, fmt)
        files.append(buffer.getvalue())
    return files


REAL = _real_files()


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(REAL)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            del data[at:]
    return bytes(data)


def _load_or_cam_error(data: bytes, channels: int) -> None:
    try:
        pixels = load_image(data, channels=channels)
    except CamError:
        return
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == channels


@SETTINGS
@given(data=mutated(), channels=st.sampled_from([1, 3]))
def test_load_image_on_mutated_real_files_gives_pixels_or_a_cam_error(data, channels):
    _load_or_cam_error(data, channels)


MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"RIFF\0\0\0\0WEBP"]


@settings(max_examples=40, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=256),
        st.sampled_from(
            [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00"]
        ).flatmap(lambda magic: st.binary(max_size=200).map(lambda rest: magic + rest)),
    ),
    channels=st.sampled_from([1, 3]),
)
def test_load_image_on_random_bytes_gives_pixels_or_a_cam_error(data, channels):
    _load_or_cam_error(data, channels)


@pytest.fixture(scope="module")
def explainer(request):
    from cam_core import Modality

    torch.manual_seed(0)
    modalities = [Modality("texture", channels=1), Modality("frequency", channels=1),
                  Modality("rgb")]  # fmt: skip
    return Explainer(ThreeInputNet(), modalities, device="cpu")


TENSOR_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                 torch.uint8, torch.bool]  # fmt: skip


@st.composite
def modality_values(draw, channels):
    kind = draw(st.sampled_from(["tensor", "array", "list", "junk"]))
    if kind == "junk":
        return draw(st.sampled_from([None, 3, "no-such-file.png", b"", [], {"a": 1}]))
    shape = draw(array_shapes(min_dims=2, max_dims=4, min_side=0, max_side=12))
    if draw(st.booleans()) and len(shape) >= 3:  # often the right layout, to reach deeper checks
        shape = (*shape[:-3], channels, *shape[-2:]) if kind == "tensor" else shape
    values = draw(_array(draw(DTYPES), shape))
    if kind == "tensor":
        dtype = draw(st.sampled_from(TENSOR_DTYPES))
        return torch.from_numpy(np.ascontiguousarray(values).astype(np.float32)).to(dtype)
    if kind == "list":
        return [values, values]
    return values


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texture=modality_values(1), frequency=modality_values(1), rgb=modality_values(3),
    extra=st.booleans(),
)  # fmt: skip
def test_input_checks_give_a_prediction_or_a_cam_error(explainer, texture, frequency, rgb, extra):
    inputs = {"texture": texture, "frequency": frequency, "rgb": rgb}
    if extra:
        inputs["depth"] = rgb
    try:
        probabilities = explainer.predict(inputs)
    except CamError:
        return
    assert probabilities.shape[-1] == 4 and np.isfinite(probabilities).all()
