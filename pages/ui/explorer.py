"""The explorer: inputs per modality, a layer, a method and target -> overlays side by side.

Thin: choices are gathered here, the work is ``cam_core``'s. A CAM is computed once per
(model, input content, layer, method, target, options) and cached; colormap and image_weight
only re-blend the cached CAM.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from cam_core import CamError, InputError, LayerError, export
from cam_core.errors import MethodError, TargetError
from cam_core.layers import suggest_layer
from cam_core.overlay import COLORMAPS
from cam_core.session import (
    IMAGE_SUFFIXES,
    Decoded,
    cam_key,
    charge,
    decode_input,
    pair_batches,
    top_k,
)
from pages.ui import common

PREDICTED = "predicted"
SAMPLES_KEY = "samples"
LAYER_PARAM, BRANCHES_PARAM = "layer", "branches"
STOPPED_KEY = "stopped"
METHOD_KEY, TARGET_KEY = "method", "target"
COLORMAP_KEY, WEIGHT_KEY = "colormap", "image_weight"
#: Height of the layer table (px): about ten rows.
TABLE_HEIGHT = 390


@dataclass
class Batch:
    """The inputs of one explain call (images, file names, content hashes), or why not."""

    images: dict[str, list[np.ndarray]] | None = None
    names: dict[str, list[str]] = field(default_factory=dict)
    digests: dict[str, list[str]] = field(default_factory=dict)
    problem: str | None = None
    samples: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, files: dict[str, list[Decoded]], samples: Sequence[str] = ()) -> Batch:
        return cls(
            images={n: [f.image for f in fs] for n, fs in files.items()},
            names={n: [f.name for f in fs] for n, fs in files.items()},
            digests={n: [f.digest for f in fs] for n, fs in files.items()},
            samples=list(samples),
        )


def render() -> None:
    """The explorer page: overlays first; inputs and layer in collapsible panels above them,
    method, target and display settings in the sidebar."""
    model = common.current_model()
    explainer = common.current_explainer()
    loaded = common.checkpointed(model)
    st.title("CAM Explorer", anchor=False)
    st.caption(
        f"Model **{model}**"
        + (f" (checkpoint `{loaded.file_name}`)" if loaded else "")
        + " · inputs: "
        + ", ".join(f"`{m.name}`" for m in explainer.modalities)
        + " · where does the model look, per modality, layer, method and class?"
    )

    notice = common.model_notice(model)
    if notice:
        st.warning(notice, icon=":material/warning:")

    slots: dict[str, Any] = {}
    method, target, options, cam_slot = _cam_controls(model, explainer)
    colormap, image_weight, show_originals = _view_controls()
    batch = _inputs_section(model, explainer, slots)
    layer, layer_slot = _layer_section(model, explainer, batch)
    status = st.empty()  # progress and the stop button: right above the overlays
    _settings_loader(model)

    result, key = None, None
    if batch.images is not None and layer is not None:
        result, key = _compute(
            model, explainer, batch, layer, method, target, options, slots, layer_slot, cam_slot,
            status,
        )  # fmt: skip
    last = st.session_state.get(f"last:{model}")
    if result is not None:
        st.session_state[f"last:{model}"] = last = {
            "key": key,
            "result": result,
            "names": batch.names,
            "target": target,
            "samples": batch.samples,
            "contributions": _contributions(explainer, batch, result.targets),
        }
    elif last is not None:
        idle = batch.images is None and batch.problem is None
        why = "no inputs are chosen" if idle else "fix the problem above to update it"
        status.info(f"Showing the previous result: {why}.", icon=":material/history:")
    if last is None:
        if batch.problem is None and batch.images is None:
            status.info("Upload one image per modality above to see where the model looks.")
        return
    _show_result(model, last, colormap, image_weight, show_originals)


# --------------------------------------------------------------------------------------- inputs
def _inputs_section(model: str, explainer: Any, slots: dict[str, Any]) -> Batch:
    """One uploader per modality (several files = a batch); the bundled samples otherwise.

    In a panel that is open until inputs are chosen. Uploads survive a visit to another page:
    Streamlit drops a file uploader's files when its page is left, so the decoded files are
    kept in the session and used again, with a note and a button to forget them.
    """
    modalities = explainer.modalities
    samples = common.sample_sets(model)
    limit = common.upload_limit_mb()
    # Decoded files of this session by upload id: a rerun (a slider move) neither decodes nor
    # hashes an image again.
    memo: dict[tuple, Decoded] = st.session_state.setdefault(f"decoded:{model}", {})
    kept: dict[str, list[Decoded]] = st.session_state.setdefault(f"kept:{model}", {})
    returned = common.returned_to_page()
    used: set[tuple] = set()
    spent = 0  # bytes of this session's decoded uploads, in upload order
    uploads: dict[str, list[Decoded]] = {}
    failed = False
    summary = _inputs_summary(model, modalities, samples, kept)
    # Open until every modality has its inputs; then closed, its label saying what is shown
    # (a new label is a new panel: it closes once the last modality is given).
    with st.expander(
        f"Inputs · {summary}" if summary else "Inputs: choose one image per modality",
        expanded=summary is None,
        icon=":material/image:",
    ):
        if samples:
            # Uploads take over from the samples; say so instead of showing a stale choice.
            uploading = any(
                st.session_state.get(f"upload:{model}:{m.name}") or kept.get(m.name)
                for m in modalities
            )
            if SAMPLES_KEY not in st.session_state:
                st.session_state[SAMPLES_KEY] = list(samples)[:1]
            st.multiselect(
                "Bundled samples (used while nothing is uploaded)",
                list(samples),
                key=SAMPLES_KEY,
                disabled=uploading,
                bind="query-params",
                help="Remove your uploads to explain the bundled samples again."
                if uploading
                else "Each sample is one image per modality; several make a batch.",
            )
        columns = st.columns(len(modalities))
        for column, modality in zip(columns, modalities):
            with column:
                widget = f"upload:{model}:{modality.name}"
                files = st.file_uploader(
                    _uploader_label(modality),
                    type=list(IMAGE_SUFFIXES),
                    accept_multiple_files=True,
                    key=widget,
                    help=(modality.description or None),
                    # The browser refuses bigger files with a tooltip only: let them through
                    # to the server's limit, and refuse them here, visibly (below).
                    max_upload_size=int(common.upload_limit_mb(float("inf"))),
                )
                st.caption(f"Up to {limit:g} MB per file · {', '.join(IMAGE_SUFFIXES).upper()}")
                if not modality.aligned:
                    st.caption(
                        "Not spatially aligned: its heatmap marks positions in this "
                        "representation, not places in the scene."
                    )
                slots[modality.name] = st.container()
                uploads[modality.name] = []
                if not files and kept.get(modality.name) and returned:
                    st.session_state[f"restored:{widget}"] = True
                if files or not st.session_state.get(f"restored:{widget}"):
                    st.session_state.pop(f"restored:{widget}", None)
                    kept.pop(modality.name, None)
                else:
                    uploads[modality.name] = list(kept[modality.name])
                    st.caption(
                        "Kept from before: " + ", ".join(f"`{d.name}`" for d in kept[modality.name])
                    )
                    st.button(
                        "Forget these",
                        key=f"forget:{widget}",
                        on_click=_forget,
                        args=(model, modality.name),
                        type="tertiary",
                        icon=":material/close:",
                    )
                    continue
                for upload in files or []:
                    key = (upload.file_id, modality.channels)
                    used.add(key)
                    if key not in memo:
                        memo[key] = decode_input(
                            upload.getvalue(),
                            upload.name,
                            channels=modality.channels,
                            limit_mb=limit,
                            modality=modality.name,
                        )
                    # Bounded in bytes per session: a file over the budget keeps only its error.
                    memo[key], spent = charge(memo[key], spent)
                    decoded = memo[key]
                    if decoded.error:
                        slots[modality.name].error(
                            f"**{decoded.name}**: {decoded.error}", icon=":material/block:"
                        )
                        failed = True
                        continue
                    for note in decoded.notes:
                        slots[modality.name].caption(f"{decoded.name}: {note}")
                    uploads[modality.name].append(decoded)
                if files and not failed:
                    kept[modality.name] = list(uploads[modality.name])
    for key in set(memo) - used:  # removed uploads: free their pixels
        del memo[key]

    if failed:
        return Batch(problem="upload")
    if not any(uploads.values()):
        return _sample_batch(model, explainer, samples)
    try:
        paired = pair_batches(uploads, [m.name for m in modalities])
    except InputError as exc:
        if exc.modality in slots:
            slots[exc.modality].warning(str(exc), icon=":material/warning:")
        else:
            st.error(str(exc), icon=":material/block:")
        return Batch(problem="pairing")
    return Batch.of(paired)


def _forget(model: str, modality: str) -> None:
    st.session_state.get(f"kept:{model}", {}).pop(modality, None)
    st.session_state.pop(f"restored:upload:{model}:{modality}", None)


def _inputs_summary(
    model: str, modalities: Sequence[Any], samples: dict, kept: dict[str, list[Decoded]]
) -> str | None:
    """The collapsed inputs panel's label: what is explained now, or None (nothing yet)."""
    counts = {
        len(st.session_state.get(f"upload:{model}:{m.name}") or kept.get(m.name) or [])
        for m in modalities
    }
    if counts != {0}:  # uploads: complete ones only, or the panel would close mid-way
        files = counts.pop() if len(counts) == 1 else 0
        return f"{files} upload{'s' if files > 1 else ''} per modality · change" if files else None
    chosen = [s for s in st.session_state.get(SAMPLES_KEY, list(samples)[:1]) if s in samples]
    if chosen:
        return "sample " + ", ".join(f"`{s}`" for s in chosen) + " · upload your own"
    return None


