"""`python -m cam_core explain --ray local --workers 2`: the plain run's maps, on Ray actors.

One Ray run on CPU (starting Ray takes most of the time) over a folder where one image is not
an image and one makes the model raise: both are reported in summary.json and every other
sample is explained, with the maps of the plain run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).absolute().parents[1]

# A spec whose model raises on an all-black image: a sample that fails inside the model.
SPEC = """
import torch
from torch import nn
from cam_core import Modality

MODALITIES = [Modality("rgb", size=32)]
CLASSES = ["a", "b", "c"]
DEFAULT_LAYER = "features.2"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1)
        )
        self.head = nn.Linear(8, 3)

    def forward(self, rgb):
        if bool((rgb.flatten(1).std(dim=1) == 0).any()):
            raise ValueError("a blank image reached the model")
        return self.head(self.features(rgb).amax(dim=(2, 3)))


def build_model():
    torch.manual_seed(0)
    return Net()
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cam_core", "explain", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow  # starts a local Ray: 20-60 s on a busy 2-core machine
def test_ray_local_two_workers_equals_the_plain_run_and_reports_failed_samples(tmp_path):
    (tmp_path / "spec.py").write_text(SPEC)
    good, every = tmp_path / "good", tmp_path / "every"
    good.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(good / f"{i}.png")
    every.mkdir()
    for path in good.iterdir():
        (every / path.name).write_bytes(path.read_bytes())
    (every / "broken.png").write_bytes(b"not a png at all")
    Image.new("RGB", (40, 40)).save(every / "blank.png")

    plain = cli(
        "--spec", "spec.py", "-i", "rgb=good", "--out", "plain", "--batch-size", "2", cwd=tmp_path
    )
    assert plain.returncode == 0, plain.stderr
    ray = cli(
        "--spec", "spec.py", "-i", "rgb=every", "--out", "ray", "--batch-size", "2",
        "--ray", "local", "--workers", "2",
        cwd=tmp_path,
    )  # fmt: skip
    # Failed samples make the exit status 2 (as in the plain run), after every other sample.
    assert ray.returncode == 2, ray.stderr
    assert "7/7" in ray.stderr  # the progress bar reached every sample

    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    expected = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert summary["ray"] == {
        "address": "local",
        "workers": 2,
        "cpus_per_worker": 1.0,
        "gpus_per_worker": 0.0,
    }
    assert [s["name"] for s in summary["samples"]] == ["0", "1", "2", "3", "4"]
    for got, want in zip(summary["samples"], expected["samples"]):
        assert got["predicted"] == want["predicted"]
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-6)
        for kind in ("cam", "raw"):
            np.testing.assert_allclose(
                np.load(tmp_path / "ray" / got["files"]["rgb"][kind]),
                np.load(tmp_path / "plain" / want["files"]["rgb"][kind]),
                atol=1e-5,
            )
    skipped = {s["name"]: s["error"] for s in summary["skipped"]}
    assert set(skipped) == {"blank", "broken"}
    assert "a blank image reached the model" in skipped["blank"]
    assert "broken" in skipped["broken"]


def test_ray_is_optional_for_the_app_and_the_plain_cli():
    lines = (ROOT / "requirements.txt").read_text().lower().splitlines()
    names = {re.split(r"[<>=!~\[; ]", line.strip())[0] for line in lines if line.strip()}
    assert "torch" in names and "ray" not in names
    assert "ray[data]" in (ROOT / "requirements-scale.txt").read_text()
    assert "-r requirements-scale.txt" in (ROOT / "requirements-dev.txt").read_text()
