"""RELIABILITY.md rows not covered elsewhere.

The other test files already cover most rows: two threads (test_explainer), checkpoints
(test_checkpoint), decoding safety and image modes (test_images), downloads (test_export,
test_app). This file adds what they leave open. A prediction is forced to arrive while a CAM has
its hooks in place. A stop is raised inside the forward of every entry point. The memory of
failed and swapped-out models is checked. Every odd image mode goes through the whole explain
path. Constant and NaN maps get their notice. The upload size limit is checked at its boundary.
The bugs these tests found (a lock per explainer instead of per model, leaks after errors,
unchecked targets of class-agnostic methods, errors not naming the layer) are fixed.
"""

from __future__ import annotations

import gc
import io
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch import nn
from torch.utils.hooks import RemovableHandle

from cam_core import (
    Explainer,
    InputError,
    LayerError,
    Modality,
    ModelLoadError,
    ResourceError,
    TargetError,
)
from cam_core.session import ModelCaches, check_upload_size, decode_input
from cam_core.sources import ModelSpec
from tests.conftest import ThreeInputNet, hook_count, snapshot, three_input_batch

THREE = (
    Modality("texture", channels=1, size=32),
    Modality("frequency", channels=1, size=32),
    Modality("rgb", size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _run_threads(*work: Callable[[], object], timeout: float = 60) -> tuple[list, list]:
    """Run each callable in its own thread. Returns (results, errors); a thread that does not
    finish within ``timeout`` counts as an error."""
    results: list = [None] * len(work)
    errors: list[BaseException] = []

    def runner(i: int) -> None:
        try:
            results[i] = work[i]()
        except BaseException as exc:  # reported to the test, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        if thread.is_alive():
            errors.append(TimeoutError(f"{thread.name} still running after {timeout} s"))
    return results, errors


def _fail_on_call(
    module: nn.Module, call: int, error: Callable[[], BaseException], persist: bool = False
) -> tuple[list[int], RemovableHandle]:
    """Make ``module`` raise ``error()`` before its ``call``-th forward (1-based), and with
    ``persist`` before every later one too.

    Returns ``([calls so far], hook handle)``: the count tells a test that the failure
    happened where it meant it to; the caller removes the hook.
    """
    calls = [0]

    def hook(_module: nn.Module, _args: object) -> None:
        calls[0] += 1
        if calls[0] == call or (persist and calls[0] > call):
            raise error()

    return calls, module.register_forward_pre_hook(hook)


def _out_of_memory() -> BaseException:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _scaled16(values: np.ndarray) -> np.ndarray:
    """The 16-bit rule, computed in float64: round(v * 255 / 65535)."""
    return np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


# ------------------------------------------------------------------------------------------
# row 1: two threads, one model
# ------------------------------------------------------------------------------------------


def test_two_explainers_sharing_one_model_do_not_mix_activations(three_modalities) -> None:
    # RELIABILITY row 1
    torch.manual_seed(0)
    model = ThreeInputNet()
    first = Explainer(model, three_modalities, device="cpu")
    second = Explainer(model, three_modalities, device="cpu")
    a, b = three_input_batch(1, seed=1), three_input_batch(1, seed=2)
    expected_a = first.explain(a, "fuse").cams["rgb"]
    expected_b = second.explain(b, "fuse").cams["rgb"]
    assert not np.allclose(expected_a, expected_b, atol=1e-2)
    paused, second_done = threading.Event(), threading.Event()
    cam_threads: list[threading.Thread] = []

    def pause(_module: nn.Module, _args: object, _output: object) -> None:
        # The first request stops inside its forward with its hooks in place. With one lock
        # per model the second request waits for it: go on after 2 s.
        if (
            threading.current_thread() in cam_threads
            and hook_count(model.fuse)
            and not paused.is_set()
        ):
            paused.set()
            second_done.wait(2)

    def run_first() -> np.ndarray:
        cam_threads.append(threading.current_thread())
        return first.explain(a, "fuse").cams["rgb"]

    def run_second() -> np.ndarray:
        paused.wait(10)
        try:
            return second.explain(b, "fuse").cams["rgb"]
        finally:
            second_done.set()

    handle = model.rgb_branch.register_forward_hook(pause)
    try:
        (got_a, got_b), errors = _run_threads(run_first, run_second)
    finally:
        handle.remove()
    assert paused.is_set()
    assert not errors, errors
    np.testing.assert_allclose(got_a, expected_a, atol=1e-6)
    np.testing.assert_allclose(got_b, expected_b, atol=1e-6)


# ------------------------------------------------------------------------------------------
# row 2: a plain prediction while a CAM is being computed
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "ablationcam"])
def test_prediction_asked_for_mid_cam_waits_and_neither_result_is_contaminated(
    method, three_net, three_modalities
) -> None:
    # RELIABILITY row 2
    explainer = Explainer(three_net, three_modalities, device="cpu")
    cam_inputs, predict_inputs = three_input_batch(1, seed=1), three_input_batch(3, seed=2)
    expected = explainer.explain(cam_inputs, "fuse", method)
    expected_probabilities = explainer.predict(predict_inputs)
    paused, predict_asked = threading.Event(), threading.Event()
    cam_threads: list[threading.Thread] = []

    def pause(_module: nn.Module, _args: object, _output: object) -> None:
        # Stop the CAM inside a forward while its hooks (and AblationCAM's swapped-in layer)
        # are in place, until the prediction has been asked for.
        if (
            threading.current_thread() in cam_threads
            and hook_count(three_net.fuse)
            and not paused.is_set()
        ):
            paused.set()
            predict_asked.wait(10)
            time.sleep(0.1)  # without the lock, the prediction would run now

    def cam():
        cam_threads.append(threading.current_thread())
        return explainer.explain(cam_inputs, "fuse", method)

    def predict() -> np.ndarray:
        paused.wait(10)
        predict_asked.set()
        return explainer.predict(predict_inputs)

    handle = three_net.rgb_branch.register_forward_hook(pause)
    try:
        (result, probabilities), errors = _run_threads(cam, predict)
    finally:
        handle.remove()
    assert paused.is_set()  # the prediction really was asked for in the middle of the CAM
    assert not errors, errors
    for name in ("texture", "frequency", "rgb"):
        np.testing.assert_allclose(result.cams[name], expected.cams[name], atol=1e-6)
    np.testing.assert_allclose(result.probabilities, expected.probabilities, atol=1e-6)
    assert result.targets == expected.targets
    np.testing.assert_allclose(probabilities, expected_probabilities, atol=1e-6)
    assert hook_count(three_net) == 0