def _uploader_label(modality: Any) -> str:
    size = "any size" if modality.size is None else f"{modality.size[0]}×{modality.size[1]} px"
    channels = {1: "grayscale", 3: "RGB"}.get(modality.channels, f"{modality.channels} channels")
    return f"**{modality.name}** · {channels} · {size}"


def _sample_batch(model: str, explainer: Any, samples: dict[str, dict]) -> Batch:
    chosen = [s for s in st.session_state.get(SAMPLES_KEY, []) if s in samples]
    if not chosen:
        return Batch()
    files = {
        m.name: [common.sample_image(samples[s][m.name], m.channels) for s in chosen]
        for m in explainer.modalities
    }
    broken = [f for fs in files.values() for f in fs if f.error]
    if broken:
        st.error(f"Bundled sample {broken[0].name}: {broken[0].error}", icon=":material/block:")
        return Batch(problem="sample")
    return Batch.of(files, chosen)


# ---------------------------------------------------------------------------------------- layer
def _layer_section(model: str, explainer: Any, batch: Batch) -> tuple[str | None, Any]:
    """The layer tree as a table in a panel: click a row to take the CAM there (the panel then
    closes); rows that cannot be a CAM target are listed with the reason but refused.

    A model with an input of no fixed size is traced on the first inputs. Returns (layer path,
    slot for layer errors).
    """
    sizeless = [m.name for m in explainer.modalities if m.size is None]
    if sizeless and batch.images is None:
        st.info(
            "The layers are listed once every input has an image: "
            + ", ".join(f"`{n}`" for n in sizeless)
            + (" takes" if len(sizeless) == 1 else " take")
            + " images of any size, and the layers' shapes follow from them.",
            icon=":material/account_tree:",
        )
        return None, st.container()
    try:
        tree = common.layer_tree(model, batch.images if sizeless else None)
    except CamError as exc:
        st.error(f"The model's layers could not be listed: {exc}", icon=":material/block:")
        return None, st.container()
    by_path = {info.path: info for info in tree}
    layer_key, notice_key = f"layer:{model}", f"layer_notice:{model}"
    if st.session_state.get(layer_key) not in by_path:
        asked = st.query_params.get(LAYER_PARAM)
        if asked in by_path and by_path[asked].ready:  # a link names one layer for all
            st.session_state[layer_key] = asked
            st.session_state[f"layer_mode_next:{model}"] = ONE_LAYER
        else:
            st.session_state[layer_key] = suggest_layer(tree, explainer.default_layer)
    branches = _branch_mode(model, explainer)
    current = st.session_state[layer_key]
    if current is not None:  # a link to this page reproduces the view
        st.query_params[LAYER_PARAM] = BRANCHES_PARAM if branches else current
    info = by_path.get(current)
    label = (
        ("One layer for all (not in use): " if branches else "Layer ")
        + f"`{current}`"
        + (f" · {info.type} · {_shape(info.output_shape)}" if info else "")
    )
    # Closed on start; the label names the layer, so a pick makes a new, closed panel and the
    # overlays move up again (a refused pick keeps it open, with the reason).
    panel = st.expander(label, icon=":material/account_tree:")
    layer_slot = st.container()
    notice = st.session_state.pop(notice_key, None)
    if notice:
        layer_slot.warning(notice, icon=":material/do_not_disturb_on:")
    with panel:
        query = (
            st.text_input(
                "Filter layers",
                key=f"layer_filter:{model}",
                placeholder="part of a name or type: conv, fusion, attn…",
            )
            .strip()
            .lower()
        )
        rows = [i for i in tree if not query or query in i.path.lower() or query in i.type.lower()]
        position = next((n for n, i in enumerate(rows) if i.path == current), None)
        # A key of plain characters: it is also the table's CSS class (see _scroll_table_to).
        digest = hashlib.blake2b(f"{model}\0{query}".encode(), digest_size=6).hexdigest()
        generation = st.session_state.get(f"layer_gen:{model}", 0)
        table_key = f"layer_table-{digest}-{generation}"
        event = st.dataframe(
            _layer_frame(rows, full_paths=bool(query)),
            key=table_key,
            on_select="rerun",
            selection_mode="single-row",
            selection_default=None if position is None else {"selection": {"rows": [position]}},
            hide_index=True,
            height=min(36 + 35 * len(rows), TABLE_HEIGHT),
            column_config={
                "layer": st.column_config.TextColumn("layer", width="medium"),
                "CAM target": st.column_config.CheckboxColumn("CAM target", width="small"),
                "params": st.column_config.NumberColumn("params", format="compact"),
            },
        )
        if position is not None:
            _scroll_table_to(table_key, position)
        st.caption(
            f"{len(rows)} of {len(tree)} layers · click a row to take the CAM there · "
            "unchecked rows cannot be a target (the note says why)"
        )
    picked = event.selection.rows if event is not None else []
    if picked and picked[0] < len(rows) and rows[picked[0]].path != current:
        _pick_layer(model, rows[picked[0]])
        st.rerun()  # the panel's label and state, the table and the cache key follow
    return (BRANCHES if branches else current), layer_slot


