"""SIGTERM while ScoreCAM runs: the run stops at its next model call and the process exits 0.

RELIABILITY row 23. Before, the CLI died of the signal (status -15) and the app's server could
abort (-6, "terminate called without an active exception") with a thread still inside torch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cam_core import Explainer, shutdown
from cam_core.errors import Cancelled
from tests.conftest import hook_count, state_hash, three_input_batch

ROOT = Path(__file__).resolve().parent.parent

# A model that sleeps in every forward: ScoreCAM on its 256-channel layer makes 16 model calls
# per sample, ~1.6 s, with almost no CPU; the run is long enough to be stopped mid-way.
SLOW_SPEC = """
import time

import torch
from torch import nn
from cam_core import Modality

MODALITIES = [Modality("rgb", size=(8, 8))]
DEFAULT_LAYER = "conv"


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 256, 3, padding=1)
        self.fc = nn.Linear(256, 2)

    def forward(self, x):
        time.sleep(0.1)
        return self.fc(self.conv(x).mean((2, 3)))


def build_model():
    torch.manual_seed(0)
    return Slow()
"""


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found |= {int(p) for p in text.split()}
    return found


def test_sigterm_during_scorecam_exits_zero_and_leaves_nothing_running(tmp_path: Path) -> None:
    spec = tmp_path / "slow_spec.py"
    spec.write_text(SLOW_SPEC)
    images = tmp_path / "rgb"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cam_core", "explain", "--spec", str(spec), "-i", f"rgb={images}",
         "--method", "scorecam", "--batch-size", "1", "--out", str(tmp_path / "out")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    guard = threading.Timer(300, proc.kill)  # a hang fails the test instead of blocking CI
    guard.start()
    try:
        seen = b""
        while b"%|" not in seen:  # tqdm's bar: the model is loaded, ScoreCAM is running
            chunk = proc.stderr.read1(4096)
            assert chunk, f"exited before the run started: {seen.decode(errors='replace')}"
            seen += chunk
        children = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate()
    finally:
        guard.cancel()
    err = (seen + err).decode(errors="replace")
    assert proc.returncode == 0, err
    assert "stopped: signal SIGTERM received" in err
    assert "terminate called" not in err and "Traceback" not in err
    assert not (tmp_path / "out" / "summary.json").exists()  # it stopped mid-way
    assert all(not Path(f"/proc/{pid}").exists() for pid in children)


def test_stop_request_ends_scorecam_with_cancelled_and_model_restored(
    three_net, three_modalities
) -> None:
    explainer = Explainer(three_net, three_modalities, device="cpu")
    inputs = three_input_batch(1)
    before, hooks, training = state_hash(three_net), hook_count(three_net), three_net.training
    calls = []

    def stop_after_three(module, args):
        calls.append(1)
        if len(calls) == 3:
            shutdown.request_stop("test")

    handle = three_net.register_forward_pre_hook(stop_after_three)
    try:
        with pytest.raises(Cancelled, match="stopped: test"):
            explainer.explain(inputs, "fuse", "scorecam")
    finally:
        handle.remove()
        shutdown.reset()
    assert len(calls) == 3  # no model call after the request
    assert state_hash(three_net) == before
    assert hook_count(three_net) == hooks
    assert three_net.training == training
    assert shutdown.wait_idle(0)
    # and the next request runs
    assert explainer.explain(inputs, "fuse", "gradcam").cams["rgb"].shape == (1, 32, 32)


def test_exit_hook_stops_a_daemon_thread_inside_a_computation(three_net, three_modalities) -> None:
    """What the app's server relies on: at interpreter exit, running computations are asked to
    stop and waited for (here called directly; the atexit hook is the same function)."""
    explainer = Explainer(three_net, three_modalities, device="cpu")
    started = threading.Event()
    outcome = []
    handle = three_net.register_forward_pre_hook(lambda m, a: started.set())

    def run():
        try:
            while True:
                explainer.explain(three_input_batch(1), "fuse", "scorecam")
        except Cancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert started.wait(60)
        shutdown._at_exit()
        thread.join(60)
    finally:
        handle.remove()
        shutdown.reset()
    assert not thread.is_alive() and len(outcome) == 1


DAEMON_AT_EXIT = """
import atexit
import threading

def after_cam_core():  # registered first, so it runs after cam_core's own exit hook
    from cam_core import shutdown
    print("after exit hook: stop requested", shutdown.stop_requested(),
          "idle", shutdown.wait_idle(0), flush=True)

atexit.register(after_cam_core)

import torch
from cam_core import Explainer, Modality
from cam_core.errors import Cancelled
from tests.conftest import ThreeInputNet, three_input_batch

torch.manual_seed(0)
net = ThreeInputNet()
explainer = Explainer(net, [Modality("texture", channels=1), Modality("frequency", channels=1),
                            Modality("rgb")], device="cpu")
explainer.explain(three_input_batch(1), "fuse", "gradcam")  # imports done, as in a server
started = threading.Event()
net.register_forward_pre_hook(lambda m, a: started.set())

def serve():  # like Streamlit's script thread: a daemon, computing when the server stops
    try:
        while True:
            explainer.explain(three_input_batch(2, size=48), "fuse", "scorecam")
    except Cancelled as exc:
        print("daemon:", exc, flush=True)

threading.Thread(target=serve, daemon=True).start()
started.wait(120)
print("main: exiting", flush=True)
"""


def test_process_exit_with_a_daemon_thread_in_scorecam_stops_it_and_exits_zero() -> None:
    """The app's server on SIGTERM: Streamlit stops its loop and the interpreter exits while a
    daemon script thread may be inside ScoreCAM; the exit hook stops it first."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", DAEMON_AT_EXIT], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "main: exiting" in done.stdout
    assert "after exit hook: stop requested True idle True" in done.stdout
    assert "terminate called" not in done.stderr
