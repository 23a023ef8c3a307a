"""The Compare page: which heatmap to trust — a layer x method grid, a faithfulness score per map,
ground-truth scores against masks, one scale across the grid.

Thin: choices are gathered here, the work is ``cam_core``'s (``Explainer.compare`` /
``faithfulness``, ``cam_core.grid``, ``cam_core.metrics``, ``cam_core.scale``). Every cell is a
``CamResult`` in the model's shared result cache under the explorer's own key, so opening a cell
in the explorer costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from cam_core import CamError, InputError, metrics
from cam_core.faithfulness import FAITHFULNESS_METRICS
from cam_core.grid import fast_methods, grid_scale, rank_cells, suggest_layers
from cam_core.overlay import COLORMAPS, blend, colorbar, montage, outline
from cam_core.scale import value_at
from cam_core.session import IMAGE_SUFFIXES, cam_key, decode_input, pair_batches
from pages.ui import common, explorer

__all__ = ["render"]

PREDICTED = "predicted"
NO_METRIC = "none"
#: Columns shown by default when the model offers them: two channel-averaged gradient methods
#: and two that weigh each position (they disagree most on the demo's branches).
DEFAULT_METHODS = ("gradcam", "gradcam++", "hirescam", "layercam")
#: Options of every cell: the explorer's defaults, so its cache key finds the cell.
OPTIONS = {"aug_smooth": False, "eigen_smooth": False}
EXPLORER_PAGE = "pages/explorer.py"
_BLOCK = ":material/block:"


@dataclass
class Inputs:
    """The images of the grid, per modality, their content hashes and names, and masks."""

    images: dict[str, list[np.ndarray]] = field(default_factory=dict)
    digests: dict[str, list[str]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    masks: list[np.ndarray | None] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)  # bundled sample names, when used


def render() -> None:
    """The Compare page."""
    model = common.current_model()
    explainer = common.current_explainer()
    st.title("Compare layers and methods")
    st.caption(
        "Which heatmap to trust: every layer x method on the same inputs, each map with its "
        "faithfulness to the model and, given a mask of the region that matters, its pointing "
        "game and energy inside it."
    )
    inputs = _inputs(model, explainer)
    layers, methods, target = _grid_choices(model, explainer)
    view = _view_choices(model, explainer, inputs)
    if not inputs.names or not layers or not methods:
        st.info("Choose inputs, at least one layer and one method.")
        return
    grid = _compute_grid(model, explainer, inputs, layers, methods, target)
    if grid is None:
        return
    scores = _scores(model, explainer, inputs, grid, view["metric"], target)
    truth = {cell: metrics.score_masks(result, inputs.masks) for cell, result in grid.items()}
    _show_grid(model, explainer, inputs, grid, scores, truth, view, target)
    _show_table(model, inputs, grid, scores, truth, view, target)


# ------------------------------------------------------------------------------------- inputs
def _inputs(model: str, explainer: Any) -> Inputs:
    """Bundled samples (with their masks) or one upload per modality, and optional masks."""
    samples = common.sample_sets(model)
    limit = common.upload_limit_mb()
    modalities = explainer.modalities
    with st.expander("Inputs", expanded=not samples, icon=":material/photo_library:"):
        if samples:
            st.multiselect(
                "Bundled samples (their masks are used)",
                list(samples),
                default=list(samples)[:1],
                key=f"compare_samples:{model}",
            )
        columns = st.columns(len(modalities) + 1)
        uploads: dict[str, list] = {}
        for column, modality in zip(columns, modalities):
            uploads[modality.name] = column.file_uploader(
                f"**{modality.name}**",
                type=list(IMAGE_SUFFIXES),
                accept_multiple_files=True,
                key=f"compare_upload:{model}:{modality.name}",
                max_upload_size=int(limit),
            )
        mask_files = columns[-1].file_uploader(
            "**masks** (optional, one per sample)",
            type=list(IMAGE_SUFFIXES),
            accept_multiple_files=True,
            key=f"compare_masks:{model}",
            help="White = the region that holds the evidence; paired with the samples by "
            "upload order. Scores: pointing game and energy inside the mask.",
        )
    if any(uploads.values()):
        inputs = _uploaded(modalities, uploads, limit)
    else:
        inputs = _bundled(model, explainer, samples)
    if inputs is not None and mask_files:
        _uploaded_masks(inputs, mask_files, limit)
    return inputs or Inputs()


def _bundled(model: str, explainer: Any, samples: dict[str, dict]) -> Inputs | None:
    chosen = [s for s in st.session_state.get(f"compare_samples:{model}", []) if s in samples]
    if not chosen:
        return None
    inputs = Inputs(samples=chosen, names=list(chosen))
    for modality in explainer.modalities:
        files = [common.sample_image(samples[s][modality.name], modality.channels) for s in chosen]
        broken = next((f for f in files if f.error), None)
        if broken is not None:
            st.error(f"Bundled sample {broken.name}: {broken.error}", icon=":material/block:")
            return None
        inputs.images[modality.name] = [f.image for f in files]
        inputs.digests[modality.name] = [f.digest for f in files]
    for name in chosen:
        path = samples[name][explainer.modalities[0].name].with_name("mask.png")
        inputs.masks.append(metrics.load_mask(path) if path.is_file() else None)
    return inputs


def _uploaded(modalities: Any, uploads: dict[str, list], limit: float) -> Inputs | None:
    decoded: dict[str, list] = {}
    for modality in modalities:
        decoded[modality.name] = []
        for upload in uploads[modality.name] or []:
            item = decode_input(
                upload.getvalue(), upload.name, channels=modality.channels, limit_mb=limit,
                modality=modality.name,
            )  # fmt: skip
            if item.error:
                st.error(
                    f"{modality.name} · **{item.name}**: {item.error}", icon=":material/block:"
                )
                return None
            decoded[modality.name].append(item)
    try:
        paired = pair_batches(decoded, [m.name for m in modalities])
    except InputError as exc:
        st.error(str(exc), icon=":material/block:")
        return None
    first = next(iter(paired.values()))
    return Inputs(
        images={n: [f.image for f in fs] for n, fs in paired.items()},
        digests={n: [f.digest for f in fs] for n, fs in paired.items()},
        names=[f.name for f in first],
        masks=[None] * len(first),
    )


def _uploaded_masks(inputs: Inputs, files: list, limit: float) -> None:
    if len(files) != len(inputs.names):
        st.warning(
            f"{len(files)} mask(s) for {len(inputs.names)} sample(s): give one per sample, in "
            "the samples' order. Masks are ignored until then.",
            icon=":material/warning:",
        )
        return
    for i, upload in enumerate(files):
        try:
            if upload.size > limit * 1024 * 1024:
                raise InputError(f"{upload.name} is over the {limit:g} MB limit.")
            inputs.masks[i] = metrics.load_mask(upload.getvalue())
        except CamError as exc:
            st.error(f"Mask **{upload.name}**: {exc}", icon=":material/block:")


# ------------------------------------------------------------------------------------ choices
def _grid_choices(model: str, explainer: Any) -> tuple[list[str], list[str], int | None]:
    """Rows (layers), columns (methods) and the target class, in the sidebar."""
    sidebar = st.sidebar
    sidebar.header("Grid")
    try:
        tree = common.layer_tree(model)
    except CamError as exc:
        st.error(f"The layer tree could not be traced: {exc}", icon=":material/block:")
        return [], [], None
    ready = [row.path for row in tree if row.ready]
    layer_key = f"compare_layers:{model}"
    if layer_key not in st.session_state:
        st.session_state[layer_key] = suggest_layers(explainer, tree)
    layers = sidebar.multiselect(
        "Layers (rows)",
        ready,
        key=layer_key,
        help="Default: the recommended layer, each modality's branch, and layers across the "
        "depth. Any CAM-ready layer can be added.",
    )
    methods = explainer.methods()
    infos = {name: explainer.method_info(name) for name in methods}
    method_key = f"compare_methods:{model}"
    if method_key not in st.session_state:
        fast = fast_methods(explainer)
        st.session_state[method_key] = [m for m in DEFAULT_METHODS if m in fast] or fast[:4]
    chosen = sidebar.multiselect(
        "Methods (columns)",
        methods,
        key=method_key,
        format_func=lambda m: f"{m} · slow" if infos[m].slow else m,
        help="Gradient methods cost one forward and backward for all layers together. Slow "
        "methods (ScoreCAM, AblationCAM) run the model once per channel: opt in knowingly.",
    )
    for name in chosen:
        if infos[name].slow:
            sidebar.caption(f":material/hourglass_top: **{name}**: {infos[name].cost}, per layer.")
    classes = list(explainer.classes or [])
    target = sidebar.selectbox(
        "Target class",
        [PREDICTED, *range(len(classes))],
        key=f"compare_target:{model}",
        format_func=lambda t: "predicted class (per sample)" if t == PREDICTED else classes[t],
    )
    return list(layers), list(chosen), None if target == PREDICTED else int(target)


def _view_choices(model: str, explainer: Any, inputs: Inputs) -> dict[str, Any]:
    """Sample shown, colormap, scale, faithfulness metric and sorting, in the sidebar."""
    sidebar = st.sidebar
    sidebar.header("View")
    count = len(inputs.names)
    sample = 0
    if count > 1:
        sample = sidebar.selectbox(
            "Sample", range(count), key=f"compare_sample:{model}",
            format_func=lambda i: f"{i + 1}: {inputs.names[i]}",
        )  # fmt: skip
    names = list(COLORMAPS)
    colormap = sidebar.selectbox(
        "Colormap", names, index=names.index("jet"), key="compare_colormap"
    )
    shared = (
        sidebar.radio(
            "Scale",
            ["each map", "shared"],
            key="compare_scale",
            horizontal=True,
            help="each map: scaled to its own maximum (grad-cam's way; shapes compare). "
            "shared: raw values on one scale across the grid and the samples (strengths "
            "compare).",
        )
        == "shared"
    )
    labels = {NO_METRIC: "none"} | {k: m.label for k, m in FAITHFULNESS_METRICS.items()}
    metric = sidebar.selectbox(
        "Faithfulness",
        list(labels),
        index=1,
        key=f"compare_metric:{model}",
        format_func=lambda k: labels[k] + (" · slow" if FAITHFULNESS_METRICS.get(k, None)
                                           and FAITHFULNESS_METRICS[k].slow else ""),
        help="Scored for every cell and modality, without gradients.",
    )  # fmt: skip
    if metric != NO_METRIC:
        sidebar.caption(FAITHFULNESS_METRICS[metric].description)
    ranked = sidebar.toggle(
        "Most faithful first", key=f"compare_ranked:{model}", disabled=metric == NO_METRIC
    )
    focus = explainer.names[-1] if explainer.names else None
    aligned = [m.name for m in explainer.modalities if m.aligned]
    if ranked and metric != NO_METRIC:
        focus = sidebar.selectbox(
            "Rank by the score on", explainer.names,
            index=explainer.names.index(aligned[-1]) if aligned else 0,
            key=f"compare_rank_on:{model}",
        )  # fmt: skip
    return {
        "sample": int(sample), "colormap": colormap, "shared": shared, "metric": metric,
        "ranked": bool(ranked and metric != NO_METRIC), "focus": focus,
    }  # fmt: skip


# ------------------------------------------------------------------------------------ compute
def _key(model: str, inputs: Inputs, layer: str, method: str, target: int | None) -> tuple:
    return cam_key(model, inputs.digests, layer=layer, method=method, target=target,
                   options=OPTIONS)  # fmt: skip


def _compute_grid(model, explainer, inputs, layers, methods, target) -> dict | None:
    """Every cell from the shared cache, the missing ones by one ``compare`` per method."""
    cache = common.result_cache(explainer)
    grid: dict[tuple[str, str], Any] = {}
    missing: dict[str, list[str]] = {}
    for method in methods:
        for layer in layers:
            result = cache.get(_key(model, inputs, layer, method, target))
            if result is None:
                missing.setdefault(method, []).append(layer)
            else:
                grid[(layer, method)] = result
    if missing:
        bar = st.progress(0.0, text="Computing the grid…")
        try:
            for done, (method, todo) in enumerate(missing.items()):
                bar.progress(done / len(missing), text=f"{method} at {len(todo)} layer(s)…")
                column = explainer.compare(inputs.images, todo, [method], target)
                for (layer, _), result in column.items():
                    cache.put(_key(model, inputs, layer, method, target), result)
                    grid[(layer, method)] = result
        except CamError as exc:
            st.error(f"{method}: {exc}", icon=":material/block:")
            return None
        finally:
            bar.empty()
    return {(layer, method): grid[(layer, method)] for layer in layers for method in methods}


def _scores(model, explainer, inputs, grid, metric, target) -> dict:
    """Faithfulness of every cell and modality, ``{cell: {modality: float32 (N,)}}``, kept per
    session; a progress bar while scoring (ROAD is slow)."""
    if metric == NO_METRIC:
        return {}
    store: dict = st.session_state.setdefault("compare_scores", {})
    keys = {cell: (_key(model, inputs, *cell, target), metric) for cell in grid}
    todo = [cell for cell in grid if keys[cell] not in store]
    if todo:
        label = FAITHFULNESS_METRICS[metric].label
        bar = st.progress(0.0, text=f"{label}…")
        try:
            for done, cell in enumerate(todo):
                bar.progress(done / len(todo), text=f"{label}: {cell[1]} at {cell[0]}")
                store[keys[cell]] = explainer.faithfulness(inputs.images, grid[cell], metric=metric)
        except CamError as exc:
            st.error(f"Faithfulness: {exc}", icon=":material/block:")
        finally:
            bar.empty()
    return {cell: store[keys[cell]] for cell in grid if keys[cell] in store}


# ---------------------------------------------------------------------------------------- grid
def _show_grid(model, explainer, inputs, grid, scores, truth, view, target) -> None:
    i, colormap, metric = view["sample"], view["colormap"], view["metric"]
    first = next(iter(grid.values()))
    names = list(first.cams)
    st.subheader(f"Sample {i + 1}: {inputs.names[i]}", anchor=False)
    st.caption(
        f"Each cell: {' | '.join(names)}, then per modality its score · target: "
        + ("predicted class" if target is None else first.class_name(target))
        + f" ({first.class_name(first.targets[i])}, {first.probabilities[i, first.targets[i]]:.1%})"
        + (" · white outline: the mask" if inputs.masks[i] is not None else "")
        + (f" · score: {_metric_hint(metric)}" if metric != NO_METRIC else "")
    )
    maps, highs = {}, {}
    for name in names:
        maps[name], highs[name] = grid_scale(grid, name, view["shared"])
    bars = st.columns(len(names))
    for column, name in zip(bars, names):
        column.image(colorbar(colormap, 0.0, highs[name], width=240))
        column.caption(
            f"{name}: "
            + ("raw value, shared across the grid" if view["shared"] else "each map to its max")
        )
    if view["ranked"]:
        ranked = rank_cells(scores, metric, view["focus"], i)
        order = ranked + [c for c in grid if c not in ranked]
        st.caption(f"Most faithful first, by the {view['focus']} score.")
        for rank, cell in enumerate(order, start=1):
            label, body = st.columns([1, 3], vertical_alignment="center")
            label.markdown(f"**#{rank}** · {cell[1]} · `{cell[0]}`")
            with body.container(border=True):
                _cell(model, inputs, grid[cell], cell, maps, scores, truth, view, target)
        return
    methods = list(dict.fromkeys(method for _, method in grid))
    layers = list(dict.fromkeys(layer for layer, _ in grid))
    widths = [1.4] + [2] * len(methods)
    for column, method in zip(st.columns(widths)[1:], methods):
        column.markdown(f"**{method}**")
    for layer in layers:
        columns = st.columns(widths, vertical_alignment="center")
        columns[0].markdown(f"`{layer}`")
        for column, method in zip(columns[1:], methods):
            with column.container(border=True):
                cell = (layer, method)
                _cell(model, inputs, grid[cell], cell, maps, scores, truth, view, target)


def _metric_hint(metric: str) -> str:
    info = FAITHFULNESS_METRICS[metric]
    return f"{info.label}, {'higher' if info.higher_is_better else 'lower'} is more faithful"


def _cell(model, inputs, result, cell, maps, scores, truth, view, target) -> None:
    """One cell: the modalities' overlays side by side, the scores, a link to the explorer."""
    i, (layer, method) = view["sample"], cell
    tiles = []
    for name in result.cams:
        drawn = blend(result.display[name][i : i + 1], maps[name][cell][i : i + 1],
                      view["colormap"], 0.5)  # fmt: skip
        if inputs.masks[i] is not None and name in truth[cell]:
            drawn = outline(drawn, inputs.masks[i])
        tiles.append(drawn[0])
    st.image(montage(tiles, gap=3, height=96), width="stretch")
    lines = [_score_line(name, scores.get(cell), truth[cell], i) for name in result.cams]
    st.caption("  \n".join(line for line in lines if line))
    if any(bool(result.empty[name][i]) for name in result.empty):
        st.caption(":material/warning: a map here carries no signal")
    if st.button("Open in explorer", key=f"open:{layer}:{method}", type="tertiary",
                 icon=":material/open_in_new:"):  # fmt: skip
        _open_in_explorer(model, inputs, layer, method, target)


