"""The explorer: inputs per modality, a layer, a method and target -> overlays side by side.

Thin: choices are gathered here, the work is ``cam_core``'s. A CAM is computed once per
(model, input content, layer, method, target, options) and cached; colormap and image_weight
only re-blend the cached CAM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from cam_core import CamError, InputError, LayerError, export
from cam_core.errors import MethodError, TargetError
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


@dataclass
class Batch:
    """The inputs of one explain call (images, file names, content hashes), or why not."""

    images: dict[str, list[np.ndarray]] | None = None
    names: dict[str, list[str]] = field(default_factory=dict)
    digests: dict[str, list[str]] = field(default_factory=dict)
    problem: str | None = None

    @classmethod
    def of(cls, files: dict[str, list[Decoded]]) -> Batch:
        return cls(
            images={n: [f.image for f in fs] for n, fs in files.items()},
            names={n: [f.name for f in fs] for n, fs in files.items()},
            digests={n: [f.digest for f in fs] for n, fs in files.items()},
        )


def render() -> None:
    """The explorer page."""
    model = common.current_model()
    explainer = common.current_explainer()
    st.title("CAM Explorer")
    loaded = common.checkpointed(model)
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
    batch = _inputs_section(model, explainer, slots)
    layer, layer_slot = _layer_section(model, explainer)
    method, target, options, cam_slot = _cam_controls(model, explainer)
    colormap, image_weight, show_originals = _view_controls()

    result, key = None, None
    if batch.images is not None and layer is not None:
        result, key = _compute(
            model, explainer, batch, layer, method, target, options, slots, layer_slot, cam_slot
        )
    last = st.session_state.get(f"last:{model}")
    if result is not None:
        st.session_state[f"last:{model}"] = last = {
            "key": key,
            "result": result,
            "names": batch.names,
            "target": target,
            "contributions": _contributions(explainer, batch, result.targets),
        }
    elif last is not None:
        idle = batch.images is None and batch.problem is None
        why = "no inputs are chosen" if idle else "fix the problem above to update it"
        st.info(f"Showing the previous result: {why}.", icon=":material/history:")
    if last is None:
        if batch.problem is None and batch.images is None:
            st.info("Upload one image per modality above to see where the model looks.")
        return
    _show_result(model, last, colormap, image_weight, show_originals)


# --------------------------------------------------------------------------------------- inputs
def _inputs_section(model: str, explainer: Any, slots: dict[str, Any]) -> Batch:
    """One uploader per modality (several files = a batch); the bundled samples otherwise."""
    modalities = explainer.modalities
    samples = common.sample_sets(model)
    limit = common.upload_limit_mb()
    # Decoded files of this session by upload id: a rerun (a slider move) neither decodes nor
    # hashes an image again.
    memo: dict[tuple, Decoded] = st.session_state.setdefault(f"decoded:{model}", {})
    used: set[tuple] = set()
    spent = 0  # bytes of this session's decoded uploads, in upload order
    uploads: dict[str, list[Decoded]] = {}
    failed = False
    with st.container(border=True):
        st.subheader("Inputs", anchor=False)
        if samples:
            # Uploads take over from the samples; say so instead of showing a stale choice.
            uploading = any(st.session_state.get(f"upload:{model}:{m.name}") for m in modalities)
            st.multiselect(
                "Bundled samples (used while nothing is uploaded)",
                list(samples),
                default=list(samples)[:1],
                key=f"samples:{model}",
                disabled=uploading,
                help="Remove your uploads to explain the bundled samples again."
                if uploading
                else "Each sample is one image per modality; several make a batch.",
            )
        columns = st.columns(len(modalities))
        for column, modality in zip(columns, modalities):
            with column:
                files = st.file_uploader(
                    _uploader_label(modality),
                    type=list(IMAGE_SUFFIXES),
                    accept_multiple_files=True,
                    key=f"upload:{model}:{modality.name}",
                    help=(modality.description or None),
                    max_upload_size=int(limit),
                )
                if not modality.aligned:
                    st.caption(
                        "Not spatially aligned: its heatmap marks positions in this "
                        "representation, not places in the scene."
                    )
                slots[modality.name] = st.container()
                uploads[modality.name] = []
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


def _uploader_label(modality: Any) -> str:
    size = "any size" if modality.size is None else f"{modality.size[0]}×{modality.size[1]} px"
    channels = {1: "grayscale", 3: "RGB"}.get(modality.channels, f"{modality.channels} channels")
    return f"**{modality.name}** · {channels} · {size}"


def _sample_batch(model: str, explainer: Any, samples: dict[str, dict]) -> Batch:
    chosen = [s for s in st.session_state.get(f"samples:{model}", []) if s in samples]
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
    return Batch.of(files)


# ---------------------------------------------------------------------------------------- layer
def _layer_section(model: str, explainer: Any) -> tuple[str | None, Any]:
    """The layer tree as a table: click a row to select; rows that cannot be a CAM target are
    listed with the reason but refused. Returns (layer path, slot for layer errors)."""
    try:
        tree = common.layer_tree(model)
    except CamError as exc:
        st.error(f"The layer tree could not be traced: {exc}", icon=":material/block:")
        return None, st.container()
    by_path = {info.path: info for info in tree}
    branches = _branch_mode(model, explainer)
    layer_key, gen_key, notice_key = f"layer:{model}", f"layer_gen:{model}", f"layer_notice:{model}"
    if st.session_state.get(layer_key) not in by_path:
        st.session_state[layer_key] = _default_layer(explainer, tree)
    current = st.session_state[layer_key]
    info = by_path.get(current)
    label = (
        ("One layer for all (not in use): " if branches else "Layer: ")
        + f"`{current}`"
        + (f" · {info.type} · {_shape(info.output_shape)}" if info else "")
    )

    with st.expander(
        label, expanded=False, key=f"layer_expander:{model}", icon=":material/account_tree:"
    ):
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
        notice = st.session_state.pop(notice_key, None)
        if notice:
            st.warning(notice, icon=":material/do_not_disturb_on:")
        default = next((n for n, i in enumerate(rows) if i.path == current), None)
        digest = hashlib.blake2b(query.encode(), digest_size=6).hexdigest()
        event = st.dataframe(
            _layer_frame(rows),
            key=f"layer_table:{model}:{st.session_state.get(gen_key, 0)}:{digest}",
            on_select="rerun",
            selection_mode="single-row",
            selection_default=None if default is None else {"selection": {"rows": [default]}},
            hide_index=True,
            height=min(36 + 35 * len(rows), 360),
            column_config={
                "layer": st.column_config.TextColumn("layer", width="medium"),
                "CAM target": st.column_config.CheckboxColumn("CAM target", width="small"),
                "params": st.column_config.NumberColumn("params", format="compact"),
            },
        )
        st.caption(
            f"{len(rows)} of {len(tree)} layers · click a row to take the CAM there · "
            "unchecked rows cannot be a target (the note says why)"
        )
        layer_slot = st.container()
    picked = event.selection.rows if event is not None else []
    if picked and picked[0] < len(rows):
        chosen = rows[picked[0]]
        if chosen.path != current:
            if chosen.ready:
                st.session_state[layer_key] = chosen.path
                st.session_state[f"layer_mode_next:{model}"] = ONE_LAYER
            else:
                # Refused: say why, and reset the table's selection to the current layer.
                st.session_state[notice_key] = (
                    f"`{chosen.path}` ({chosen.type}) cannot be a CAM target: {chosen.reason}"
                )
                st.session_state[gen_key] = st.session_state.get(gen_key, 0) + 1
            st.rerun()  # the expander label, the table and the cache key follow
    return (BRANCHES if branches else current), layer_slot


def _default_layer(explainer: Any, tree: Sequence[Any]) -> str | None:
    ready = [i.path for i in tree if i.ready]
    if explainer.default_layer in ready:
        return explainer.default_layer
    return ready[-1] if ready else None


def _layer_frame(rows: Sequence[Any]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": ["\u2003" * i.depth + i.path.rsplit(".", 1)[-1] for i in rows],
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
    """Sidebar: method (with its cost), target class, advanced options."""
    sidebar = st.sidebar
    sidebar.header("CAM")
    methods = list(explainer.methods())
    infos = {name: explainer.method_info(name) for name in methods}
    method_key = f"method:{model}"
    if st.session_state.get(method_key) not in methods:
        st.session_state[method_key] = "gradcam" if "gradcam" in methods else methods[0]
    method = sidebar.selectbox(
        "Method",
        methods,
        key=method_key,
        format_func=lambda m: f"{m} · {infos[m].cost}" + (" · slow" if infos[m].slow else ""),
    )
    if infos[method].notes:
        sidebar.caption(infos[method].notes)

    classes = list(explainer.classes or [])
    last = st.session_state.get(f"last:{model}")
    count = len(classes) or (last["result"].probabilities.shape[1] if last else 0)
    target_key = f"target:{model}"
    options: list[Any] = [PREDICTED, *range(count)]
    if st.session_state.get(target_key) not in options:
        st.session_state[target_key] = PREDICTED
    target = sidebar.selectbox(
        "Target class",
        options,
        key=target_key,
        format_func=lambda t: (
            "predicted class (per sample)"
            if t == PREDICTED
            else f"{t}: {classes[t]}"
            if t < len(classes)
            else f"class {t}"
        ),
        help="The class whose score the CAM explains. Top-5 probabilities are shown per sample.",
    )
    with sidebar.expander("Advanced"):
        aug = st.checkbox(
            "aug_smooth",
            key=f"aug_smooth:{model}",
            help="Average over flips and scales: smoother, ~6× slower.",
        )
        eigen = st.checkbox(
            "eigen_smooth",
            key=f"eigen_smooth:{model}",
            help="First principal component of the weighted activations.",
        )
    cam_slot = sidebar.container()
    return (
        method,
        (None if target == PREDICTED else int(target)),
        {"aug_smooth": aug, "eigen_smooth": eigen},
        cam_slot,
    )


def _view_controls() -> tuple[str, float, bool]:
    """Sidebar: colormap, image weight, originals. Changing them only re-blends."""
    sidebar = st.sidebar
    sidebar.header("View")
    names = list(COLORMAPS)
    colormap = sidebar.selectbox(
        "Colormap", names, index=names.index("jet") if "jet" in names else 0, key="colormap"
    )
    weight = sidebar.slider(
        "image_weight",
        0.0,
        1.0,
        0.5,
        0.05,
        key="image_weight",
        help="Share of the image in the blend: 0 = heatmap only.",
    )
    originals = sidebar.toggle("Show originals", key="show_originals")
    return colormap, float(weight), originals


# -------------------------------------------------------------------------------------- compute
def _compute(
    model, explainer, batch, layer, method, target, options, slots, layer_slot, cam_slot
) -> tuple[Any, Any]:
    """The cached CamResult for these choices, computed (with progress) when new."""
    key = cam_key(model, batch.digests, layer=layer, method=method, target=target, options=options)
    cache = common.result_cache(explainer)
    result = cache.get(key)
    if result is not None:
        return result, key
    info = explainer.method_info(method)
    samples = len(next(iter(batch.images.values())))
    bar = st.progress(0.0, text=f"{method} on `{layer}`…") if info.slow else None

    def progress(done: int, total: int) -> None:
        if bar is not None and total:
            bar.progress(min(done / total, 1.0), text=f"{method} on `{layer}`: {done}/{total}")

    try:
        with st.spinner(f"Computing {method} on `{layer}` for {samples} sample(s)…"):
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
        if bar is not None:
            bar.empty()
    cache.put(key, result)
    return result, key


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
    st.subheader("Overlays", anchor=False)
    options = ", ".join(k for k, v in dict(result.options).items() if v is True)
    st.caption(
        _where(result)
        + f" · {result.method} · target: "
        + ("predicted class" if target is None else result.class_name(target))
        + (f" · {options}" if options else "")
    )
    notices = [n for n in dict.fromkeys(result.notices) if n != result.fused_notice]
    if notices:
        # One box, not one per sentence: a batch can carry many.
        st.info("\n".join(f"- {n}" for n in notices), icon=":material/info:")

    # The PNG bytes shown are the bytes downloaded (one PNG, or inside the ZIP).
    if last.get("pngs_for") != (colormap, weight):
        last["pngs"] = export.overlay_pngs(result, colormap=colormap, image_weight=weight)
        last["pngs_for"] = (colormap, weight)
    pngs = last["pngs"]
    originals_png = _original_pngs(last) if originals else None
    ranked = top_k(result.probabilities, result.class_name)
    modalities = list(result.cams)
    drops = last.get("contributions")
    if result.fused_notice:
        st.caption(result.fused_notice)  # once, above the overlays it is about
    for i, (target_i, top) in enumerate(zip(result.targets, ranked)):
        prob = float(result.probabilities[i, target_i])
        st.markdown(
            f"**Sample {i + 1}** · top-5: " + " · ".join(f"{name} {p:.1%}" for _, name, p in top)
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
