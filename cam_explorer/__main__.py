"""``python -m cam_explorer``: the same as the ``cam-explorer`` command."""

from __future__ import annotations

from .launcher import main

if __name__ == "__main__":
    raise SystemExit(main())