# ------------------------------------------------------------------------------------------
# row 3: stopped mid-compute, in every entry point
# ------------------------------------------------------------------------------------------


class ScriptStopped(BaseException):
    """Like Streamlit's StopException and RerunException: a BaseException, not an Exception."""


ENTRY_POINTS = {
    # name: (call, which forward pass of attn raises).  Perturbation methods run no prediction
    # forward: pass 1 is grad-cam's own on the sample, then AblationCAM's activation pass.
    "explain-gradcam": (lambda e, x: e.explain(x, "fuse", "gradcam"), 1),
    "explain-scorecam-masked-batch": (lambda e, x: e.explain(x, "fuse", "scorecam"), 2),
    "explain-ablationcam-layer-swapped-in": (lambda e, x: e.explain(x, "fuse", "ablationcam"), 3),
    "sweep": (lambda e, x: e.sweep(x, ["fuse", "rgb_branch"]), 1),
    "attention-perturbation-pass": (lambda e, x: e.attention(x, "attn"), 2),
    "layer_tree": (lambda e, x: e.layer_tree(x), 1),
    "predict": (lambda e, x: e.predict(x), 1),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_stop_inside_the_forward_leaves_model_clean_and_lock_free(
    entry, three_net, three_modalities
) -> None:
    # RELIABILITY row 3
    call, at = ENTRY_POINTS[entry]
    three_net.train()
    for p in three_net.rgb_branch.parameters():
        p.requires_grad_(False)
    explainer = Explainer(three_net, three_modalities, device="cpu")
    inputs = three_input_batch(1)
    reference = explainer.explain(inputs, "fuse").cams["rgb"]
    before, modules = snapshot(three_net), dict(three_net.named_modules())
    calls, stop = _fail_on_call(three_net.attn, at, ScriptStopped)
    try:
        with pytest.raises(ScriptStopped):
            call(explainer, inputs)
    finally:
        stop.remove()
    assert calls[0] == at  # stopped where intended, in the middle of the request
    assert hook_count(three_net) == 0
    assert dict(three_net.named_modules()) == modules  # same module objects, nothing swapped in
    assert not any(isinstance(m, AblationLayer) for m in three_net.modules())
    assert all(m.training for m in three_net.modules())
    assert all(p.grad is None for p in three_net.parameters())
    assert not any(p.requires_grad for p in three_net.rgb_branch.parameters())
    assert all(p.requires_grad for p in three_net.fuse.parameters())
    after = snapshot(three_net)
    assert all(torch.equal(after[k], before[k]) for k in before)
    # The lock was released: another session's request runs, and gives the right CAM.
    (cams,), errors = _run_threads(
        lambda: explainer.explain(inputs, "fuse").cams["rgb"], timeout=30
    )
    assert not errors, errors
    np.testing.assert_allclose(cams, reference, atol=1e-6)


# ------------------------------------------------------------------------------------------
# row 4: out of memory; memory back to baseline
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "at"),
    [
        ("gradcam", 1),
        ("scorecam", 2),  # in the masked batches
        ("ablationcam", 2),  # get_cam_weights' scoring forward
        ("ablationcam", 3),  # an ablation batch, the ablation layer swapped in
    ],
)
def test_out_of_memory_frees_every_tensor_of_the_failed_request(method, at, three_modalities):
    # RELIABILITY row 4
    torch.manual_seed(0)
    model = ThreeInputNet()
    explainer = Explainer(model, three_modalities, device="cpu")
    inputs = three_input_batch(1)
    reference = explainer.explain(inputs, "fuse", method).cams["rgb"]
    made: list[weakref.ref] = []
    keep = model.rgb_branch.register_forward_hook(lambda _m, _a, out: made.append(weakref.ref(out)))
    # Perturbation methods retry with fewer copies per call: the memory stays short here.
    calls, oom = _fail_on_call(model.fuse, at, _out_of_memory, persist=True)
    try:
        explainer.explain(inputs, "fuse", method)
    except ResourceError as exc:
        assert "out of memory on cpu" in str(exc) and "next request can run" in str(exc)
    else:
        pytest.fail("the injected out-of-memory error was not reported")
    finally:
        keep.remove()
        oom.remove()
    assert calls[0] >= at and made
    gc.collect()
    assert [ref() for ref in made] == [None] * len(made)  # back to baseline
    assert hook_count(model) == 0
    again = explainer.explain(inputs, "fuse", method).cams["rgb"]  # the next request works
    np.testing.assert_allclose(again, reference, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_memory_is_back_to_baseline_after_out_of_memory_and_next_request_works(
    three_modalities,
) -> None:
    # RELIABILITY row 4
    torch.manual_seed(0)
    model = ThreeInputNet()
    explainer = Explainer(model, three_modalities, device="cuda")
    inputs = three_input_batch(2)
    reference = explainer.explain(inputs, "fuse", "ablationcam").cams["rgb"]
    gc.collect()
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    _, oom = _fail_on_call(model.fuse, 4, _out_of_memory)  # an ablation batch
    try:
        explainer.explain(inputs, "fuse", "ablationcam")
    except ResourceError as exc:
        assert "out of memory on cuda" in str(exc)
    else:
        pytest.fail("the injected out-of-memory error was not reported")
    finally:
        oom.remove()
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= baseline
    assert not any(isinstance(m, AblationLayer) for m in model.modules())
    again = explainer.explain(inputs, "fuse", "ablationcam").cams["rgb"]
    np.testing.assert_allclose(again, reference, atol=1e-4)


# ------------------------------------------------------------------------------------------
# row 5: target class out of range
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda e, x: e.sweep(x, ["fuse", "rgb_branch"], target=4), id="sweep"),
        pytest.param(lambda e, x: e.explain(x, "fuse", "ablationcam", target=4), id="ablationcam"),
        pytest.param(lambda e, x: e.explain(x, "fuse", "shapleycam", target=4), id="shapleycam"),
        pytest.param(lambda e, x: e.explain(x, "fuse", "fullgrad", target=4), id="fullgrad"),
        pytest.param(lambda e, x: e.explain(x, "fuse", target=4, aug_smooth=True), id="aug"),
        pytest.param(lambda e, x: e.explain(x, "fuse", target=[0, 4]), id="per-sample"),
    ],
)
def test_target_out_of_range_names_the_class_count_in_every_path(call, three_net, three_modalities):
    # RELIABILITY row 5
    explainer = Explainer(three_net, three_modalities, device="cpu")
    with pytest.raises(TargetError, match=r"target class 4 is out of range.*4 classes \(0\.\.3\)"):
        call(explainer, three_input_batch(2))
    assert hook_count(three_net) == 0


