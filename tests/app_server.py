"""`streamlit run app.py` on a free port, and Chromium's launch flags: shared by the browser
tests and ``bench/app_speed.py``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).absolute().parents[1]
# Debian's Chromium (scripts/test.sh installs it when missing); CAM_EXPLORER_CHROMIUM picks another.
CHROMIUM = Path(os.environ.get("CAM_EXPLORER_CHROMIUM", "/usr/bin/chromium"))
# No sandbox as root; no background traffic (the network is closed, Chromium retries forever).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_server(timeout_s: float = 120) -> Iterator[str]:
    """Start the app; yield its URL once it serves; always stop it.

    Raises:
        RuntimeError: the server did not start within ``timeout_s`` (its last output attached).
    """
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = threading.Event()
    log: list[str] = []

    def read() -> None:
        # Streamlit prints the URL once its server listens; the event replaces any polling.
        for line in proc.stdout:
            log.append(line)
            if "URL:" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(timeout_s) or proc.poll() is not None:
            raise RuntimeError("streamlit run did not start:\n" + "".join(log[-40:]))
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
