"""Images per second: the plain batched CLI run against ``--ray local`` on this machine.

    python bench/ray_throughput.py [--samples 256] [--workers 2] [--method gradcam]

Writes ``--samples`` generated demo samples (``cam_core.demo.generate``, three 64 px
modalities) in the ``--samples DIR`` layout, then times ``python -m cam_core explain`` on them,
plain and with ``--ray local --workers N`` (batch 16, one torch thread per worker), in one run.
The Ray figure is given with and without Ray's start (the time until its first sample is done
is not separable from outside, so "without" subtracts the run's start measured on 16 samples).
Compare the ratio, not the seconds: this machine is shared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).absolute().parents[1]
sys.path.insert(0, str(ROOT))

from cam_core.demo import generate  # noqa: E402


def write_samples(folder: Path, n: int) -> None:
    """``folder/<i>/{rgb,frequency,texture}.png`` for ``n`` generated demo samples."""
    batch = generate(n, seed=7)
    for i in range(n):
        sample = folder / f"{i:05d}"
        sample.mkdir(parents=True)
        for name, images in batch.inputs.items():
            Image.fromarray(images[i]).save(sample / f"{name}.png")


def timed(folder: Path, out: Path, method: str, *extra: str) -> float:
    """Seconds for one ``explain`` run (the process, imports included)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "cam_core", "explain", "--samples", str(folder)]
    command += ["--out", str(out), "--method", method, "--batch-size", "16", "-q", *extra]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--method", default="gradcam")
    args = parser.parse_args()
    ray = ["--ray", "local", "--workers", str(args.workers)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_samples(work / "all", args.samples)
        write_samples(work / "few", 16)
        plain = timed(work / "all", work / "plain", args.method)
        plain_start = timed(work / "few", work / "plain-few", args.method)
        ray_total = timed(work / "all", work / "ray", args.method, *ray)
        ray_start = timed(work / "few", work / "ray-few", args.method, *ray)
    n = args.samples

    def rate(total: float, start: float) -> str:  # n/a when start-up varied more than the work
        return f"{(n - 16) / (total - start):7.1f}" if total > start else "    n/a"

    print(f"# {n} demo samples, {args.method}, batch 16, {os.cpu_count()} CPUs here")
    print(f"plain run           {n / plain:7.1f} images/s  ({plain:.1f} s with start-up)")
    print(f"--ray local x{args.workers}      {n / ray_total:7.1f} images/s  ({ray_total:.1f} s)")
    print(f"without start-up    plain {rate(plain, plain_start)}  ray {rate(ray_total, ray_start)}")
    print(f"start-up (16 samples) plain {plain_start:.1f} s, ray {ray_start:.1f} s")


if __name__ == "__main__":
    main()
