"""Start the app: ``cam-explorer [--spec FILE]... [--server.port 8502 ...]``.

``cam-explorer --spec my_spec.py`` runs ``python -m streamlit run <app.py> -- --spec my_spec.py``:
Streamlit's own dotted options (``--server.port 8502``, ``--server.address=0.0.0.0``) go to
Streamlit, everything else to the app, which reads ``--spec`` (see
:func:`cam_core.sources.spec_paths_from`).  ``CAM_EXPLORER_SPEC`` works as with
``streamlit run``.  The app's ``.streamlit/config.toml`` sits next to ``app.py`` and Streamlit
reads it from there (script-level config), whatever the working directory.

Streamlit is not imported here: the command replaces this process with Streamlit's, so
signals (Ctrl-C, SIGTERM) reach the server directly.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["app_path", "main", "streamlit_command"]

_HERE = Path(__file__).absolute().parent
# Streamlit's config options are all "section.name" (server.port, theme.base, ...).
_STREAMLIT_OPTION = re.compile(r"^--[a-zA-Z]+\.[a-zA-Z.]+(=.*)?$")


def app_path() -> Path:
    """The app's entry point: the copy installed with this package, else the checkout's.

    Raises:
        FileNotFoundError: neither exists (a broken install).
    """
    for candidate in (_HERE / "app" / "app.py", _HERE.parent / "app.py"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"CAM Explorer's app.py is neither in {_HERE / 'app'} (installed) nor in {_HERE.parent} "
        "(source checkout): reinstall with `pip install cam-explorer` or `pip install .`."
    )


def streamlit_command(argv: Sequence[str]) -> list[str]:
    """The command line that runs the app with ``argv`` (this command's arguments).

    ``["--spec", "a.py", "--server.port", "8502"]`` becomes
    ``[python, "-m", "streamlit", "run", app.py, "--server.port", "8502", "--", "--spec", "a.py"]``.
    """
    streamlit_args: list[str] = []
    app_args: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # everything after a bare "--" is the app's
            app_args.extend(args[i + 1 :])
            break
        if _STREAMLIT_OPTION.match(arg):
            streamlit_args.append(arg)
            if "=" not in arg and i + 1 < len(args):
                streamlit_args.append(args[i + 1])
                i += 1
        else:
            app_args.append(arg)
        i += 1
    command = [sys.executable, "-m", "streamlit", "run", str(app_path()), *streamlit_args]
    return [*command, "--", *app_args] if app_args else command


def main(argv: Sequence[str] | None = None) -> int:
    """Replace this process with Streamlit running the app; returns only on ``--help``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n", 1)[0])
        print(
            "\nOptions: --spec FILE (repeatable; also CAM_EXPLORER_SPEC), any Streamlit option "
            "such as --server.port 8502.\nRuns: streamlit run "
            f"{app_path()} [streamlit options] -- [app options]"
        )
        return 0
    command = streamlit_command(args)
    os.execv(command[0], command)
    return 0  # not reached