def _pick_layer(model: str, chosen: Any) -> None:
    """Take the picked layer, or say why the row cannot be a target."""
    # A new table (key) next time: its selection starts again at the current layer.
    st.session_state[f"layer_gen:{model}"] = st.session_state.get(f"layer_gen:{model}", 0) + 1
    if chosen.ready:
        st.session_state[f"layer:{model}"] = chosen.path
        st.session_state[f"layer_mode_next:{model}"] = ONE_LAYER
    else:
        st.session_state[f"layer_notice:{model}"] = (
            f"`{chosen.path}` ({chosen.type}) cannot be a CAM target: {chosen.reason}"
        )


def _scroll_table_to(table_key: str, row: int) -> None:
    """Scroll the layer table so that ``row`` (the current layer) is in view: the grid has no
    API for it, so a small script sets its scroller's position once the grid is drawn."""
    st.html(
        f"""<script>
        (() => {{
          const find = () => document.querySelector('.st-key-{table_key} .dvn-scroller');
          const go = (tries) => {{
            const el = find();
            if (el) {{ el.scrollTop = Math.max(0, {row} * 35 - 2 * 35); return; }}
            if (tries > 0) requestAnimationFrame(() => go(tries - 1));
          }};
          go(120);
        }})();
        </script>""",
        unsafe_allow_javascript=True,
    )


