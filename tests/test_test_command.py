"""The README's test command (`scripts/test.sh`) installs what the tests need, and CI runs it.

The script is run for real, with `python`, `apt-get` and `sudo` replaced by stubs on PATH that
log their arguments: nothing is installed, and the stub `python` exits with a chosen status for
`-m pytest` so the propagation of pytest's exit code is checked too.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).absolute().parents[1]
SCRIPT = ROOT / "scripts" / "test.sh"

STUB = """#!/usr/bin/env bash
echo "{name} $*" >> "$STUB_LOG"
if [[ "{name}" == python && "$1 $2" == "-m pytest" ]]; then exit "$PYTEST_STATUS"; fi
if [[ "{name}" == sudo ]]; then shift; exec "$@"; fi
exit 0
"""


def run_script(tmp_path: Path, *args: str, chromium: Path, pytest_status: int = 0, **env: str):
    """Run scripts/test.sh with stubbed tools; returns (completed process, logged commands)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python", "apt-get", "sudo"):
        stub = bin_dir / name
        stub.write_text(STUB.replace("{name}", name))
        stub.chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    environ = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "STUB_LOG": str(log),
        "PYTEST_STATUS": str(pytest_status),
        "CAM_EXPLORER_CHROMIUM": str(chromium),
        "CI": "true",
        **env,
    }
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, log.read_text().splitlines()


def test_test_command_installs_missing_chromium_then_dev_requirements_then_runs_pytest(tmp_path):
    proc, calls = run_script(tmp_path, "-q", "tests/test_cli.py", chromium=tmp_path / "none")
    assert proc.returncode == 0, proc.stderr
    apt = [c for c in calls if "apt-get" in c]
    assert any(c.endswith("apt-get update -qq") for c in apt)
    assert any(re.search(r"apt-get install -y -qq chromium$", c) for c in apt)
    pip = calls.index(
        "python -m pip install -q --disable-pip-version-check --root-user-action=ignore "
        "-r requirements-dev.txt"
    )
    pytest_call = calls.index("python -m pytest -q tests/test_cli.py")
    assert max(calls.index(c) for c in apt) < pip < pytest_call


def test_test_command_leaves_an_installed_chromium_alone(tmp_path):
    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    proc, calls = run_script(tmp_path, chromium=chromium)
    assert proc.returncode == 0, proc.stderr
    assert not [c for c in calls if "apt-get" in c]
    assert calls[-1] == "python -m pytest"


@pytest.mark.parametrize("status", [1, 5])
def test_test_command_exits_with_pytests_status(tmp_path, status):
    proc, calls = run_script(tmp_path, chromium=tmp_path / "none", pytest_status=status)
    assert proc.returncode == status
    assert calls[-1] == "python -m pytest"


def test_test_command_skips_the_browser_install_when_browser_tests_are_skipped(tmp_path):
    proc, calls = run_script(tmp_path, chromium=tmp_path / "none", CAM_EXPLORER_SKIP_BROWSER="1")
    assert proc.returncode == 0, proc.stderr
    assert not [c for c in calls if "apt-get" in c]


def test_ci_runs_the_readmes_test_command_and_installs_nothing_else():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("Run the whole test suite", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()
    assert command == "scripts/test.sh"
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert command in ci
    assert not [line for line in ci if re.search(r"\b(pip|apt-get|apt|curl|wget)\b", line)]
    assert ci[ci.index(command) + 1 :] == ["ruff check .", "ruff format --check ."]
    assert os.access(SCRIPT, os.X_OK) and os.access(ROOT / ".ci" / "run", os.X_OK)
