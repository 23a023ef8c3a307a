"""The command line end to end: the demo, the example spec, torchvision + checkpoint, errors.

Most runs call ``cli.main`` in-process (fast); two run ``python -m cam_core`` in a subprocess to
check exit codes and that user errors print one line and no traceback.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cam_core.cli import main
from cam_core.sources import demo_spec, load_spec

ROOT = Path(__file__).resolve().parent.parent
FORGERY = ROOT / "examples" / "forgery_spec.py"


def _write_images(folder: Path, modalities, names: list[str], size=(40, 48), seed=0) -> dict:
    """One PNG per name and modality under folder/<modality>/; returns {modality: folder}."""
    rng = np.random.default_rng(seed)
    folders = {}
    for m in modalities:
        sub = folder / m.name
        sub.mkdir(parents=True, exist_ok=True)
        for name in names:
            shape = (*size, 3) if m.channels == 3 else size
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(sub / f"{name}.png")
        folders[m.name] = sub
    return folders


def _run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def forgery():
    return load_spec(FORGERY)


# --- success ------------------------------------------------------------------------------------


def test_explain_demo_on_single_files(tmp_path, capsys):
    spec = demo_spec()
    folders = _write_images(tmp_path / "in", spec.modalities, ["photo"], size=(64, 64))
    inputs = [f"{m.name}={folders[m.name] / 'photo.png'}" for m in spec.modalities]
    args = [a for value in inputs for a in ("--input", value)]
    code, out, err = _run(capsys, "explain", *args, "--out", tmp_path / "out", "--quiet")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"] == "demo" and summary["layer"] == spec.default_layer
    (sample,) = summary["samples"]
    assert sample["name"] == "photo"
    for m in spec.modalities:
        png = Image.open(tmp_path / "out" / sample["files"][m.name]["overlay"])
        assert png.mode == "RGB" and png.size[::-1] == tuple(m.size)
        cam = np.load(tmp_path / "out" / sample["files"][m.name]["cam"])
        assert cam.shape == tuple(m.size) and cam.dtype == np.float32
    assert "explained 1 of 1 samples" in out


def test_explain_example_spec_folders_in_batches(tmp_path, capsys, forgery):
    names = [f"{i:04d}" for i in range(5)]
    folders = _write_images(tmp_path / "in", forgery.modalities, names)
    args = [a for m in forgery.modalities for a in ("--input", f"{m.name}={folders[m.name]}")]
    code, out, err = _run(
        capsys,
        "explain",
        "--spec",
        FORGERY,
        *args,
        "--out",
        tmp_path / "out",
        "--batch-size",
        "2",
        "--method",
        "gradcam++",
        "--colormap",
        "viridis",
        "--image-weight",
        "0.3",
        "--target",
        "fake",
    )
    assert code == 0, err
    assert "5/5" in err  # the progress bar ran to the end
    assert "note: Example model with random weights" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["name"] for s in summary["samples"]] == names
    assert summary["method"] == "gradcam++" and summary["colormap"] == "viridis"
    assert all(s["target_name"] == "fake" for s in summary["samples"])
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 15
    assert len(list((tmp_path / "out" / "cams").glob("*.npy"))) == 15
    cam = np.load(tmp_path / "out" / "cams" / "0003_rgb.npy")
    assert cam.shape == (64, 64) and cam.min() >= 0 and cam.max() <= 1

    # The files hold what the Python API gives for the same image and settings.
    explainer = forgery.build_explainer(device="cpu")
    sample = {m.name: [str(folders[m.name] / "0003.png")] for m in forgery.modalities}
    result = explainer.explain(sample, method="gradcam++", target="fake")
    np.testing.assert_allclose(cam, result.cams["rgb"][0], atol=1e-5)
    png = np.asarray(Image.open(tmp_path / "out" / "overlays" / "0003_rgb.png"))
    # ... at the file's own size (48x40 here; the model's input is 64x64).
    np.testing.assert_array_equal(png, result.overlay("rgb", "viridis", 0.3, full_size=True)[0])


def test_a_single_file_is_used_with_every_image_of_a_folder(tmp_path, capsys, forgery):
    folders = _write_images(tmp_path / "in", forgery.modalities, ["a", "b", "c"])
    code, _, err = _run(
        capsys,
        "explain",
        "--spec",
        FORGERY,
        "--input",
        f"texture={folders['texture']}",
        "--input",
        f"frequency={folders['frequency'] / 'b.png'}",
        "--input",
        f"rgb={folders['rgb']}",
        "--out",
        tmp_path / "out",
        "-q",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["inputs"]["frequency"] for s in summary["samples"]] == [
        str(folders["frequency"] / "b.png")
    ] * 3


def test_sample_folders_in_the_apps_layout(tmp_path, capsys, forgery):
    for name in ["s1", "s2"]:
        folders = _write_images(tmp_path / "tmp" / name, forgery.modalities, ["x"])
        (tmp_path / "samples" / name).mkdir(parents=True)
        for m in forgery.modalities:
            (folders[m.name] / "x.png").rename(tmp_path / "samples" / name / f"{m.name}.png")
    (tmp_path / "samples" / "incomplete").mkdir()
    code, _, err = _run(
        capsys, "explain", "--spec", FORGERY, "--samples", tmp_path / "samples",
        "--out", tmp_path / "out", "-q",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["name"] for s in summary["samples"]] == ["s1", "s2"]

    code, _, err = _run(
        capsys, "explain", "--spec", FORGERY, "--samples", tmp_path / "tmp",
        "--out", tmp_path / "out", "-q",
    )  # fmt: skip
    assert code == 2 and "no sub-folder holds one image per modality" in _error_line(err)


def test_layers_prints_the_tree_and_marks_the_default(capsys, forgery):
    code, out, _ = _run(capsys, "layers", "--spec", FORGERY)
    assert code == 0
    fusion = next(line for line in out.splitlines() if line.strip().startswith("fusion "))
    assert "(1, 32, 8, 8)" in fusion and "ready" in fusion and "(default)" in fusion
    assert any("cross.attn" in line and "MultiheadAttention" in line for line in out.splitlines())


def test_torchvision_model_with_checkpoint_and_without(tmp_path, capsys):
    import torchvision

    torch.manual_seed(0)
    checkpoint = tmp_path / "resnet18_3classes.pth"
    torch.save({"model": torchvision.models.resnet18(num_classes=3).state_dict()}, checkpoint)
    folders = _write_images(tmp_path / "in", load_spec(FORGERY).modalities[2:], ["x"])
    image = folders["rgb"] / "x.png"
    code, _, err = _run(
        capsys, "explain", "--model", "resnet18", "--checkpoint", checkpoint, "--input", image,
        "--out", tmp_path / "with", "-q", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "with" / "summary.json").read_text())
    assert summary["notice"] is None and "under 'model'" in summary["checkpoint"]
    assert len(summary["samples"][0]["probabilities"]) == 3
    assert np.load(tmp_path / "with" / "cams" / "x_rgb.npy").shape == (224, 224)

    code, _, err = _run(
        capsys, "explain", "--model", "resnet18", "--input", f"rgb={image}",
        "--out", tmp_path / "without", "-q",
    )  # fmt: skip
    assert code == 0, err
    assert "note: Random weights" in err and "mean nothing" in err


# --- bad usage and input: exit 2, one line -------------------------------------------------------


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda f: ["--input", f"rgb={f['rgb']}"], "no --input for modality texture, frequency"),
        (lambda f: ["--input", f"rgbb={f['rgb']}"], "expected NAME=PATH with NAME one of"),
        (lambda f: ["--input", "rgb=/no/such/dir", "--input", f"texture={f['texture']}"], ""),
        (lambda f: ["--input", f"rgb={f['rgb']}", "--input", f"rgb={f['rgb']}"], "given twice"),
    ],
)
def test_bad_input_arguments_exit_2_with_one_line(tmp_path, capsys, forgery, make_args, expected):
    folders = _write_images(tmp_path / "in", forgery.modalities, ["a"])
    code, _, err = _run(
        capsys, "explain", "--spec", FORGERY, *make_args(folders), "--out", tmp_path / "out"
    )
    assert code == 2
    assert expected in _error_line(err)


def test_folders_that_do_not_pair_exit_2(tmp_path, capsys, forgery):
    folders = _write_images(tmp_path / "in", forgery.modalities, ["a", "b"])
    (folders["texture"] / "b.png").unlink()
    args = [a for m in forgery.modalities for a in ("--input", f"{m.name}={folders[m.name]}")]
    code, _, err = _run(capsys, "explain", "--spec", FORGERY, *args, "--out", tmp_path / "out")
    assert code == 2
    assert "no match in --input texture=" in _error_line(err) and "first: b" in err


def test_unreadable_image_is_skipped_named_and_exits_2(tmp_path, capsys, forgery):
    folders = _write_images(tmp_path / "in", forgery.modalities, ["a", "b", "c"])
    (folders["rgb"] / "b.png").write_bytes(b"this is not a png")
    args = [a for m in forgery.modalities for a in ("--input", f"{m.name}={folders[m.name]}")]
    code, _, err = _run(
        capsys, "explain", "--spec", FORGERY, *args, "--out", tmp_path / "out", "-q"
    )
    assert code == 2
    line = _error_line(err)
    assert "1 of 3 samples skipped" in line and "b.png" in line
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["name"] for s in summary["samples"]] == ["a", "c"]
    assert summary["skipped"][0]["name"] == "b"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--layer", "no.such.layer"], "no.such.layer"),
        (["--method", "magiccam"], "magiccam"),
        (["--target", "7"], "out of range"),
        (["--target", "unicorn"], "unicorn"),
    ],
)
def test_bad_layer_method_or_target_exit_2(tmp_path, capsys, forgery, extra, expected):
    folders = _write_images(tmp_path / "in", forgery.modalities, ["a"])
    args = [a for m in forgery.modalities for a in ("--input", f"{m.name}={folders[m.name]}")]
    code, _, err = _run(
        capsys, "explain", "--spec", FORGERY, *args, *extra, "--out", tmp_path / "out", "-q"
    )
    assert code == 2
    assert expected in _error_line(err)


def test_bad_spec_and_bad_checkpoint_exit_2(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("def build_model(:\n")
    code, _, err = _run(capsys, "layers", "--spec", broken)
    assert code == 2 and "broken.py:1: syntax error" in _error_line(err)

    whole = tmp_path / "whole.pt"
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buffer)
    whole.write_bytes(buffer.getvalue())
    code, _, err = _run(capsys, "layers", "--model", "resnet18", "--checkpoint", whole)
    assert code == 2 and "whole pickled model" in _error_line(err)

    code, _, err = _run(capsys, "layers", "--model", "resnet19")
    assert code == 2 and "choose one of resnet18" in _error_line(err)


def test_argparse_usage_errors_exit_2(capsys):
    for argv in (["explain"], ["explain", "--out", "x", "--image-weight", "3"], ["nothing"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    capsys.readouterr()


# --- as a real process ----------------------------------------------------------------------------


def _python_m(*argv: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cam_core", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_process_end_to_end_on_the_example_spec(tmp_path, forgery):
    folders = _write_images(tmp_path / "in", forgery.modalities, ["one", "two", "three"])
    args = [a for m in forgery.modalities for a in ("--input", f"{m.name}={folders[m.name]}")]
    done = _python_m("explain", "--spec", FORGERY, *args, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "3/3" in done.stderr
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 9

    bad = _python_m("explain", "--spec", FORGERY, "--input", "rgb=/no/such.png", "--out", tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: --input rgb=/no/such.png: no such file or folder."
    ]