def _layer_frame(rows: Sequence[Any], full_paths: bool = False) -> pd.DataFrame:
    """One row per layer; the tree is drawn by indentation, or (filtered rows have lost their
    parents) by the full dotted path."""
    return pd.DataFrame(
        {
            "layer": [
                i.path if full_paths else "\u2003" * (i.depth - 1) + i.path.rsplit(".", 1)[-1]
                for i in rows
            ],
            "type": [i.type for i in rows],
            "output": [_shape(i.output_shape) for i in rows],
            "CAM target": [bool(i.ready) for i in rows],
            "note": [i.reason for i in rows],
            "path": [i.path for i in rows],
            "params": [int(i.params) for i in rows],
        }
    )


def _shape(shape: Sequence[int] | None) -> str:
    return "—" if not shape else "×".join(str(s) for s in shape)


# ----------------------------------------------------------------------------- method and target
def _cam_controls(model: str, explainer: Any) -> tuple[str, int | None, dict, Any]:
    """Sidebar: method, target class, advanced options. Method, target and the display
    settings live in the URL (a link reproduces the view) and survive page changes."""
    sidebar = st.sidebar
    methods = list(explainer.methods())
    infos = {name: explainer.method_info(name) for name in methods}
    if st.session_state.get(METHOD_KEY) not in methods:
        st.session_state[METHOD_KEY] = "gradcam" if "gradcam" in methods else methods[0]
    method = sidebar.selectbox(
        "Method",
        methods,
        key=METHOD_KEY,
        bind="query-params",
        format_func=lambda m: f"{m} (slow)" if infos[m].slow else m,
        help="Slow methods run the model once per channel or per position: minutes on a CPU.",
    )
    info = infos[method]
    sidebar.caption(f"Cost: {info.cost}." + (f" {info.notes}" if info.notes else ""))

    classes = list(explainer.classes or [])
    last = st.session_state.get(f"last:{model}")
    count = len(classes) or (last["result"].probabilities.shape[1] if last else 0)
    options: list[Any] = [PREDICTED, *range(count)]
    if st.session_state.get(TARGET_KEY) not in options:
        st.session_state[TARGET_KEY] = PREDICTED
    target = sidebar.selectbox(
        "Target class",
        options,
        key=TARGET_KEY,
        bind="query-params",
        format_func=lambda t: (
            "predicted class (per sample)"
            if t == PREDICTED
            else f"{t}: {classes[t]}"
            if t < len(classes)
            else f"class {t}"
        ),
        help="The class whose score the CAM explains. The most probable classes are shown "
        "per sample.",
    )
    cam_slot = sidebar.container()
    return method, (None if target == PREDICTED else int(target)), _advanced(), cam_slot


