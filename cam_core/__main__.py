"""``python -m cam_core``: see :mod:`cam_core.cli`."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