def _score_line(name: str, scores: dict | None, truth: dict, i: int) -> str:
    """``texture 0.08 · pointing ✓ · energy 45%`` (the parts that exist)."""
    parts = []
    if scores is not None and name in scores:
        parts.append(f"{float(scores[name][i]):.2f}")
    entry = truth.get(name)
    if entry is not None and entry["pointing_game"][i] is not None:
        hit = "✓" if entry["pointing_game"][i] else "✗"
        parts.append(f"pointing {hit} · energy {entry['energy_in_mask'][i]:.0%}")
    return f"{name} " + " · ".join(parts) if parts else ""


def _open_in_explorer(model: str, inputs: Inputs, layer: str, method: str, target) -> None:
    """Show this cell in the explorer: its layer, method and target, on the same samples (the
    explorer's own state keys; it writes them into the URL itself)."""
    st.session_state[f"layer:{model}"] = layer
    # The explorer may open on each modality's branch; a cell is one layer (as a picked row).
    st.session_state[f"layer_mode_next:{model}"] = explorer.ONE_LAYER
    st.session_state[explorer.METHOD_KEY] = method
    st.session_state[explorer.TARGET_KEY] = explorer.PREDICTED if target is None else target
    if inputs.samples:
        st.session_state[explorer.SAMPLES_KEY] = list(inputs.samples)
    st.switch_page(EXPLORER_PAGE)