def _advanced() -> dict[str, bool]:
    with st.sidebar.expander("Advanced"):
        aug = st.checkbox(
            "aug_smooth",
            key="aug_smooth",
            persist_state="session",
            help="Average over flips and scales: smoother, ~6× slower.",
        )
        eigen = st.checkbox(
            "eigen_smooth",
            key="eigen_smooth",
            persist_state="session",
            help="First principal component of the weighted activations.",
        )
    return {"aug_smooth": aug, "eigen_smooth": eigen}


def _view_controls() -> tuple[str, float, bool]:
    """Sidebar: colormap, image weight, originals. Changing them only re-blends."""
    sidebar = st.sidebar
    names = list(COLORMAPS)
    st.session_state.setdefault(COLORMAP_KEY, "jet" if "jet" in names else names[0])
    st.session_state.setdefault(WEIGHT_KEY, 0.5)
    colormap = sidebar.selectbox("Colormap", names, key=COLORMAP_KEY, bind="query-params")
    weight = sidebar.slider(
        "image_weight",
        0.0,
        1.0,
        step=0.05,
        key=WEIGHT_KEY,
        bind="query-params",
        help="Share of the image in the blend: 0 = heatmap only.",
    )
    originals = sidebar.toggle("Show originals", key="show_originals", persist_state="session")
    return colormap, float(weight), originals


