"""load_image and to_display: every image the app may meet, built here with PIL/numpy/OpenCV."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, ImageOps

from cam_core import images
from cam_core.errors import InputError
from cam_core.images import MAX_IMAGE_PIXELS, denormalize, load_image, to_display

# ------------------------------------------------------------------------------------------
# builders
# ------------------------------------------------------------------------------------------


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_claiming_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is rewritten to claim width x height (CRC fixed)."""
    data = bytearray(_encode(Image.new("L", (1, 1))))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _with_exif_chunk(png: bytes, orientation: int) -> bytes:
    """PNG bytes with an eXIf chunk (EXIF orientation) inserted right after IHDR."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes().removeprefix(b"Exif\x00\x00")  # PNG stores bare TIFF data
    return png[:33] + _chunk(b"eXIf", payload) + png[33:]


def _png16(rgb16: np.ndarray) -> bytes:
    """16-bit PNG of uint16 RGB(A) pixels (OpenCV writes BGR(A))."""
    order = [2, 1, 0, 3][: rgb16.shape[2]]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb16[..., order]))
    assert ok
    return buf.tobytes()


def _quadrants() -> np.ndarray:
    """uint8 RGB (32, 64, 3): red, green / blue, white quadrants (JPEG-friendly blocks)."""
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:16, :32] = (255, 0, 0)
    arr[:16, 32:] = (0, 255, 0)
    arr[16:, :32] = (0, 0, 255)
    arr[16:, 32:] = (255, 255, 255)
    return arr


def _ramp16() -> np.ndarray:
    return np.linspace(0, 65535, 256).round().astype(np.uint16).reshape(8, 32)


def _scaled16(values: np.ndarray) -> np.ndarray:
    """Reference for the 16-bit rule, in float64: round(v * 255 / 65535)."""
    return np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def _white_composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255
    return np.round(rgb.astype(np.float64) * a + 255 * (1 - a)).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# load_image: sources
# ------------------------------------------------------------------------------------------


def test_load_image_decodes_png_bytes_exactly():
    rgb = np.random.default_rng(0).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    out = load_image(_encode(Image.fromarray(rgb)))
    assert out.dtype == np.uint8 and out.shape == (12, 9, 3)
    np.testing.assert_array_equal(out, rgb)


def test_load_image_accepts_file_object_path_and_bytearray(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(rgb))
    path = tmp_path / "x.png"
    path.write_bytes(data)
    read = io.BytesIO(data)
    read.read()  # an upload read once already (Streamlit reruns) still decodes: getvalue()
    with open(path, "rb") as handle:
        from_handle = load_image(handle)
    for source in (read, path, str(path), bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(load_image(source), rgb)
    np.testing.assert_array_equal(from_handle, rgb)


def test_load_image_accepts_pil_image_with_same_mode_handling():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0  # fully transparent -> white
    notes: list[str] = []
    out = load_image(Image.fromarray(rgba, "RGBA"), notes=notes)
    assert (out == 255).all()
    assert any("alpha" in n for n in notes)


def test_load_image_refuses_missing_path_and_unknown_types(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="cannot load an image from a int"):
        load_image(42)
    with pytest.raises(InputError, match="text mode"):
        load_image(io.StringIO("not binary"))


# ------------------------------------------------------------------------------------------
# load_image: safety
# ------------------------------------------------------------------------------------------


def test_load_image_refuses_decompression_bomb_before_decoding(monkeypatch):
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))
    filters_before = list(warnings.filters)
    bomb = _png_claiming_size(30000, 30000)
    assert len(bomb) < 100
    with pytest.raises(InputError) as info:
        load_image(bomb)
    message = str(info.value)
    assert "900,000,000 pixels" in message  # the size the header claims
    assert "DOS" not in message and message.count("limit") == 1  # one limit, plain words
    assert f"{MAX_IMAGE_PIXELS:,}" in message  # our limit
    assert loads == []  # refused from the header: no pixel was decoded
    assert warnings.filters == filters_before  # the warning filter was local


def test_load_image_own_cap_names_width_height_and_limit(monkeypatch):
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))
    # 8000 x 8000 = 64 MP: under Pillow's own limit (~89 MP), over ours (40 MP)
    with pytest.raises(InputError, match=r"8000x8000 = 64,000,000 pixels.*40,000,000"):
        load_image(_png_claiming_size(8000, 8000))
    assert loads == []


def test_load_image_cap_is_read_at_call_time(monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InputError, match="20x20 = 400 pixels"):
        load_image(_encode(Image.new("RGB", (20, 20))))
    with pytest.raises(InputError, match="over the limit of 100"):
        load_image(np.zeros((20, 20, 3), np.uint8))


def test_load_image_refuses_empty_bytes():
    with pytest.raises(InputError, match=r"empty \(0 bytes\)"):
        load_image(b"")


def test_load_image_refuses_text_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are my notes, not a picture\n")
    with pytest.raises(InputError, match="could not decode file .*notes.png.* as an image: its "):
        load_image(path)  # refused by its header: no Pillow plugin ever sees it


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_load_image_refuses_truncated_file(fmt):
    noisy = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noisy), fmt)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    with pytest.raises(InputError, match="could not decode the data as an image") as info:
        load_image(data[: len(data) // 2])
    assert info.value.__cause__ is not None
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


# ------------------------------------------------------------------------------------------
# load_image: orientation, frames, modes
# ------------------------------------------------------------------------------------------


def test_load_image_applies_exif_orientation_6_to_jpeg():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = _encode(Image.fromarray(_quadrants()), "JPEG", quality=95, exif=exif)
    out = load_image(data)
    expected = np.rot90(_quadrants(), k=-1)  # numpy: k=-1 is clockwise
    assert out.shape == (64, 32, 3)
    # JPEG is lossy: compare block centres and the mean error
    for y, x in [(16, 8), (16, 24), (48, 8), (48, 24)]:
        np.testing.assert_allclose(out[y, x], expected[y, x], atol=30)
    assert np.abs(out.astype(int) - expected).mean() < 8


def test_load_image_takes_first_frame_of_animated_gif():
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "lime", "blue")]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    notes: list[str] = []
    out = load_image(data, notes=notes)
    assert out.shape == (8, 8, 3)
    assert (out == (255, 0, 0)).all()
    assert notes == ["3 frames (animated); the first one is used"]


def test_load_image_composites_rgba_on_white():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (10, 10), dtype=np.uint8)
    notes: list[str] = []
    out = load_image(_encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA")), notes=notes)
    assert np.abs(out.astype(int) - _white_composite(rgb, alpha)).max() <= 1
    assert notes == ["alpha channel composited on white"]


def test_load_image_opaque_rgba_adds_no_note():
    rgba = np.full((3, 3, 4), 255, np.uint8)
    rgba[..., :3] = 7
    notes: list[str] = []
    assert (load_image(_encode(Image.fromarray(rgba, "RGBA")), notes=notes) == 7).all()
    assert notes == []


def test_load_image_composites_la_for_grayscale_modality():
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    alpha = np.full((4, 4), 128, np.uint8)
    out = load_image(_encode(Image.fromarray(np.dstack([gray, alpha]), "LA")), channels=1)
    assert out.shape == (4, 4, 1)
    expected = _white_composite(gray[..., None], alpha)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_load_image_composites_palette_transparency_on_white():
    index = np.array([[0, 1], [2, 1]], np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette([10, 20, 30, 200, 0, 0, 0, 0, 250] + [0] * (256 * 3 - 9))
    data = _encode(img, "PNG", transparency=0)  # palette index 0 is transparent
    notes: list[str] = []
    out = load_image(data, notes=notes)
    np.testing.assert_array_equal(out[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(out[0, 1], (200, 0, 0))
    np.testing.assert_array_equal(out[1, 0], (0, 0, 250))
    assert any("alpha" in n for n in notes)


def test_load_image_converts_cmyk_jpeg_to_rgb():
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, :16, 0] = 255  # pure cyan
    cmyk[:, 16:, 3] = 255  # pure black
    out = load_image(_encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=100))
    assert out.shape == (16, 32, 3)
    np.testing.assert_allclose(out[8, 4], (0, 255, 255), atol=8)
    np.testing.assert_allclose(out[8, 28], (0, 0, 0), atol=8)


def test_load_image_rescales_16bit_png_instead_of_clamping():
    ramp = _ramp16()
    data = _encode(Image.fromarray(ramp))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    assert (np.asarray(Image.open(io.BytesIO(data)).convert("L"))[:, 1:] == 255).all()  # Pillow
    out = load_image(data, channels=1)[..., 0]
    np.testing.assert_array_equal(out, _scaled16(ramp))
    assert out.min() == 0 and out.max() == 255
    assert (np.diff(out.reshape(-1).astype(int)) >= 0).all()  # still a ramp


def test_load_image_rescales_big_endian_16bit_pil_image():
    ramp = _ramp16()
    img = Image.frombytes("I;16B", (32, 8), ramp.astype(">u2").tobytes())
    out = load_image(img)
    assert out.shape == (8, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], _scaled16(ramp))


def test_load_image_treats_32bit_int_in_16bit_range_as_16bit():
    ramp = _ramp16()
    img = Image.fromarray(ramp.astype(np.int32))
    assert img.mode == "I"
    np.testing.assert_array_equal(load_image(img, channels=1)[..., 0], _scaled16(ramp))


def test_load_image_min_max_scales_32bit_int_outside_16bit_range():
    values = np.linspace(-1000, 1000, 32).round().astype(np.int32).reshape(4, 8)
    notes: list[str] = []
    out = load_image(Image.fromarray(values), channels=1, notes=notes)[..., 0]
    expected = np.round((values + 1000) / 2000 * 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert any("min-max" in n for n in notes)


def test_load_image_float_mode_in_unit_range_is_scaled_by_255():
    values = np.linspace(0, 1, 32, dtype=np.float32).reshape(4, 8)
    img = Image.fromarray(values)
    assert img.mode == "F"
    out = load_image(img, channels=1)[..., 0]
    np.testing.assert_array_equal(out, np.round(values.astype(np.float64) * 255))


def test_load_image_float_mode_outside_unit_range_is_min_max_scaled():
    values = np.linspace(-5, 10, 32, dtype=np.float32).reshape(4, 8)
    out = load_image(Image.fromarray(values), channels=1)[..., 0]
    expected = np.round((values.astype(np.float64) + 5) / 15 * 255)
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert out.min() == 0 and out.max() == 255


def test_load_image_rescales_16bit_rgb_png_with_rounding():
    rng = np.random.default_rng(4)
    rgb16 = rng.integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    rgb16[0, 0] = (1000, 0, 65535)  # Pillow alone keeps the high byte: 1000 -> 3, not 4
    out = load_image(_png16(rgb16))
    np.testing.assert_array_equal(out, _scaled16(rgb16))
    np.testing.assert_array_equal(out[0, 0], (4, 0, 255))


def test_load_image_composites_16bit_rgba_png():
    rgba16 = np.zeros((2, 2, 4), np.uint16)
    rgba16[..., 0] = 65535
    rgba16[..., 3] = (0, 65535)  # transparent, opaque
    out = load_image(_png16(rgba16))
    np.testing.assert_array_equal(out[:, 0], [(255, 255, 255)] * 2)
    np.testing.assert_array_equal(out[:, 1], [(255, 0, 0)] * 2)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_load_image_orients_16bit_rgb_png_like_pillow(orientation):
    rgb8 = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgb16 = rgb8.astype(np.uint16) * 257  # scales back to rgb8 exactly
    out = load_image(_with_exif_chunk(_png16(rgb16), orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    reference = Image.open(io.BytesIO(_encode(Image.fromarray(rgb8), exif=exif)))
    np.testing.assert_array_equal(out, np.asarray(ImageOps.exif_transpose(reference)))


def test_load_image_replicates_grayscale_for_rgb_modality():
    gray = np.random.default_rng(5).integers(0, 256, (5, 6), dtype=np.uint8)
    out = load_image(_encode(Image.fromarray(gray, "L")), channels=3)
    assert out.shape == (5, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_load_image_converts_rgb_to_luma_for_grayscale_modality():
    rgb = np.random.default_rng(6).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    out = load_image(_encode(Image.fromarray(rgb)), channels=1)
    assert out.shape == (5, 6, 1)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R 601
    assert np.abs(out[..., 0].astype(int) - np.round(luma)).max() <= 1


def test_load_image_other_channel_counts_only_when_source_matches():
    rgba = np.random.default_rng(7).integers(0, 256, (3, 3, 4), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(_encode(Image.fromarray(rgba, "RGBA")), 4), rgba)
    with pytest.raises(InputError, match=r"has 3 channel\(s\) \(RGB\); 4 were asked for"):
        load_image(_encode(Image.new("RGB", (3, 3))), channels=4)
    stack = np.zeros((5, 5, 6), np.uint8)
    np.testing.assert_array_equal(load_image(stack, channels=6), stack)
    with pytest.raises(InputError, match="cannot convert it to 3"):
        load_image(stack)
    with pytest.raises(InputError, match="channels must be a positive int"):
        load_image(stack, channels=0)


# ------------------------------------------------------------------------------------------
# load_image: numpy arrays
# ------------------------------------------------------------------------------------------


def test_load_image_numpy_uint8_used_as_is_but_not_aliased():
    rgb = np.random.default_rng(8).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    out = load_image(rgb)
    np.testing.assert_array_equal(out, rgb)
    assert not np.shares_memory(out, rgb)


def test_load_image_result_is_writeable():
    for source in (_encode(Image.new("RGB", (3, 3))), Image.new("L", (3, 3)), np.zeros((3, 3))):
        out = load_image(source)
        out[0, 0] = 1  # a read-only view of Pillow's buffer would raise here
        assert out.flags.c_contiguous


def test_load_image_numpy_float_unit_range_scaled_and_rounded():
    values = np.array([[0.0, 0.5, 1.0, 0.2]], np.float64)
    out = load_image(values, channels=1)[..., 0]
    np.testing.assert_array_equal(out, [[0, 128, 255, 51]])


def test_load_image_numpy_float_outside_unit_range_is_refused():
    with pytest.raises(InputError, match=r"from -2.1 to 2.6.*normalized.*tensor.*un-normalize"):
        load_image(np.array([[[-2.1, 0.0, 2.6]]], np.float32))


def test_load_image_numpy_bool_gray_and_single_channel():
    mask = np.array([[True, False], [False, True]])
    out = load_image(mask)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[..., 0], [[255, 0], [0, 255]])
    gray = np.array([[1, 2], [3, 4]], np.uint8)
    np.testing.assert_array_equal(load_image(gray[..., None], channels=1)[..., 0], gray)
    np.testing.assert_array_equal(load_image(gray, channels=1)[..., 0], gray)


def test_load_image_numpy_rgba_is_composited():
    rgba = np.zeros((1, 1, 4), np.uint8)
    rgba[..., 3] = 0
    np.testing.assert_array_equal(load_image(rgba), [[[255, 255, 255]]])


def test_load_image_numpy_small_ints_and_bad_values():
    np.testing.assert_array_equal(load_image(np.array([[0, 128, 255]]), 1)[..., 0], [[0, 128, 255]])
    with pytest.raises(InputError, match="values from 0 to 300"):
        load_image(np.array([[0, 300]]))
    with pytest.raises(InputError, match="NaN"):
        load_image(np.array([[0.5, np.nan]]))
    with pytest.raises(InputError, match=r"channels-first.*transpose\(1, 2, 0\)"):
        load_image(np.zeros((3, 16, 16), np.uint8))


# ------------------------------------------------------------------------------------------
# to_display
# ------------------------------------------------------------------------------------------


def test_to_display_hwc_uint8_is_copied_not_aliased():
    rgb = np.random.default_rng(9).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    out, batched = to_display(rgb)
    assert out.shape == (1, 4, 5, 3) and out.dtype == np.uint8 and not batched
    np.testing.assert_array_equal(out[0], rgb)
    assert not np.shares_memory(out, rgb)


def test_to_display_chw_float_tensor_scaled_by_255():
    x = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(0))
    out, batched = to_display(x)
    expected = np.rint(x.permute(1, 2, 0).numpy() * np.float32(255)).astype(np.uint8)
    assert not batched
    np.testing.assert_array_equal(out[0], expected)


def test_to_display_undoes_normalization_of_nchw_tensor():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pixels = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    normalized = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    out, batched = to_display(normalized.requires_grad_(), mean=mean, std=std)
    assert batched and out.shape == (2, 5, 5, 3)
    expected = np.round(pixels.permute(0, 2, 3, 1).double().numpy() * 255)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_to_display_nhwc_numpy_and_gray_layouts():
    batch = np.random.default_rng(10).random((2, 4, 4, 3), dtype=np.float32)
    out, batched = to_display(batch)
    assert batched and out.shape == (2, 4, 4, 3)
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6)
    for layout in (gray, gray[None], gray[..., None], gray[None, None], gray[None, ..., None]):
        out, _ = to_display(layout)
        assert out.shape == (1, 5, 6, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[0, ..., c], gray)


def test_to_display_ambiguous_3x3x3_is_hwc_for_numpy_and_chw_for_torch():
    cube = np.arange(27, dtype=np.uint8).reshape(3, 3, 3)
    np.testing.assert_array_equal(to_display(cube)[0][0], cube)
    np.testing.assert_array_equal(to_display(torch.from_numpy(cube))[0][0], cube.transpose(1, 2, 0))


def test_to_display_drops_alpha_and_maps_bool():
    rgba = np.random.default_rng(11).integers(0, 256, (2, 2, 4), dtype=np.uint8)
    np.testing.assert_array_equal(to_display(rgba)[0][0], rgba[..., :3])
    out, _ = to_display(np.array([[True, False]]))
    np.testing.assert_array_equal(out[0, :, :, 0], [[255, 0]])


def test_to_display_refuses_normalized_float_without_mean_std():
    with pytest.raises(InputError, match=r"from -1.5 to 2.*normalized.*mean and std"):
        to_display(np.array([[[-1.5, 0.2, 2.0]]], np.float32))


def test_to_display_clips_tiny_overshoot():
    out, _ = to_display(np.array([[1.0005, -0.0005]], np.float32))
    np.testing.assert_array_equal(out[0, 0, :, 0], [255, 0])


def test_to_display_refuses_nan_and_bad_layouts():
    with pytest.raises(InputError, match="NaN or infinite"):
        to_display(np.array([[np.inf, 0.0]]))
    with pytest.raises(InputError, match=r"shape \(5, 5, 2\); expected \(H, W\), \(H, W, C\)"):
        to_display(np.zeros((5, 5, 2)))
    with pytest.raises(InputError, match=r"shape \(2, 5, 5, 5, 3\)"):
        to_display(np.zeros((2, 5, 5, 5, 3)))
    with pytest.raises(InputError, match="std has 2 values but the image has 3 channels"):
        to_display(np.zeros((4, 4, 3), np.float32), mean=(0.5,), std=(0.2, 0.2))
    with pytest.raises(InputError, match="dtype"):
        to_display(np.zeros((4, 4, 3), np.complex64))


def test_denormalize_applies_std_then_mean_per_channel():
    x = np.ones((2, 2, 3), np.float32)
    out = denormalize(x, mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 3.0))
    np.testing.assert_allclose(out[0, 0], (1.1, 2.2, 3.3), rtol=1e-6)
    chw = denormalize(x.transpose(2, 0, 1), mean=(0.5,), std=None, axis=0)
    np.testing.assert_allclose(chw, 1.5)


def test_messages_are_one_plain_sentence_without_internals():
    """No file-object repr (Pillow's own wording names it)."""
    with pytest.raises(InputError) as broken:
        load_image(io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"\0" * 64))
    assert "<_io" not in str(broken.value) and " at 0x" not in str(broken.value)