@pytest.mark.parametrize("method", ["eigencam", "kpca-cam"])
def test_class_agnostic_methods_refuse_a_target_out_of_range(method, three_net, three_modalities):
    # RELIABILITY row 5
    explainer = Explainer(three_net, three_modalities, device="cpu")
    with pytest.raises(TargetError, match="4 classes"):
        explainer.explain(three_input_batch(1), "fuse", method, target=4)


# ------------------------------------------------------------------------------------------
# row 11: a broken file fails for its own modality only
# ------------------------------------------------------------------------------------------


def test_broken_image_in_explain_is_an_error_of_that_modality_and_image_only(
    three_net, three_modalities
) -> None:
    # RELIABILITY row 11
    rng = np.random.default_rng(0)
    gray = [
        _encode(Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L"))
        for _ in range(2)
    ]
    jpeg = _encode(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), "JPEG")
    good = {"texture": gray, "frequency": gray, "rgb": [jpeg, jpeg]}
    explainer = Explainer(three_net, three_modalities, device="cpu")
    cases = {
        "rgb": ({**good, "rgb": [jpeg, jpeg[: len(jpeg) // 2]]}, "rgb image 2: could not decode"),
        "texture": ({**good, "texture": [b"%PDF-1.4 not a png", gray[1]]}, "texture image 1: "),
    }
    for modality, (inputs, message) in cases.items():
        with pytest.raises(InputError, match=message) as info:
            explainer.explain(inputs, "fuse")
        assert info.value.modality == modality
    # Nothing else was affected: the same explainer explains the good files.
    result = explainer.explain(good, "fuse")
    assert result.cams["rgb"].shape == (2, 32, 32) and not result.empty["rgb"].any()
    assert hook_count(three_net) == 0


# ------------------------------------------------------------------------------------------
# row 12: odd image modes, through the whole explain path
# ------------------------------------------------------------------------------------------


def _odd_image(kind: str) -> tuple[object, np.ndarray, float, float]:
    """(source, expected display uint8 (H, W, 3), max abs error, mean abs error) of one mode.

    The expected pixels are computed here from the values put in, not read from cam_core.
    """
    rng = np.random.default_rng(12)
    h, w = 24, 40
    if kind == "RGBA":
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
        a = alpha.astype(np.float64)[..., None] / 255
        expected = np.round(rgb * a + 255 * (1 - a)).astype(np.uint8)  # on white
        return _encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA")), expected, 1, 0.5
    if kind == "P+transparency":
        index = rng.integers(0, 3, (h, w)).astype(np.uint8)
        image = Image.fromarray(index, "P")
        image.putpalette([10, 20, 30, 200, 0, 0, 0, 0, 250] + [0] * (253 * 3))
        colors = np.array([(255, 255, 255), (200, 0, 0), (0, 0, 250)], np.uint8)
        return _encode(image, transparency=0), colors[index], 0, 0
    if kind == "CMYK":
        cmyk = np.zeros((32, 48, 4), np.uint8)
        cmyk[:, :16, 0] = 255  # cyan
        cmyk[:, 16:, 3] = 255  # black
        expected = np.zeros((32, 48, 3), np.uint8)
        expected[:, :16] = (0, 255, 255)
        return _encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=100), expected, 40, 3
    ramp = np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)
    if kind == "I;16":
        assert Image.open(io.BytesIO(_encode(Image.fromarray(ramp)))).mode == "I;16"
        return _encode(Image.fromarray(ramp)), _gray_to_rgb(_scaled16(ramp)), 0, 0
    if kind == "I;16B":
        image = Image.frombytes("I;16B", (w, h), ramp.astype(">u2").tobytes())
        return image, _gray_to_rgb(_scaled16(ramp)), 0, 0
    if kind == "F":
        values = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)
        expected = np.round(values.astype(np.float64) * 255).astype(np.uint8)
        return Image.fromarray(values), _gray_to_rgb(expected), 0, 0
    if kind == "16-bit RGB":
        rgb16 = rng.integers(0, 65536, (h, w, 3), dtype=np.uint16)
        ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb16[..., ::-1]))  # OpenCV: BGR
        assert ok
        return png.tobytes(), _scaled16(rgb16), 0, 0
    if kind == "EXIF orientation 6":
        blocks = np.zeros((32, 48, 3), np.uint8)
        blocks[:16, :16], blocks[:16, 16:] = (255, 0, 0), (0, 255, 0)
        blocks[16:, :16], blocks[16:, 16:] = (0, 0, 255), (255, 255, 255)
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90° clockwise to display"
        data = _encode(Image.fromarray(blocks), "JPEG", quality=95, exif=exif)
        return data, np.rot90(blocks, k=-1), 255, 8  # lossy: the mean error is what counts
    if kind == "animated GIF":
        frames = [Image.new("RGB", (w, h), color) for color in ("red", "lime", "blue")]
        data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
        return data, np.full((h, w, 3), (255, 0, 0), np.uint8), 0, 0
    if kind == "grayscale for RGB":
        gray = rng.integers(0, 256, (h, w), dtype=np.uint8)
        return _encode(Image.fromarray(gray, "L")), _gray_to_rgb(gray), 0, 0
    raise AssertionError(kind)