def _settings_loader(model: str) -> None:
    """Sidebar: load a downloaded ``settings.json`` back (model, layer, method, target, display
    settings, options, samples); the inputs stay as they are."""
    with st.sidebar.expander("Load settings", icon=":material/settings_backup_restore:"):
        st.file_uploader(
            "settings.json (in every downloaded ZIP)",
            type=["json"],
            key="settings_upload",
            on_change=_apply_settings,
        )
        problem = st.session_state.get("settings_problem")
        if problem:
            st.error(problem, icon=":material/block:")


def _apply_settings() -> None:
    """The settings file's callback: runs before the rerun, so every widget can take its value."""
    upload = st.session_state.get("settings_upload")
    st.session_state.pop("settings_problem", None)
    if upload is None:
        return
    try:
        view = export.read_settings(upload.getvalue(), upload.name)
    except CamError as exc:
        st.session_state["settings_problem"] = str(exc)
        return
    model = view.get("model", common.current_model())
    if model in common.model_names():
        st.session_state[common.MODEL_KEY] = model
    else:
        st.session_state["settings_problem"] = (
            f"{upload.name} is for model {model!r}, which this server does not offer; its other "
            "settings are applied to the current model."
        )
        model = common.current_model()
    if view.get("layer"):
        st.session_state[f"layer:{model}"] = view["layer"]
        st.session_state[f"layer_mode_next:{model}"] = ONE_LAYER
    simple = {"method": METHOD_KEY, "colormap": COLORMAP_KEY, "image_weight": WEIGHT_KEY}
    for name, key in simple.items():
        if name in view:
            st.session_state[key] = view[name]
    if "target" in view:
        st.session_state[TARGET_KEY] = PREDICTED if view["target"] is None else view["target"]
    for name, value in view.get("options", {}).items():
        if name in ("aug_smooth", "eigen_smooth"):
            st.session_state[name] = bool(value)
    if view.get("samples"):
        st.session_state[SAMPLES_KEY] = list(view["samples"])


# -------------------------------------------------------------------------------------- compute
def _compute(
    model, explainer, batch, layer, method, target, options, slots, layer_slot, cam_slot, status
) -> tuple[Any, Any]:
    """The cached CamResult for these choices, computed when new: slow methods show progress,
    the time left and a stop button in ``status`` (right above the overlays)."""
    key = cam_key(model, batch.digests, layer=layer, method=method, target=target, options=options)
    cache = common.result_cache(explainer)
    result = cache.get(key)
    if result is not None:
        return result, key
    what = f"{method} on `{layer}`"
    box = status.container()
    if st.session_state.get(STOPPED_KEY) == key:
        with box:
            st.info(f"Stopped {what}: the overlays below are the previous result.")
            st.button("Run it", key="resume", on_click=st.session_state.pop, args=(STOPPED_KEY,))
        return None, None
    info = explainer.method_info(method)
    samples = len(next(iter(batch.images.values())))
    bar = None
    if info.slow:
        with box:
            bar = st.progress(0.0, text=f"{what}: starting…")
            st.button(
                "Stop",
                key="stop",
                on_click=st.session_state.__setitem__,
                args=(STOPPED_KEY, key),
                icon=":material/stop_circle:",
            )
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if bar is None or not total:
            return
        left = (time.monotonic() - started) / max(done, 1) * (total - done)
        bar.progress(
            min(done / total, 1.0), text=f"{what}: {done}/{total} · about {_duration(left)} left"
        )

    try:
        with box, st.spinner(f"Computing {what} for {samples} sample(s)…"):
            if layer == BRANCHES and info.uses_layer:
                result = explainer.explain_branches(
                    batch.images, method, target, progress=progress, **options
                )
            else:  # a method without a layer (FullGrad) ignores the branches too
                result = explainer.explain(
                    batch.images,
                    None if layer == BRANCHES else layer,
                    method,
                    target,
                    progress=progress,
                    **options,
                )
    except CamError as exc:
        if exc.modality in slots:
            slots[exc.modality].error(str(exc), icon=":material/block:")
        elif isinstance(exc, LayerError):
            layer_slot.error(str(exc), icon=":material/block:")
        elif isinstance(exc, (TargetError, MethodError)):
            cam_slot.error(str(exc), icon=":material/block:")
        else:
            st.error(str(exc), icon=":material/block:")
        return None, None
    finally:
        status.empty()
    cache.put(key, result)
    # The predicted class asked for by its index, or the other way round: the same CAMs.
    predicted = {int(t) for t in result.probabilities.argmax(axis=1)}
    if len(predicted) == 1 and (target is None or target in predicted):
        twin = predicted.pop() if target is None else None
        cache.put(key[:4] + (twin,) + key[5:], result)
    return result, key


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


