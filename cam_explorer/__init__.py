"""The ``cam-explorer`` command: starts the Streamlit app (``app.py`` + ``pages/``).

The app's files are not a Python package of their own: a wheel ships them inside this package
as ``cam_explorer/app/`` (``app.py``, ``pages/``, ``.streamlit/config.toml``); a source checkout
or an editable install (``pip install -e .``) runs the repository's own ``app.py``.
See :mod:`cam_explorer.launcher`.
"""

from __future__ import annotations

from .launcher import app_path, main, streamlit_command

__all__ = ["app_path", "main", "streamlit_command"]