ODD_MODES = [
    "RGBA",
    "P+transparency",
    "CMYK",
    "I;16",
    "I;16B",
    "F",
    "16-bit RGB",
    "EXIF orientation 6",
    "animated GIF",
    "grayscale for RGB",
]


@pytest.fixture(scope="module")
def any_size_explainer() -> Explainer:
    """ThreeInputNet whose modalities keep each image's own size (no ``size=``)."""
    torch.manual_seed(0)
    modalities = [
        Modality("texture", channels=1),
        Modality("frequency", channels=1),
        Modality("rgb", mean=THREE[2].mean, std=THREE[2].std),
    ]
    return Explainer(ThreeInputNet(), modalities, device="cpu")


@pytest.mark.parametrize("kind", ODD_MODES)
def test_odd_image_mode_is_explained_upright_at_its_size_and_rescaled(kind, any_size_explainer):
    # RELIABILITY row 12
    source, expected, max_error, mean_error = _odd_image(kind)
    explainer = any_size_explainer
    inputs = {**three_input_batch(1), "rgb": source}
    result = explainer.explain(inputs, "fuse")
    height, width = expected.shape[:2]
    display = result.display["rgb"]
    assert display.shape == (1, height, width, 3) and display.dtype == np.uint8
    error = np.abs(display[0].astype(int) - expected.astype(int))
    assert error.max() <= max_error and error.mean() <= mean_error, (error.max(), error.mean())
    assert display.mean() < 250  # never the near-white of a clamped 16-bit image
    cam = result.cams["rgb"]
    assert cam.shape == (1, height, width) and np.isfinite(cam).all()
    assert cam.min() >= 0 and cam.max() <= 1 and not result.empty["rgb"].any()
    # The network saw the pixels that are shown: the same probabilities from those pixels.
    shown = explainer.predict({**three_input_batch(1), "rgb": display})
    np.testing.assert_allclose(result.probabilities, shown, atol=1e-6)


