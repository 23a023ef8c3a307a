"""Hostile files: only the allowed raster formats are decoded, each checked by its header
before any Pillow plugin runs (EPS would start Ghostscript; one with `{ } loop` never ends)."""

from __future__ import annotations

import io
import subprocess
import threading

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from cam_core.errors import InputError
from cam_core.images import ALLOWED_FORMATS, load_image

ENDLESS_EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n{ } loop\n%%EOF\n"
HOSTILE = {
    "eps": ENDLESS_EPS,
    "postscript": b"%!PS-Adobe-3.0\n{ } loop\nshowpage\n",
    "dos-eps": b"\xc5\xd0\xd3\xc6" + b"\x00" * 28 + ENDLESS_EPS,
    "pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    "xml-svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
}


@pytest.fixture
def no_interpreter(monkeypatch):
    """Fail the test if Pillow's EPS plugin, Ghostscript or any subprocess is reached."""
    calls: list[str] = []

    def forbidden(name):
        def fail(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called on uploaded bytes")

        return fail

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", forbidden("Ghostscript"))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", forbidden("EpsImageFile._open"))
    monkeypatch.setattr(EpsImagePlugin, "_accept", forbidden("EpsImagePlugin._accept"))
    monkeypatch.setattr(subprocess, "Popen", forbidden("subprocess.Popen"))
    return calls


def _bounded(call, seconds: float = 20.0):
    """Run ``call`` in a thread; fail if it has not returned after ``seconds`` (a hang)."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed back to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still decoding after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_load_image_refuses_non_raster_header_before_any_plugin(kind, no_interpreter, tmp_path):
    path = tmp_path / "holiday.png"  # the name says PNG; the header decides
    path.write_bytes(HOSTILE[kind])
    with pytest.raises(InputError, match="not one of the accepted formats") as info:
        _bounded(lambda: load_image(path))
    assert "holiday.png" in str(info.value)
    assert no_interpreter == []


def test_load_image_message_names_what_the_header_is(no_interpreter):
    with pytest.raises(InputError, match="PostScript/EPS"):
        load_image(ENDLESS_EPS)
    with pytest.raises(InputError, match="PDF"):
        load_image(HOSTILE["pdf"])


def test_load_image_refuses_unloaded_eps_pil_image_without_running_ghostscript(monkeypatch):
    # Pillow's EPS plugin parses the header itself (no interpreter) when the caller opens it.
    image = Image.open(io.BytesIO(ENDLESS_EPS))
    assert image.format == "EPS"
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", pytest.fail)
    with pytest.raises(InputError, match="unloaded EPS file"):
        _bounded(lambda: load_image(image))


def test_load_image_refuses_formats_pillow_knows_but_we_do_not_allow(no_interpreter):
    for fmt in ("ICO", "TGA", "PPM", "PCX"):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, fmt)
        with pytest.raises(InputError, match="not one of the accepted formats"):
            load_image(buf.getvalue())


@pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
def test_load_image_still_decodes_every_allowed_format(fmt, no_interpreter):
    pixels = np.zeros((8, 12, 3), np.uint8)
    pixels[:, 6:] = (200, 40, 10)
    buf = io.BytesIO()
    lossless = {"WEBP": {"lossless": True}}.get(fmt, {})
    Image.fromarray(pixels).save(buf, fmt, **lossless)
    decoded = load_image(buf.getvalue())
    tolerance = 40 if fmt == "JPEG" else 0
    assert decoded.shape == pixels.shape
    assert np.abs(decoded.astype(int) - pixels).max() <= tolerance


def test_load_image_accepts_multi_picture_jpeg_as_bytes_and_as_pil_image(no_interpreter):
    # Phone cameras write MPO: JPEG with extra pictures; Pillow names its format "MPO".
    picture = Image.new("RGB", (8, 8), (200, 40, 10))
    buf = io.BytesIO()
    picture.save(buf, "MPO", save_all=True, append_images=[picture])
    opened = Image.open(io.BytesIO(buf.getvalue()))
    assert opened.format == "MPO"
    for source in (buf.getvalue(), opened):
        pixels = load_image(source)
        assert pixels.shape == (8, 8, 3)
        assert np.abs(pixels.astype(int) - (200, 40, 10)).max() <= 8