# --------------------------------------------------------------------------------------- table
def _show_table(model, inputs, grid, scores, truth, view, target) -> None:
    """Every cell's scores as a sortable table; a row selects the cell to inspect."""
    i, metric = view["sample"], view["metric"]
    rows = []
    for (layer, method), result in grid.items():
        row: dict[str, Any] = {"layer": layer, "method": method}
        for name in result.cams:
            if (layer, method) in scores and name in scores[(layer, method)]:
                row[f"{name} {metric}"] = float(scores[(layer, method)][name][i])
        for name, entry in truth[(layer, method)].items():
            if entry["pointing_game"][i] is not None:
                row[f"{name} pointing"] = bool(entry["pointing_game"][i])
                row[f"{name} energy"] = float(entry["energy_in_mask"][i])
        rows.append(row)
    st.subheader("Scores", anchor=False)
    hint = f"{_metric_hint(metric)}. " if metric != NO_METRIC else ""
    st.caption(hint + "Click a column header to sort.")
    st.dataframe(
        pd.DataFrame(rows), key=f"compare_table:{model}", hide_index=True,
        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in rows[0]
                       if c.endswith((metric, "energy"))},
    )  # fmt: skip
    cells = list(grid)
    chosen = st.selectbox(
        "Inspect a cell (click its image to read the map's value at a point)",
        [None, *range(len(cells))],
        key=f"compare_inspect:{model}",
        format_func=lambda k: "—" if k is None else f"{cells[k][1]} at {cells[k][0]}",
    )
    if chosen is not None:
        _inspect(model, inputs, grid, cells[chosen], view, target)