# ------------------------------------------------------------------------------------------
# row 13: maps without signal
# ------------------------------------------------------------------------------------------


class ConstantMapNet(nn.Module):
    """``flat`` outputs 1 everywhere (zero weights, bias 1): any CAM there is constant, yet the
    class score depends on it (the gradient is not zero)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.flat = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 2)
        nn.init.zeros_(self.flat.weight)
        nn.init.constant_(self.flat.bias, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.flat(self.conv(x))).mean(dim=(2, 3)))


class NaNChannel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[:, 1:] = float("nan")
        return out


class NaNChannelNet(nn.Module):
    """``feat`` carries NaN in channels the head never reads: the class score is finite, the
    weighted map of the layer is NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.feat = NaNChannel()
        self.head = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feat(self.conv(x))[:, :1].mean(dim=(2, 3)))


def _assert_no_signal_reported(result, n: int = 2) -> None:
    assert result.empty["rgb"].tolist() == [True] * n
    assert np.isfinite(result.cams["rgb"]).all() and (result.cams["rgb"] == 0).all()
    for i in range(1, n + 1):
        assert any(
            notice.startswith(f"rgb (sample {i}): the CAM carries no signal")
            for notice in result.notices
        ), result.notices
    assert np.isfinite(result.probabilities).all()
    # Drawn like grad-cam draws a zero map: no NaN reaches the picture.
    display = result.display["rgb"]
    expected = [
        show_cam_on_image(
            image.astype(np.float32) / 255, np.zeros(image.shape[:2], np.float32), True
        )
        for image in display
    ]
    np.testing.assert_array_equal(result.overlay("rgb"), np.stack(expected))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "eigencam"])