# ------------------------------------------------ each modality's own branch, and its contribution
BRANCHES = "each modality's own branch"
ONE_LAYER = "one layer for all (pick it in the tree below)"


def _branch_mode(model: str, explainer: Any) -> dict[str, str | None] | None:
    """Where to take the CAMs: each modality's own branch, or one layer for all. The branches
    are the default when every spatially aligned input of a multi-input model has one.

    Returns ``{modality: layer or None}`` when the branches are chosen, else None.
    """
    try:
        branches = explainer.branches()
    except CamError:  # modalities without a size: no example inputs to trace the graph on
        return None
    if len(branches) < 2 or not any(branches.values()):
        return None
    key = f"layer_mode:{model}"
    if f"layer_mode_next:{model}" in st.session_state:  # a row of the layer table was picked
        st.session_state[key] = st.session_state.pop(f"layer_mode_next:{model}")
    if st.session_state.get(key) not in (BRANCHES, ONE_LAYER):
        aligned = [m.name for m in explainer.modalities if m.aligned]
        st.session_state[key] = BRANCHES if all(branches[n] for n in aligned) else ONE_LAYER
    mode = st.radio(
        "Take the CAMs at",
        [BRANCHES, ONE_LAYER],
        key=key,
        horizontal=True,
        help="Each modality's own branch: the deepest layer that sees only that input, so each "
        "overlay is that input's own evidence. One layer after the fusion gives one map, drawn "
        "on every input.",
    )
    if mode != BRANCHES:
        return None
    st.caption(" · ".join(f"{name}: `{layer or 'none'}`" for name, layer in branches.items()))
    return branches


def _where(result: Any) -> str:
    """What the overlays were taken at, for the caption above them."""
    if result.layer:
        return f"layer `{result.layer}`"
    if result.layers:
        return BRANCHES + " (" + ", ".join(f"`{v}`" for v in result.layers.values()) + ")"
    return "whole model (this method has no layer)"


def _zip_layer(result: Any) -> str:
    return result.layer or ("branches" if result.layers else "model")


def _contributions(explainer: Any, batch: Batch, targets: list[int]) -> dict | None:
    """``{modality: (N,)}`` drop of each sample's class probability with that modality at its
    baseline; remembered for this session's last inputs (None for one-input models)."""
    if len(explainer.modalities) < 2:
        return None
    key = (id(explainer), tuple(sorted((n, tuple(d)) for n, d in batch.digests.items())))
    key += (tuple(targets),)
    memo = st.session_state.setdefault("contributions", {})
    if key not in memo:
        try:
            value = explainer.contributions(batch.images, list(targets))
        except CamError as exc:
            st.warning(f"Modality contributions could not be computed: {exc}")
            return None
        memo.clear()
        memo[key] = value
    return memo[key]


def _contribution_chart(drops: dict, i: int) -> None:
    """Sample ``i``'s contributions as a small horizontal bar chart."""
    frame = pd.DataFrame(
        {"modality": list(drops), "drop": [float(values[i]) for values in drops.values()]}
    )
    st.bar_chart(
        frame,
        x="modality",
        y="drop",
        horizontal=True,
        sort=False,
        height=60 + 30 * len(frame),
        x_label="",  # the modality axis (drawn vertically)
        y_label="probability drop",
    )
    st.caption("How much the class's probability drops with that input alone at its baseline.")


