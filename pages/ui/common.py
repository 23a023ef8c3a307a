"""What every page shares: the model picker, cached resources, decoding of uploads.

Streamlit specifics only; the logic lives in ``cam_core`` (``cam_core.session``,
``cam_core.export``). The loaded model and its lock are one ``st.cache_resource`` per model
name, shared by every browser session.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import streamlit as st

from cam_core import CamError, Explainer, ModelLoadError, sources
from cam_core.session import Decoded, ModelCaches, ResultCache, decode_input, list_samples

__all__ = [
    "DEMO_MODEL",
    "MODEL_KEY",
    "current_explainer",
    "current_model",
    "layer_tree",
    "load_model",
    "model_names",
    "model_notice",
    "model_picker",
    "result_cache",
    "sample_image",
    "sample_sets",
    "upload_limit_mb",
]

DEMO_MODEL = "demo"
MODEL_KEY = "model"
#: Per-file limit re-checked in code: `server.maxUploadSize` (config.toml) is enforced by the
#: server for the whole request and a widget's own limit only by the browser.
DEFAULT_UPLOAD_LIMIT_MB = 20


@st.cache_resource(show_spinner=False)
def _available_models() -> dict[str, Any]:
    """Model name -> its ``ModelSpec`` (or the ``SpecError`` that prevents loading it): the demo,
    spec files named on the command line (``streamlit run app.py -- --spec my_spec.py``) or in
    ``CAM_EXPLORER_SPEC``, and the torchvision architectures. Read once per server process."""
    paths = sources.spec_paths_from(sys.argv[1:], os.environ)
    return {DEMO_MODEL: None, **sources.available_models(paths)}


def model_names() -> list[str]:
    """Names of the models this server offers, the demo first."""
    return list(_available_models())


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def load_model(name: str) -> Explainer:
    """The Explainer of model ``name``, built once per server process and shared by all
    sessions (it holds the model's lock, so sessions never mix activations).

    Raises:
        CamError: the model's spec or checkpoint cannot be loaded (not cached: retried).
    """
    models = _available_models()
    if name not in models:
        raise ModelLoadError(f"Unknown model {name!r}; this server offers {', '.join(models)}.")
    spec = models[name]
    if isinstance(spec, CamError):
        raise spec
    if name == DEMO_MODEL:
        from cam_core import demo

        return demo.load_explainer()
    return spec.build_explainer()


def model_notice(name: str) -> str | None:
    """A line to show with the model (e.g. "random weights"), if its spec has one."""
    spec = _available_models().get(name)
    notice_for = getattr(spec, "notice_for", None)
    return notice_for() if notice_for is not None else None


@st.cache_resource(show_spinner=False)
def _model_caches() -> ModelCaches:
    return ModelCaches(max_entries=16)


def result_cache(explainer: Explainer) -> ResultCache:
    """CAM results of this model, shared by all sessions, keyed by content (see
    ``cam_core.session.cam_key``); dropped when the model is."""
    return _model_caches().for_model(explainer)


@st.cache_resource(show_spinner="Tracing the model's layers…")
def layer_tree(name: str) -> list:
    """The model's layer tree (one forward on dummy inputs), computed once per model."""
    return load_model(name).layer_tree()


def model_picker() -> str:
    """Sidebar select box of the available models; returns the chosen name."""
    names = model_names()
    if st.session_state.get(MODEL_KEY) not in names:
        st.session_state[MODEL_KEY] = names[0]
    return st.sidebar.selectbox(
        "Model", names, key=MODEL_KEY, help="Add your own with `--spec` (see About)."
    )


def current_model() -> str:
    """Name of the model chosen in the sidebar (the demo until one is chosen)."""
    return st.session_state.get(MODEL_KEY) or DEMO_MODEL


def current_explainer() -> Explainer:
    """The Explainer of the chosen model (cached); on failure, the error and a stop."""
    name = current_model()
    try:
        return load_model(name)
    except CamError as exc:
        st.error(f"Model **{name}** could not be loaded: {exc}", icon=":material/block:")
        st.stop()


@st.cache_resource(show_spinner=False, max_entries=256)
def sample_image(path: Path, channels: int) -> Decoded:
    """A bundled sample file, decoded once per server process (samples never change)."""
    return decode_input(
        path.read_bytes(),
        f"{path.parent.name}/{path.name}",
        channels=channels,
        limit_mb=float("inf"),
        modality=path.stem,
    )


def sample_sets(name: str) -> dict[str, dict[str, Path]]:
    """Bundled sample sets of model ``name``: ``{sample: {modality: path}}``."""
    if name != DEMO_MODEL:
        return {}
    from cam_core import demo

    modalities = [m.name for m in load_model(name).modalities]
    return list_samples(getattr(demo, "SAMPLES_DIR", None), modalities)


def upload_limit_mb() -> float:
    """Per-file upload limit in MB: the server's limit, capped by ours."""
    server = st.get_option("server.maxUploadSize")
    return float(min(server, DEFAULT_UPLOAD_LIMIT_MB)) if server else DEFAULT_UPLOAD_LIMIT_MB