def test_constant_cam_gives_a_no_signal_notice(method) -> None:
    # RELIABILITY row 13
    torch.manual_seed(0)
    explainer = Explainer(ConstantMapNet(), [Modality("rgb")], device="cpu")
    result = explainer.explain({"rgb": torch.randn(2, 3, 16, 16)}, "flat", method)
    raw = result.raw["rgb"]
    assert np.ptp(raw, axis=(1, 2)).max() <= 1e-6 * max(1.0, np.abs(raw).max())  # constant
    _assert_no_signal_reported(result)


@pytest.mark.parametrize("method", ["gradcam", "layercam", "scorecam", "sweep"])
def test_nan_cam_gives_a_no_signal_notice_not_a_crash(method) -> None:
    # RELIABILITY row 13
    torch.manual_seed(0)
    explainer = Explainer(NaNChannelNet(), [Modality("rgb")], device="cpu")
    inputs = {"rgb": torch.randn(2, 3, 16, 16)}
    if method == "sweep":
        result = explainer.sweep(inputs, ["feat", "conv"])["feat"]
    else:
        result = explainer.explain(inputs, "feat", method)
    assert np.isnan(result.raw["rgb"]).any()  # the map really is NaN
    _assert_no_signal_reported(result)


# ------------------------------------------------------------------------------------------
# row 14: upload over the size limit
# ------------------------------------------------------------------------------------------


