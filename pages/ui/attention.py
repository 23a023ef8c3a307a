"""The attention page: where one query position attends in every key modality, per head; and,
for self-attention stacks (ViT-style), attention rollout.

Thin: choices are gathered here; reading the weights, token grids, heatmaps and rollout are
``cam_core``'s (``Explainer.attention_layers``, ``Explainer.attention``, ``Explainer.rollout``).
Weights are read once per (model, input content, layer) and kept in the model's shared result
cache; the query, the head, the colormap and the blend only re-draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st
from streamlit_image_coordinates import streamlit_image_coordinates

from cam_core import AttentionResult, CamError, RolloutResult
from cam_core.overlay import COLORMAPS, overlay
from cam_core.rollout import HEAD_FUSIONS
from cam_core.session import IMAGE_SUFFIXES, cam_key
from pages.ui import common

__all__ = ["render"]

HEAD_CHOICES = ["mean", "max"]
#: Heads per row of the all-heads grid.
GRID_COLUMNS = 6


@dataclass
class Inputs:
    """One sample: an image per modality, with its content hash (the cache key)."""

    images: dict[str, list[np.ndarray]] = field(default_factory=dict)
    digests: dict[str, list[str]] = field(default_factory=dict)


def render() -> None:
    """The attention page."""
    model = common.current_model()
    explainer = common.current_explainer()
    st.title("Attention")
    st.caption(
        f"Model **{model}** · where does one position look? Pick an attention layer and click a "
        "place on the query image: the maps show where it attends in every key modality."
    )
    try:
        layers = _attention_layers(explainer)
    except CamError as exc:
        st.error(f"The model's layers could not be traced: {exc}", icon=":material/block:")
        return
    if not layers:
        st.info(
            "This model has no attention layer whose weights can be read: "
            "`nn.MultiheadAttention`, timm `Attention` blocks, or Hugging Face attention (eager "
            "mode, or ViT-style classes).",
            icon=":material/info:",
        )
        return
    inputs = _inputs(model, explainer)
    colormap, weight = _view_controls()
    layer_key = f"attn_layer:{model}"
    if st.session_state.get(layer_key) not in layers:
        st.session_state[layer_key] = layers[0]
    layer = st.selectbox(
        "Attention layer",
        layers,
        key=layer_key,
        help="Every nn.MultiheadAttention, timm Attention and Hugging Face attention layer.",
    )
    layer_slot = st.container()
    if inputs is None:
        st.info("Choose a sample, or upload one image per modality, to see the attention.")
        return
    result = _attention(model, explainer, inputs, layer, layer_slot)
    if result is not None:
        _query_view(model, result, colormap, weight)
    _rollout_view(model, explainer, inputs, colormap, weight)


# --------------------------------------------------------------------------------------- inputs
def _attention_layers(explainer: Any) -> list[str]:
    # The Explainer keeps its layer tree: only the first call runs the model.
    with st.spinner("Looking for attention layers…"):
        return explainer.attention_layers()


def _inputs(model: str, explainer: Any) -> Inputs | None:
    """A bundled sample, or one uploaded image per modality (uploads take over when complete)."""
    modalities = explainer.modalities
    samples = common.sample_sets(model)
    failed = False
    with st.container(border=True):
        chosen = None
        if samples:
            uploading = any(
                st.session_state.get(f"attn_upload:{model}:{m.name}") for m in modalities
            )
            chosen = st.selectbox(
                "Sample",
                list(samples),
                key=f"attn_sample:{model}",
                disabled=uploading,
                help="Remove your uploads to use the bundled samples again." if uploading else None,
            )
        with st.expander("Upload your own (one image per modality)", expanded=not samples):
            columns = st.columns(len(modalities))
            files: dict[str, Any] = {}
            for column, modality in zip(columns, modalities):
                upload = column.file_uploader(
                    f"**{modality.name}**",
                    type=list(IMAGE_SUFFIXES),
                    key=f"attn_upload:{model}:{modality.name}",
                    max_upload_size=int(common.upload_limit_mb()),
                )
                if upload is None:
                    continue
                decoded = common.decode_once(
                    f"attn_decoded:{model}", upload, modality.channels, modality.name
                )
                if decoded.error:
                    # Under its own uploader; the other uploaders stay (and keep their files).
                    column.error(f"**{decoded.name}**: {decoded.error}", icon=":material/block:")
                    failed = True
                    continue
                files[modality.name] = decoded
        if failed:
            return None
        if files:
            missing = [m.name for m in modalities if m.name not in files]
            if missing:
                st.warning(
                    f"Upload an image for {', '.join(missing)} too (every modality is needed).",
                    icon=":material/warning:",
                )
                return None
        elif chosen is not None:
            files = {
                m.name: common.sample_image(samples[chosen][m.name], m.channels) for m in modalities
            }
            broken = [f for f in files.values() if f.error]
            if broken:
                st.error(f"Sample {broken[0].name}: {broken[0].error}", icon=":material/block:")
                return None
        else:
            return None
    return Inputs(
        images={n: [f.image] for n, f in files.items()},
        digests={n: [f.digest] for n, f in files.items()},
    )


def _view_controls() -> tuple[str, float]:
    """Sidebar: colormap and blend; changing them only re-draws."""
    sidebar = st.sidebar
    sidebar.header("View")
    names = list(COLORMAPS)
    colormap = sidebar.selectbox(
        "Colormap", names, index=names.index("jet") if "jet" in names else 0, key="attn_colormap"
    )
    weight = sidebar.slider(
        "image_weight", 0.0, 1.0, 0.5, 0.05, key="attn_image_weight",
        help="Share of the image in the blend: 0 = heatmap only.",
    )  # fmt: skip
    return colormap, float(weight)


# -------------------------------------------------------------------------------------- compute
def _cached(model: str, explainer: Any, inputs: Inputs, what: str, options: dict, compute):
    """``compute()`` once per (model, input content, what, options), shared by all sessions; a
    CamError is kept too (returned, not raised) so a rerun does not redo a failing forward."""
    key = cam_key(
        model, inputs.digests, layer=what, method="attention", target=None, options=options
    )
    cache = common.result_cache(explainer)
    found = cache.get(key)
    if found is None:
        try:
            found = compute()
        except CamError as exc:
            found = exc
        cache.put(key, found)
    return found


def _attention(
    model: str, explainer: Any, inputs: Inputs, layer: str, slot: Any
) -> AttentionResult | None:
    with st.spinner(f"Reading the attention of `{layer}`…"):
        found = _cached(
            model, explainer, inputs, layer, {}, lambda: explainer.attention(inputs.images, layer)
        )
    if isinstance(found, CamError):
        slot.error(str(found), icon=":material/block:")
        return None
    return found


# ---------------------------------------------------------------------------------------- views
def _head_label(head: Any) -> str:
    return f"head {head}" if isinstance(head, int) else f"{head} of the heads"


def _query_view(model: str, result: AttentionResult, colormap: str, weight: float) -> None:
    """The query image (click to move the query), the key maps of the chosen head, all heads."""
    choices = result.query_modalities
    if not choices:
        st.warning(
            f"The query tokens of `{result.layer}` form no grid of any input, so a query cannot "
            "be picked on an image.",
            icon=":material/warning:",
        )
        return
    where = f"{model}:{result.layer}"
    query_modality = choices[0]
    if len(choices) > 1:
        query_modality = st.radio(
            "Query modality", choices, horizontal=True, key=f"attn_query_modality:{where}"
        )
    grid = result.query_segment(query_modality)
    query_key = f"attn_query:{where}:{query_modality}"
    click_key = f"attn_click:{where}:{query_modality}"
    query = st.session_state.get(query_key, (grid.height // 2, grid.width // 2))
    click = st.session_state.get(click_key)
    if click and click != st.session_state.get(f"{click_key}:done"):
        # The click of this rerun: read before drawing, so the outline shows where it landed.
        image = result.query_image(query_modality, query)
        shown = (click.get("width") or image.shape[1], click.get("height") or image.shape[0])
        query = result.query_at(query_modality, click["x"], click["y"], shown)
        st.session_state[f"{click_key}:done"] = click
    st.session_state[query_key] = query

    head_options: list[Any] = HEAD_CHOICES + list(range(result.heads))
    head = st.segmented_control(
        "Head",
        head_options,
        default="mean",
        key=f"attn_head:{where}",
        format_func=lambda h: f"{h}" if isinstance(h, int) else h,
        help="One head, or the mean / max over the heads.",
    )
    head = "mean" if head is None else head
    maps = result.key_heatmaps(query, head=head, query_modality=query_modality)
    columns = st.columns(1 + len(maps))
    with columns[0]:
        streamlit_image_coordinates(
            result.query_image(query_modality, query), key=click_key, cursor="crosshair"
        )
        st.caption(
            f"**{query_modality}** · query ({query[0]}, {query[1]}) of its {grid.height}×"
            f"{grid.width} grid · click to move it"
        )
    for column, (name, heat) in zip(columns[1:], maps.items()):
        column.image(
            overlay(result.display[name][0], heat, colormap, weight),
            caption=f"{name} · keys · {_head_label(head)}",
            width="stretch",
            output_format="PNG",
        )
    st.caption(
        f"`{result.layer}` · {result.kind} · {result.heads} heads · each map is min-max scaled "
        "on its own (the brightest key is the most attended in that modality)."
    )
    with st.expander(f"All {result.heads} heads", expanded=True):
        per_head = [
            result.key_heatmaps(query, head=h, query_modality=query_modality)
            for h in range(result.heads)
        ]
        for name in maps:
            st.markdown(f"**{name}**")
            for start in range(0, result.heads, GRID_COLUMNS):
                row = st.columns(GRID_COLUMNS)
                for column, h in zip(row, range(start, min(start + GRID_COLUMNS, result.heads))):
                    column.image(
                        overlay(result.display[name][0], per_head[h][name], colormap, weight),
                        caption=f"head {h}",
                        width="stretch",
                        output_format="PNG",
                    )


def _rollout_view(model: str, explainer: Any, inputs: Inputs, colormap: str, weight: float) -> None:
    st.subheader("Attention rollout", anchor=False)
    layers = _cached(
        model, explainer, inputs, "self-attention", {},
        lambda: explainer.self_attention_layers(inputs.images),
    )  # fmt: skip
    if isinstance(layers, CamError):
        st.error(str(layers), icon=":material/block:")
        return
    if not layers:
        st.info(
            "This model has no self-attention layer (its attention layers attend from one set "
            "of tokens to another): rollout applies to ViT-style stacks. The maps above are "
            "what its attention shows.",
            icon=":material/info:",
        )
        return
    st.caption(
        "Abnar & Zuidema (2020): every self-attention layer's map (heads fused, 0.5·A + 0.5·I, "
        "rows renormalized) multiplied from the first layer to the last; the class token's row "
        "over the patches."
    )
    chosen = st.multiselect(
        "Self-attention layers",
        layers,
        key=f"attn_rollout_layers:{model}",
        placeholder="all self-attention layers",
        help="Empty: every self-attention layer, in forward order. Layers of one stack only "
        "(the same tokens); cross-attention layers cannot be rolled out.",
    )
    left, right = st.columns(2)
    fusion = left.selectbox("Head fusion", HEAD_FUSIONS, key=f"attn_rollout_fusion:{model}")
    discard = right.slider(
        "Discard the lowest weights", 0.0, 0.9, 0.0, 0.05, key=f"attn_rollout_discard:{model}",
        help="Share of each layer's lowest fused weights set to 0 before the product.",
    )  # fmt: skip
    picked = sorted(chosen, key=layers.index) or None
    options = {
        "head_fusion": fusion,
        "discard_ratio": float(discard),
        "layers": tuple(picked or ()),
    }
    with st.spinner("Rolling out the attention…"):
        found = _cached(
            model, explainer, inputs, "rollout", options,
            lambda: explainer.rollout(inputs.images, picked, fusion, float(discard)),
        )  # fmt: skip
    if isinstance(found, CamError):
        st.info(str(found), icon=":material/info:")
        return
    result: RolloutResult = found
    columns = st.columns(len(result.cams))
    for column, name in zip(columns, result.cams):
        column.image(
            result.overlay(name, colormap, weight)[0],
            caption=f"{name} · rollout · {fusion}"
            + (f", {discard:.0%} discarded" if discard else ""),
            width="stretch",
            output_format="PNG",
        )
    st.caption(
        f"{len(result.layers)} self-attention layers, `{result.layers[0]}` … "
        f"`{result.layers[-1]}`" + "".join(f" · {n}" for n in result.notices)
    )
