"""What every page shares: the model picker, cached resources, decoding of uploads.

Streamlit specifics only; the logic lives in ``cam_core`` (``cam_core.session``,
``cam_core.export``). The loaded model and its lock are one ``st.cache_resource`` per model
name, shared by every browser session; a model with an uploaded checkpoint is one more, per
(model name, checkpoint content), and each session keeps the last one it loaded successfully.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import streamlit as st

from cam_core import CamError, Explainer, ModelLoadError, sources
from cam_core.checkpoint import CheckpointReport
from cam_core.session import (
    Decoded,
    ModelCaches,
    ResultCache,
    bytes_digest,
    check_upload_size,
    decode_input,
    list_samples,
)
from pages.ui import upload_fix

__all__ = [
    "DEMO_MODEL",
    "MODEL_KEY",
    "Checkpointed",
    "checkpoint_uploader",
    "checkpointed",
    "load_checkpointed",
    "current_explainer",
    "decode_once",
    "current_model",
    "layer_tree",
    "load_model",
    "model_names",
    "model_notice",
    "model_picker",
    "first_model",
    "returned_to_page",
    "track_page",
    "page_style",
    "result_cache",
    "sample_image",
    "sample_sets",
    "upload_limit_mb",
]

upload_fix.install()  # before any session clears its queue; see the module

DEMO_MODEL = "demo"
MODEL_KEY = "model"
#: Per-file limit re-checked in code: `server.maxUploadSize` (config.toml) is enforced by the
#: server for the whole request and a widget's own limit only by the browser.
DEFAULT_UPLOAD_LIMIT_MB = 20
#: Per-checkpoint limit, re-checked in code the same way: vgg16's float32 state_dict (528 MB),
#: the largest offered architecture, fits. config.toml's `server.maxUploadSize` is raised to
#: match; image uploads keep their own 20 MB limit.
CHECKPOINT_LIMIT_MB = 600
CHECKPOINT_TYPES = ["pt", "pth", "ckpt", "bin"]
CHECKPOINT_HELP = (
    "Weights for this model's architecture, saved with "
    "`torch.save(model.state_dict(), 'weights.pt')` (a dict nested under `state_dict` or "
    "`model`, and a `module.` prefix, are fine). Whole pickled models are refused: they could "
    "run code. Nothing else about the model changes; remove the file to go back."
)


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
    spec = _spec(name)
    if name == DEMO_MODEL:
        from cam_core import demo

        return demo.load_explainer()
    return spec.build_explainer()


def _spec(name: str) -> sources.ModelSpec:
    models = _available_models()
    if name not in models:
        raise ModelLoadError(f"Unknown model {name!r}; this server offers {', '.join(models)}.")
    spec = models[name]
    if isinstance(spec, CamError):
        raise spec
    return spec


@dataclass(frozen=True)
class Checkpointed:
    """A model with an uploaded checkpoint, as one session uses it."""

    file_id: str
    file_name: str
    explainer: Explainer
    report: CheckpointReport


# Few entries: each holds a whole model (vgg16: 528 MB). A session keeps its own model alive
# (see `checkpoint_uploader`) after an eviction, so eviction never swaps a session's weights.
@st.cache_resource(show_spinner="Loading the checkpoint…", max_entries=4)
def load_checkpointed(name: str, digest: str, _source: Any) -> tuple[Explainer, CheckpointReport]:
    """A fresh Explainer of model ``name`` with the checkpoint ``_source`` (bytes or a binary
    file) loaded, shared by all sessions; ``digest`` (its :func:`bytes_digest`) keys the cache.

    Raises:
        CamError: the checkpoint was refused (see ``cam_core.load_checkpoint``; not cached).
    """
    spec = _spec(name)
    model, report = spec.load_model(_source)
    return spec.explainer_for(model), report


def _checkpoint_key(name: str) -> str:
    return f"checkpoint:{name}"


def checkpointed(name: str) -> Checkpointed | None:
    """The checkpoint this session loaded for model ``name``, if any."""
    return st.session_state.get(_checkpoint_key(name))


def checkpoint_uploader(name: str) -> None:
    """Sidebar uploader of a state_dict for model ``name``.

    A good file makes this session use a fresh model with those weights; a refused one shows
    why, and the model in use (base weights or the last good checkpoint) stays. Removing the
    file goes back to the base model.
    """
    limit = upload_limit_mb(CHECKPOINT_LIMIT_MB)
    key = f"checkpoint_upload:{name}"
    loaded = checkpointed(name)
    # In a closed panel unless a file is in it: the sidebar's settings stay above the fold.
    sidebar = st.sidebar.expander(
        f"Checkpoint: `{loaded.file_name}`" if loaded else "Checkpoint: base weights",
        expanded=st.session_state.get(key) is not None,
        icon=":material/upload_file:",
    )
    upload = sidebar.file_uploader(
        "State_dict (.pt, .pth, .ckpt, .bin)",
        type=CHECKPOINT_TYPES,
        key=key,
        help=CHECKPOINT_HELP,
        max_upload_size=max(1, math.ceil(limit)),  # the browser's check; ours is below
    )
    sidebar.caption(f"Up to {limit:g} MB per file · {', '.join(CHECKPOINT_TYPES).upper()}")
    state_key, failed_key = _checkpoint_key(name), f"checkpoint_failed:{name}"
    # Another model's uploader is gone (Streamlit drops unrendered widgets): so is its model.
    for key in [
        k for k in st.session_state if str(k).startswith(("checkpoint:", "checkpoint_failed:"))
    ]:
        if key not in (state_key, failed_key):
            del st.session_state[key]
    if upload is None:
        st.session_state.pop(state_key, None)
        st.session_state.pop(failed_key, None)
        return
    current: Checkpointed | None = st.session_state.get(state_key)
    failed = st.session_state.get(failed_key)
    if current is None or current.file_id != upload.file_id:
        if failed is None or failed[0] != upload.file_id:
            # A new file: loaded (or refused) once, not on every rerun.
            failed = None
            try:
                check_upload_size(
                    upload.name,
                    upload.size,
                    limit,
                    modality=None,
                    hint="Upload the state_dict alone (no optimizer state), or save it in half "
                    "precision: `{k: v.half() for k, v in model.state_dict().items()}`.",
                )
                explainer, report = load_checkpointed(
                    name, bytes_digest(upload.getbuffer()), upload
                )
            except CamError as exc:
                failed = (upload.file_id, str(exc))
            else:
                # The report names this upload, even when another session's file was cached.
                report = replace(report, source=upload.name)
                current = Checkpointed(upload.file_id, upload.name, explainer, report)
                st.session_state[state_key] = current
        if failed is not None:
            st.session_state[failed_key] = failed
            sidebar.error(failed[1], icon=":material/block:")
            using = f"the checkpoint **{current.file_name}**" if current else "the base weights"
            sidebar.caption(f"Still using {using}.")
            return
    st.session_state.pop(failed_key, None)
    report = current.report
    sidebar.success(_report_line(report), icon=":material/check_circle:")


def _report_line(report: CheckpointReport) -> str:
    """One sentence on what a checkpoint load did (tensors, nested key, stripped prefix)."""
    text = str(report)
    return text[:1].upper() + text[1:] + "."


def model_notice(name: str) -> str | None:
    """A line to show with the model (e.g. "random weights"), if its spec has one; none once
    this session loaded a checkpoint for it."""
    spec = _available_models().get(name)
    notice_for = getattr(spec, "notice_for", None)
    if notice_for is None:
        return None
    loaded = checkpointed(name)
    return notice_for(loaded.report if loaded is not None else None)


@st.cache_resource(show_spinner=False)
def _model_caches() -> ModelCaches:
    return ModelCaches(max_entries=16)


def result_cache(explainer: Explainer) -> ResultCache:
    """CAM results of this model, shared by all sessions, keyed by content (see
    ``cam_core.session.cam_key``); dropped when the model is."""
    return _model_caches().for_model(explainer)


@st.cache_resource(show_spinner="Tracing the model's layers…")
def _base_layer_tree(name: str) -> list:
    return load_model(name).layer_tree()


def layer_tree(name: str, inputs: dict[str, list] | None = None) -> list:
    """The layer tree of the model this session uses, computed once per model (a checkpoint
    may change output shapes: another number of classes).

    Args:
        inputs: example images per modality, for a model with an input of no fixed size (its
            layers' shapes follow the images; the Explainer keeps one tree per input size).
            ``None``: traced on zeros of each modality's size.
    """
    loaded = checkpointed(name)
    if loaded is None and inputs is None:
        return _base_layer_tree(name)
    explainer = loaded.explainer if loaded is not None else load_model(name)
    with st.spinner("Tracing the model's layers…"):
        return explainer.layer_tree(inputs)  # the Explainer keeps its own trees


def first_model() -> str:
    """The model a session opens on: the first spec file given (``--spec`` or
    ``CAM_EXPLORER_SPEC``), else the demo."""
    given = sources.spec_paths_from(sys.argv[1:], os.environ)
    names = model_names()
    specs = [n for n in names[1 : 1 + len(given)] if n not in sources.TORCHVISION_MODELS]
    return specs[0] if specs else names[0]


def model_picker() -> str:
    """Sidebar select box of the available models (in the URL: ``?model=...``), and the
    checkpoint uploader in a panel under it; returns the chosen name."""
    names = model_names()
    if st.session_state.get(MODEL_KEY) not in names:
        st.session_state[MODEL_KEY] = first_model()
    name = st.sidebar.selectbox(
        "Model",
        names,
        key=MODEL_KEY,
        bind="query-params",
        help="Add your own with `--spec` (see About).",
    )
    if not isinstance(_available_models().get(name), CamError):
        checkpoint_uploader(name)
    return name


#: The browser's own per-file line in a drop zone ("1GB per file" for our 600 MB: it rounds to
#: whole units) is hidden; each uploader states its real limit in a caption under it.
_STYLE = """<style>
[data-testid="stFileUploaderDropzoneInstructions"] { display: none; }
</style>"""
#: Below this width (px) the sidebar starts closed, once per browser tab: open, it would cover
#: half of the overlays. Streamlit's own rule only closes it below 768 px.
NARROW_PX = 1000
_NARROW_SIDEBAR = f"""<script>
(() => {{
  const doc = window.parent ? window.parent.document : document;
  if (window.innerWidth >= {NARROW_PX} || sessionStorage.getItem("cam-sidebar-closed")) return;
  sessionStorage.setItem("cam-sidebar-closed", "1");
  const close = (tries) => {{
    const button = doc.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (button) {{ button.click(); return; }}
    if (tries > 0) requestAnimationFrame(() => close(tries - 1));
  }};
  close(600);
}})();
</script>"""


def page_style() -> None:
    """What every page needs on the browser side: the upload style, a closed sidebar on
    narrow screens. Nothing is loaded from outside."""
    st.html(_STYLE)
    st.html(_NARROW_SIDEBAR, unsafe_allow_javascript=True)


def track_page(page: str) -> None:
    """Note the page this run shows (app.py calls it on every run): see :func:`returned_to_page`."""
    previous = st.session_state.get("page")
    st.session_state["page"] = page
    st.session_state["page_changed"] = previous is not None and previous != page


def returned_to_page() -> bool:
    """Whether this run is the first on this page after another page was shown."""
    return bool(st.session_state.get("page_changed"))


def current_model() -> str:
    """Name of the model chosen in the sidebar (the demo until one is chosen)."""
    return st.session_state.get(MODEL_KEY) or DEMO_MODEL


def current_explainer() -> Explainer:
    """The Explainer of the chosen model (cached), with this session's checkpoint if one is
    loaded; on failure, the error and a stop."""
    name = current_model()
    loaded = checkpointed(name)
    if loaded is not None:
        return loaded.explainer
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


def decode_once(memo_key: str, upload: Any, channels: int, modality: str) -> Decoded:
    """An uploaded file decoded once per session: the ``Decoded`` is kept in
    ``st.session_state[memo_key]`` by (upload id, channels), so a rerun (a slider move) neither
    decodes nor hashes it again. Only the files of the latest call per modality are kept."""
    memo: dict[str, tuple[tuple, Decoded]] = st.session_state.setdefault(memo_key, {})
    key = (upload.file_id, channels)
    kept = memo.get(modality)
    if kept is None or kept[0] != key:
        decoded = decode_input(
            upload.getvalue(),
            upload.name,
            channels=channels,
            limit_mb=upload_limit_mb(),
            modality=modality,
        )
        memo[modality] = kept = (key, decoded)
    return kept[1]


def upload_limit_mb(cap: float = DEFAULT_UPLOAD_LIMIT_MB) -> float:
    """Per-file upload limit in MB: the server's limit, capped by ours (images by default,
    ``CHECKPOINT_LIMIT_MB`` for checkpoints)."""
    server = st.get_option("server.maxUploadSize")
    return float(min(server, cap)) if server else float(cap)