# -------------------------------------------------------------------------------------- results
def _show_result(model: str, last: dict, colormap: str, weight: float, originals: bool) -> None:
    result = last["result"]
    names = last["names"]
    target = last["target"]
    options = ", ".join(k for k, v in dict(result.options).items() if v is True)
    st.caption(
        "**Overlays** · "
        + _where(result)
        + f" · {result.method} · target: "
        + ("predicted class" if target is None else result.class_name(target))
        + (f" · {options}" if options else "")
    )
    notices = [n for n in dict.fromkeys(result.notices) if n != result.fused_notice]
    if notices:
        # One closed box, not one per sentence: a batch can carry many.
        with st.expander(
            f"{len(notices)} note{'s' if len(notices) > 1 else ''} on this result",
            icon=":material/info:",
        ):
            st.markdown("\n".join(f"- {n}" for n in notices))

    # The PNG bytes shown are the bytes downloaded (one PNG, or inside the ZIP).
    if last.get("pngs_for") != (colormap, weight):
        last["pngs"] = export.overlay_pngs(result, colormap=colormap, image_weight=weight)
        last["pngs_for"] = (colormap, weight)
    pngs = last["pngs"]
    originals_png = _original_pngs(last) if originals else None
    ranked = top_k(result.probabilities, result.class_name)
    classes = result.probabilities.shape[1]
    ranking = f"top-{min(5, classes)}" if classes > 5 else "probabilities"
    modalities = list(result.cams)
    drops = last.get("contributions")
    if result.fused_notice:
        st.caption(result.fused_notice)  # once, above the overlays it is about
    for i, (target_i, top) in enumerate(zip(result.targets, ranked)):
        prob = float(result.probabilities[i, target_i])
        st.markdown(
            f"**Sample {i + 1}** · {ranking}: "
            + " · ".join(f"{name} {p:.1%}" for _, name, p in top)
        )
        columns = st.columns(len(modalities) * (2 if originals_png else 1) + (1 if drops else 0))
        if drops:
            with columns[-1]:
                _contribution_chart(drops, i)
        for m, name in enumerate(modalities):
            file = names.get(name, [""] * (i + 1))[i] if names else ""
            if originals_png:
                with columns[2 * m]:
                    st.image(
                        originals_png[name][i],
                        caption=f"{name} · original · {file}",
                        output_format="PNG",
                        width="stretch",
                    )
            with columns[2 * m + 1 if originals_png else m]:
                st.image(
                    pngs[name][i],
                    caption=f"{name} · {result.class_name(target_i)} ({prob:.1%}) · {file}",
                    output_format="PNG",
                    width="stretch",
                )
                if bool(result.empty[name][i]):
                    st.warning(
                        "No signal: this CAM is all zero or constant.", icon=":material/warning:"
                    )
                st.download_button(
                    "PNG",
                    _deferred(pngs[name][i]),
                    file_name=f"{i:02d}_{name}_overlay.png",
                    mime="image/png",
                    key=f"png:{i}:{name}",
                    on_click="ignore",
                    icon=":material/download:",
                    type="tertiary",
                )

    settings = export.settings_dict(
        result,
        model=model,
        target=target,
        colormap=colormap,
        image_weight=weight,
        inputs=names or None,
        samples=last.get("samples"),
    )
    st.download_button(
        "Download everything (ZIP)",
        lambda: export.result_zip(
            result, colormap=colormap, image_weight=weight, settings=settings, overlays=pngs
        ),
        file_name=f"cam_{model}_{_zip_layer(result)}_{result.method}.zip".replace("/", "_"),
        mime="application/zip",
        key="download_zip",
        on_click="ignore",
        icon=":material/folder_zip:",
        type="primary",
        help="Overlays and originals (PNG), CAMs and raw maps (.npy), settings.json.",
    )


def _deferred(data: bytes) -> Callable[[], bytes]:
    # A callable makes the download deferred: nothing is stored or hashed per rerun.
    return lambda: data


def _original_pngs(last: dict) -> dict[str, list[bytes]]:
    # Originals do not change with the display settings: encode once per result.
    if "originals" not in last:
        last["originals"] = export.original_pngs(last["result"])
    return last["originals"]
