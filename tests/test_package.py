"""`pip install .` gives `cam_core`, the app and the console scripts `cam-core`, `cam-explorer`.

The package is built and installed for real (`pip install --no-deps --no-build-isolation
--target DIR`, offline: the dependencies are already here) from a copy of the source tree, so
the checkout is not written to; the installed copy is then run from another directory with
only DIR on the path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cam_explorer
from cam_explorer.launcher import streamlit_command

ROOT = Path(__file__).absolute().parents[1]
# What the build must not need (and must not copy): tests, benches, outputs, caches.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", "tests", "bench", "results", "build", "*.egg-info", "__pycache__", ".*_cache"
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package installed into a fresh folder (``DIR/cam_core``, ``DIR/bin/cam-core``...)."""
    work = tmp_path_factory.mktemp("package")
    source, target = work / "source", work / "target"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--disable-pip-version-check", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def run_installed(target: Path, *command: str, timeout: float = 120):
    """Run ``command`` outside the checkout with only the installed package importable."""
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        command, cwd=target.parent, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_launcher_passes_spec_to_the_app_and_dotted_options_to_streamlit():
    argv = ["--spec", "a.py", "--server.port", "8502", "--spec=b.py", "--theme.base=dark"]
    assert streamlit_command(argv) == [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app.py"),
        "--server.port",
        "8502",
        "--theme.base=dark",
        "--",
        "--spec",
        "a.py",
        "--spec=b.py",
    ]


def test_launcher_without_arguments_runs_the_app_alone():
    assert streamlit_command([])[3:] == ["run", str(ROOT / "app.py")]


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_installed_package_holds_every_file_of_cam_core_and_the_app(installed):
    # A new subpackage or data file must be named in pyproject.toml ([tool.setuptools]).
    shipped, source = _files(installed / "cam_core"), _files(ROOT / "cam_core")
    assert sorted(set(source) - set(shipped)) == [], "not shipped: list them in pyproject.toml"
    assert shipped == source
    assert (installed / "cam_core/demo/weights.pt").is_file()
    app = installed / "cam_explorer" / "app"
    assert _files(app / "pages") == _files(ROOT / "pages")
    for path in ("app.py", ".streamlit/config.toml"):
        assert (app / path).read_bytes() == (ROOT / path).read_bytes(), path
    assert {p.name for p in app.iterdir()} - {"__pycache__"} == {".streamlit", "app.py", "pages"}


def test_installed_cam_core_command_is_the_cli(installed):
    proc = run_installed(installed, str(installed / "bin" / "cam-core"), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: cam-core")
    assert "explain" in proc.stdout and "layers" in proc.stdout


@pytest.mark.slow  # imports torch and runs the demo's first view: about 20 s
def test_installed_cam_explorer_command_runs_the_installed_app(installed):
    proc = run_installed(installed, str(installed / "bin" / "cam-explorer"), "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"streamlit run {installed / 'cam_explorer' / 'app' / 'app.py'}" in proc.stdout
    # The installed app runs (AppTest), importing its pages from the installed copy.
    script = (
        "import sys, cam_explorer\n"
        "from streamlit.testing.v1 import AppTest\n"
        "at = AppTest.from_file(str(cam_explorer.app_path()), default_timeout=180).run()\n"
        "assert not at.exception, [e.message for e in at.exception]\n"
        "assert not at.error, [e.value for e in at.error]\n"
        "print(sys.modules['pages.ui.common'].__file__)\n"
        "print(sys.modules['cam_core'].__file__)\n"
    )
    proc = run_installed(installed, sys.executable, "-c", script, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pages_file, core_file = proc.stdout.split()[-2:]
    assert Path(pages_file) == installed / "cam_explorer" / "app" / "pages" / "ui" / "common.py"
    assert Path(core_file) == installed / "cam_core" / "__init__.py"


def test_checkout_launcher_runs_the_repositorys_app():
    assert cam_explorer.app_path() == ROOT / "app.py"