def test_upload_at_the_limit_passes_one_byte_over_is_refused_without_decoding(monkeypatch):
    # RELIABILITY row 14
    limit_mb = 1 / 128  # 8192 bytes exactly
    check_upload_size("exact.png", 8192, limit_mb, modality="rgb")
    with pytest.raises(InputError, match=r"over\.png is 0\.0 MB; the limit is 0\.0078125 MB"):
        check_upload_size("over.png", 8193, limit_mb, modality="rgb")
    decoded: list[object] = []
    monkeypatch.setattr("cam_core.images.load_image", lambda *a, **k: decoded.append(a))
    png = _encode(Image.new("RGB", (64, 64)))
    big = decode_input(png + b"\0" * 8192, "big.png", channels=3, limit_mb=limit_mb, modality="rgb")
    assert big.image is None and "limit is 0.0078125 MB" in big.error
    assert decoded == []  # refused from its size alone, never handed to the decoder


# ------------------------------------------------------------------------------------------
# row 16: missing modality, different sizes, non-spatial layer
# ------------------------------------------------------------------------------------------


def test_images_of_different_sizes_per_modality_are_supported(three_net, three_modalities):
    # RELIABILITY row 16
    rng = np.random.default_rng(16)
    pixels = {
        "texture": rng.integers(0, 256, (48, 24), dtype=np.uint8),
        "frequency": rng.integers(0, 256, (20, 36), dtype=np.uint8),
        "rgb": rng.integers(0, 256, (40, 40, 3), dtype=np.uint8),
    }
    files = {name: _encode(Image.fromarray(p)) for name, p in pixels.items()}
    result = Explainer(three_net, three_modalities, device="cpu").explain(files, "fuse")
    for name, p in pixels.items():
        shown = p if p.ndim == 3 else _gray_to_rgb(p)
        np.testing.assert_array_equal(result.display[name][0], shown)
        assert result.cams[name].shape == (1, *p.shape[:2])
        assert not result.empty[name].any()


@pytest.mark.parametrize("value", [None, []], ids=["None", "empty list"])
def test_a_modality_given_as_nothing_is_named(value, three_net, three_modalities):
    # RELIABILITY row 16
    inputs = {**three_input_batch(1), "frequency": value}
    with pytest.raises(InputError, match="frequency") as info:
        Explainer(three_net, three_modalities, device="cpu").explain(inputs, "fuse")
    assert info.value.modality == "frequency"


def test_non_spatial_layer_error_names_the_layer(three_net, three_modalities):
    # RELIABILITY row 16
    explainer = Explainer(three_net, three_modalities, device="cpu")
    with pytest.raises(LayerError, match="no spatial dimensions") as info:
        explainer.sweep(three_input_batch(1), ["fuse", "rgb_branch", "head"])
    assert "'head'" in str(info.value)


# ------------------------------------------------------------------------------------------
# row 17: model swaps and sessions: memory stays bounded
# ------------------------------------------------------------------------------------------


def _tracked_spec(built: list[weakref.ref], factory: Callable[[], nn.Module] = ThreeInputNet):
    def build_model() -> nn.Module:
        model = factory()
        built.append(weakref.ref(model))
        return model

    return ModelSpec("tracked", build_model, THREE, classes=tuple("abcd"), default_layer="fuse")