def _inspect(model, inputs, grid, cell, view, target) -> None:
    """One cell, large: click a point to read the map's value there."""
    from streamlit_image_coordinates import streamlit_image_coordinates

    i, (layer, method) = view["sample"], cell
    result = grid[cell]
    st.subheader(f"{method} at `{layer}`", anchor=False)
    columns = st.columns(len(result.cams))
    maps = {name: grid_scale({cell: result}, name, False)[0][cell] for name in result.cams}
    for column, name in zip(columns, result.cams):
        with column:
            drawn = blend(result.display[name][i : i + 1], maps[name][i : i + 1],
                          view["colormap"], 0.5)[0]  # fmt: skip
            click = streamlit_image_coordinates(
                drawn, key=f"inspect:{layer}:{method}:{name}", width=256, cursor="crosshair"
            )
            if click is None:
                st.caption(f"{name}: click a point to read the map there")
                continue
            height, width = drawn.shape[:2]
            point = (click["x"] * width / click["width"], click["y"] * height / click["height"])
            value = value_at(maps[name][i], point)
            text = f"{name} at ({point[0]:.0f}, {point[1]:.0f}): map {value:.3f}"
            if name in result.raw:
                raw = value_at(result.raw[name][i], point, size=(height, width))
                text += f" · raw {raw:.4g}"
            st.caption(text)
    if st.button("Open in explorer", key="open_inspected", icon=":material/open_in_new:"):
        _open_in_explorer(model, inputs, layer, method, target)
