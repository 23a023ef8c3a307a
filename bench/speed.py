"""Speed and memory of ``Explainer.explain`` against the floor and its peers, in one run.

    OMP_NUM_THREADS=1 taskset -c 0 python bench/speed.py          # quick: the target cases
    OMP_NUM_THREADS=1 taskset -c 0 python bench/speed.py --full   # batch 1, 8, 32 everywhere
    python bench/speed.py --device cuda --full                    # on a GPU (bench/gpu_check.sh)

For every case (model, batch) the candidates run interleaved, round after round (the order
rotates each round), each timed as the best of 3 calls; a candidate's ratio is its time over the
floor's in the same round, and the table shows the median over rounds.  This machine is shared:
compare ratios, not milliseconds.

* floor: one forward + ``torch.autograd.grad(score, layer output)`` — the least any gradient CAM
  can cost.  full: one forward + ``loss.backward()`` (every parameter's gradient).
* explain: ``Explainer.explain(tensors, layer, method)``, tensors in, finished maps out.
* grad-cam: its ``GradCAM`` on the concatenate-and-slice workaround of a multi-input model.
* torch-cam / captum: ``GradCAM`` / ``LayerGradCam`` when installed (conv layers only).

Also: peak memory of one call (CUDA: ``max_memory_allocated``; CPU: peak resident set size over
one call, ``ru_maxrss`` against the RSS before it, in a fresh process per candidate), sweep of 4
layers against one explain, re-blend of 12 overlays at 256 px with PNG encoding (the app's work
per slider move), and resident memory over 200 consecutive explain calls.  Prints a markdown
table and writes JSON (``--out``, default ``bench/results/speed.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).absolute().parents[1]
sys.path.insert(0, str(ROOT))

from cam_core import Explainer, Modality  # noqa: E402

QUICK = [("demo", 16), ("resnet18", 1), ("resnet18", 8), ("resnet50", 1), ("forgery224", 1)]
FULL = [(m, n) for m in ("demo", "resnet18", "resnet50", "forgery224") for n in (1, 8, 32)]
MEMORY_QUICK = [("resnet50", 8), ("demo", 16)]
EXPLAINED = ("gradcam", "gradcam++", "layercam")


@dataclass
class Case:
    """One model at one batch size, ready for every candidate."""

    name: str
    batch: int
    layer: str
    model: nn.Module
    modalities: list[Modality]
    tensors: dict[str, torch.Tensor]
    explainer: Explainer
    tokens: tuple[int, int] | None = None  # (h, w) of a token layer's grid
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def module(self) -> nn.Module:
        return dict(self.model.named_modules())[self.layer]

    def run(self) -> torch.Tensor:
        """The model's logits (positional inputs in forward order)."""
        return self.model(*self.tensors.values())

    def concat(self) -> tuple[nn.Module, torch.Tensor]:
        """grad-cam's workaround: one tensor, sliced inside a wrapper."""
        splits = [t.shape[1] for t in self.tensors.values()]
        model = self.model

        class Concat(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return model(*torch.split(x, splits, dim=1))

        return Concat(), torch.cat(list(self.tensors.values()), dim=1)


def build_case(name: str, batch: int, device: torch.device) -> Case:
    """The case's model (random weights except the demo's shipped ones) and seeded inputs."""
    g = torch.Generator().manual_seed(batch)
    tokens = None
    if name == "demo":
        from cam_core import demo

        model, modalities, layer = demo.build_model(), list(demo.MODALITIES), demo.DEFAULT_LAYER
    elif name.startswith("resnet"):
        import torchvision

        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        modalities, layer = [Modality("rgb", size=224)], "layer4"
    elif name == "forgery224":
        sys.path.insert(0, str(ROOT / "examples"))
        import forgery_spec

        model = forgery_spec.build_model().eval()
        modalities = [
            Modality(m.name, channels=m.channels, size=224, mean=m.mean, std=m.std)
            for m in forgery_spec.MODALITIES
        ]
        layer, tokens = "cross", (28, 28)
    else:
        raise SystemExit(f"unknown case {name!r}")
    model = model.to(device)
    tensors = {
        m.name: torch.randn(batch, m.channels, *m.size, generator=g).to(device) for m in modalities
    }
    explainer = Explainer(model, modalities, device=device)
    case = Case(name, batch, layer, model, modalities, tensors, explainer, tokens)
    with torch.no_grad():  # captum takes the class to explain; the others find it themselves
        case.extra["classes"] = case.run().argmax(dim=1)
    return case


# -- candidates -----------------------------------------------------------------------------------


def floor(case: Case) -> None:
    box = {}
    handle = case.module.register_forward_hook(lambda _m, _a, out: box.setdefault("a", out))
    try:
        logits = case.run()
    finally:
        handle.remove()
    score = logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum()
    torch.autograd.grad(score, box["a"])


def full(case: Case) -> None:
    logits = case.run()
    logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum().backward()
    case.model.zero_grad(set_to_none=True)


def explain(method: str) -> Callable[[Case], None]:
    def call(case: Case) -> None:
        case.explainer.explain(case.tensors, case.layer, method)

    return call


def grad_cam(case: Case) -> None:
    from pytorch_grad_cam import GradCAM

    model, x = case.concat()
    reshape = None
    if case.tokens is not None:
        h, w = case.tokens

        def reshape(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    with GradCAM(model, [case.module], reshape_transform=reshape) as cam:
        cam(x, None)
    case.model.zero_grad(set_to_none=True)  # grad-cam leaves .grad behind


def torch_cam(case: Case) -> None:
    from torchcam.methods import GradCAM

    with GradCAM(case.model, case.layer, enable_hooks=True) as extractor:
        logits = case.run()
        extractor(logits.argmax(dim=1).tolist(), logits)


def captum(case: Case) -> None:
    from captum.attr import LayerGradCam

    inputs = tuple(case.tensors.values())
    LayerGradCam(case.model, case.module).attribute(inputs, target=case.extra["classes"])


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def candidates(case: Case) -> dict[str, Callable[[Case], None]]:
    found: dict[str, Callable[[Case], None]] = {"floor": floor, "full fwd+bwd": full}
    found.update({f"explain {m}": explain(m) for m in EXPLAINED})
    found["grad-cam"] = grad_cam
    if case.tokens is None:  # torch-cam and captum read (N, C, h, w) maps only
        if _installed("torchcam"):
            found["torch-cam"] = torch_cam
        if _installed("captum"):
            found["captum"] = captum
    return found


# -- measuring ------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(fn: Callable[[], None], device: torch.device, tries: int = 3) -> float:
    best = float("inf")
    for _ in range(tries):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def time_case(case: Case, rounds: int, device: torch.device) -> dict[str, object]:
    """Median ratio to the floor of each candidate, interleaved rounds."""
    found = candidates(case)
    names = list(found)
    for fn in found.values():  # warm-up: imports, allocator, lazy inits
        fn(case)
    ratios: dict[str, list[float]] = {n: [] for n in names}
    floors = []
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        times = {n: _best_of(lambda n=n: found[n](case), device) for n in order}
        floors.append(times["floor"])
        for n in names:
            ratios[n].append(times[n] / times["floor"])
    return {
        "model": case.name,
        "batch": case.batch,
        "layer": case.layer,
        "floor_ms": round(statistics.median(floors) * 1000, 2),
        "ratios": {n: round(statistics.median(v), 3) for n, v in ratios.items()},
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_child(spec: str, device: torch.device) -> None:
    """In a fresh process: peak memory of one call of candidate ``spec = model:batch:name``."""
    model_name, batch, candidate = spec.split(":", 2)
    warm = build_case(model_name, 1, device)
    case = build_case(model_name, int(batch), device)
    fn = candidates(case)[candidate]
    fn(warm)  # imports and lazy inits, at batch 1 (a lower peak than the measured call)
    del warm
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn(case)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        before = _rss_bytes()
        fn(case)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(json.dumps({"peak_mb": round(peak / 2**20, 1)}))


def peak_memory(cases: list[tuple[str, int]], device: torch.device) -> list[dict[str, object]]:
    rows = []
    for model_name, batch in cases:
        case = build_case(model_name, batch, device)
        row: dict[str, object] = {"model": model_name, "batch": batch, "peak_mb": {}}
        for candidate in candidates(case):
            if device.type == "cuda":  # allocator statistics are exact in-process
                from contextlib import redirect_stdout
                from io import StringIO

                buffer = StringIO()
                with redirect_stdout(buffer):
                    peak_memory_child(f"{model_name}:{batch}:{candidate}", device)
                found = json.loads(buffer.getvalue())
            else:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--memory-child",
                        f"{model_name}:{batch}:{candidate}",
                    ]
                    + ["--device", str(device)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                )
                found = json.loads(out.stdout.strip().splitlines()[-1])
            row["peak_mb"][candidate] = found["peak_mb"]
        rows.append(row)
    return rows


def sweep_ratio(device: torch.device, rounds: int) -> dict[str, object]:
    """``sweep`` of 4 layers over one ``explain`` (forgery model, 224 px, batch 8)."""
    case = build_case("forgery224", 8, device)
    layers = ["rgb_branch", "texture_branch.body.3", "cross", "fusion"]
    e = case.explainer
    e.sweep(case.tensors, layers)
    ratios = []
    for _ in range(rounds):
        one = _best_of(lambda: e.explain(case.tensors, "fusion"), device)
        many = _best_of(lambda: e.sweep(case.tensors, layers), device)
        ratios.append(many / one)
    return {"layers": layers, "batch": 8, "sweep_over_explain": round(statistics.median(ratios), 3)}


def reblend_ms(repeats: int = 20) -> float:
    """The app's work per slider move: 12 overlays (4 samples x 3 modalities) at 256 px, blended
    and PNG-encoded."""
    from cam_core import CamResult
    from cam_core.export import overlay_pngs

    rng = np.random.default_rng(0)
    names = ["rgb", "frequency", "texture"]
    result = CamResult(
        cams={n: rng.random((4, 256, 256), dtype=np.float32) for n in names},
        raw={},
        display={n: rng.integers(0, 255, (4, 256, 256, 3), dtype=np.uint8) for n in names},
        probabilities=np.full((4, 2), 0.5, np.float32),
        targets=[0] * 4,
        layer="fusion",
        method="gradcam",
        modalities=tuple(Modality(n) for n in names),
    )
    overlay_pngs(result, colormap="jet", image_weight=0.5)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        overlay_pngs(result, colormap="jet", image_weight=0.4 + 0.01 * (i % 2))
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 2)


def memory_over_calls(device: torch.device, calls: int = 200) -> dict[str, float]:
    """Resident memory (CPU) / allocated memory (CUDA) over consecutive explain calls."""
    case = build_case("demo", 4, device)
    samples = []
    for _ in range(calls):
        case.explainer.explain(case.tensors, case.layer, "gradcam")
        if device.type == "cuda":
            samples.append(torch.cuda.memory_allocated(device))
        else:
            samples.append(_rss_bytes())
    mb = [s / 2**20 for s in samples]
    return {
        "calls": calls,
        "after_10_mb": round(mb[9], 1),
        "after_last_mb": round(mb[-1], 1),
        "growth_10_to_last_mb": round(mb[-1] - mb[9], 1),
        "max_mb": round(max(mb), 1),
    }


# -- report ---------------------------------------------------------------------------------------


def markdown(report: dict[str, object]) -> str:
    rows = report["cases"]
    names = list(dict.fromkeys(n for row in rows for n in row["ratios"]))
    lines = (
        [
            "| case | floor ms | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        if rows
        else []
    )
    for row in rows:
        cells = [f"{row['ratios'][n]:.2f}x" if n in row["ratios"] else "n/a" for n in names]
        case = f"{row['model']} b{row['batch']} `{row['layer']}`"
        lines.append(f"| {case} | {row['floor_ms']} | " + " | ".join(cells) + " |")
    if report.get("memory"):
        mem_names = list(dict.fromkeys(n for row in report["memory"] for n in row["peak_mb"]))
        lines += ["", "| peak memory of one call (MB) | " + " | ".join(mem_names) + " |"]
        lines.append("|---|" + "---|" * len(mem_names))
        for row in report["memory"]:
            floor_mb = row["peak_mb"]["floor"] or 1.0
            cells = [
                f"{row['peak_mb'][n]:.0f} ({row['peak_mb'][n] / floor_mb:.2f}x)" for n in mem_names
            ]
            lines.append(f"| {row['model']} b{row['batch']} | " + " | ".join(cells) + " |")
    lines.append("")
    if "sweep" in report:
        s = report["sweep"]
        lines.append(
            f"sweep of {len(s['layers'])} layers / one explain: {s['sweep_over_explain']}x"
        )
    if "reblend_ms" in report:
        lines.append(f"re-blend of 12 overlays at 256 px incl. PNG: {report['reblend_ms']} ms")
    if "calls" in report:
        c = report["calls"]
        lines.append(
            f"memory over {c['calls']} explain calls: {c['after_10_mb']} MB after 10, "
            f"{c['after_last_mb']} MB after {c['calls']} (growth {c['growth_10_to_last_mb']} MB)"
        )
    return "\n".join(lines)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="batch 1, 8, 32 for every model")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "speed.json")
    parser.add_argument("--cases", help="model:batch,... instead of the default set")
    parser.add_argument("--skip", default="", help="comma list of: time,memory,sweep,reblend,calls")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.memory_child:
        peak_memory_child(args.memory_child, device)
        return
    if args.cases:
        cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    else:
        cases = FULL if args.full else QUICK
    skip = set(filter(None, args.skip.split(",")))
    report: dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "device": str(device)
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cases": [],
    }
    for model_name, batch in [] if "time" in skip else cases:
        row = time_case(build_case(model_name, batch, device), args.rounds, device)
        report["cases"].append(row)
        print(f"# {model_name} b{batch}: {row['ratios']}", file=sys.stderr, flush=True)
    if "memory" not in skip:
        memory_cases = [
            c for c in (FULL if args.full else MEMORY_QUICK) if c[1] == 8 or c[0] == "demo"
        ]
        report["memory"] = peak_memory(memory_cases, device)
    if "sweep" not in skip:
        report["sweep"] = sweep_ratio(device, args.rounds)
    if "reblend" not in skip:
        report["reblend_ms"] = reblend_ms()
    if "calls" not in skip:
        report["calls"] = memory_over_calls(device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    print(f"\n(JSON: {args.out})")


if __name__ == "__main__":
    main()