def test_swapped_out_models_and_their_cached_results_are_freed() -> None:
    # RELIABILITY row 17
    built: list[weakref.ref] = []
    spec = _tracked_spec(built)
    caches = ModelCaches(max_entries=3)
    inputs = three_input_batch(1)
    also = [  # one more kind of request per model, so each kind is checked once
        lambda e: e.explain(inputs, method="ablationcam"),
        lambda e: e.sweep(inputs, ["fuse", "rgb_branch"]),
        lambda e: e.attention(inputs, "attn"),
        lambda e: e.layer_tree(),
    ]
    current = None
    for request in also:
        current = spec.build_explainer(device="cpu")  # the app's model select box
        cache = caches.for_model(current)
        cache.put("gradcam", current.explain(inputs))
        cache.put("other", request(current))
        current.predict(inputs)
    del cache
    gc.collect()
    alive = [ref() is not None for ref in built]
    assert alive == [False, False, False, True]  # only the model in use is still there
    assert len(caches) == 1 and len(caches.for_model(current)) == 2
    current = None
    gc.collect()
    assert built[-1]() is None and len(caches) == 0


def test_checkpoints_refused_during_swaps_leave_no_model_behind(tmp_path) -> None:
    # RELIABILITY row 17
    built: list[weakref.ref] = []
    spec = _tracked_spec(built)
    wrong_shapes = io.BytesIO()
    torch.save({"head.weight": torch.zeros(9, 8), "head.bias": torch.zeros(9)}, wrong_shapes)
    for _ in range(4):
        with pytest.raises(ModelLoadError, match="head.weight"):
            spec.build_explainer(device="cpu", checkpoint=wrong_shapes.getvalue())
    gc.collect()
    assert len(built) == 4 and all(ref() is None for ref in built)


def test_result_cache_shared_by_many_sessions_stays_bounded() -> None:
    # RELIABILITY row 17
    explainer = _tracked_spec([]).build_explainer(device="cpu")
    caches = ModelCaches(max_entries=4)
    stored: list[weakref.ref] = []
    lock = threading.Lock()

    def session(number: int) -> None:  # one browser session: a few requests, then it leaves
        for request in range(3):
            result = explainer.explain(three_input_batch(1, seed=10 * number + request))
            caches.for_model(explainer).put((number, request), result)
            with lock:
                stored.append(weakref.ref(result))

    _, errors = _run_threads(*[lambda n=n: session(n) for n in range(6)])
    assert not errors, errors
    gc.collect()
    assert len(stored) == 18
    assert len(caches.for_model(explainer)) == 4
    assert sum(ref() is not None for ref in stored) == 4  # evicted results are freed


class BallastNet(nn.Module):
    """A small network that holds 64 MiB, so that a leaked copy shows in resident memory."""

    BYTES = 64 * 2**20

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)
        self.register_buffer("ballast", torch.ones(self.BYTES // 4))  # ones: pages touched

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc (Linux)")
def test_resident_memory_stays_flat_over_many_swaps_of_a_large_model() -> None:
    # RELIABILITY row 17
    spec = ModelSpec("ballast", BallastNet, (Modality("rgb"),), default_layer="conv")
    caches = ModelCaches(max_entries=4)
    inputs = {"rgb": torch.randn(1, 3, 16, 16)}

    def swap(number: int) -> None:
        explainer = spec.build_explainer(device="cpu")
        caches.for_model(explainer).put(number, explainer.explain(inputs))

    swap(0)
    swap(1)
    gc.collect()
    before = _resident_bytes()
    for number in range(8):
        swap(number)
    gc.collect()
    growth = _resident_bytes() - before
    # Each 64 MiB buffer is its own mapping, returned to the system when freed: eight leaked
    # models would add 512 MiB.
    assert growth < 2 * BallastNet.BYTES, f"resident memory grew by {growth / 2**20:.0f} MiB"
    assert len(caches) == 0


def test_swapped_out_model_is_freed_at_once_without_the_cycle_collector() -> None:
    # RELIABILITY row 17
    built: list[weakref.ref] = []
    spec = _tracked_spec(built)
    gc.collect()
    gc.disable()
    try:
        explainer = spec.build_explainer(device="cpu")
        explainer.explain(three_input_batch(1), method="gradcam")
        del explainer  # the app's cache evicts it, or the user picks another model
        assert built[0]() is None
    finally:
        gc.enable()
        gc.collect()
