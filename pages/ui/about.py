"""About CAM Explorer, and how to explore your own model."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.ui import common

SPEC_EXAMPLE = """\
# my_spec.py — a Python file on the server, never uploaded through the browser
from cam_core import Modality

MODALITIES = [                      # the order of forward()'s positional arguments
    Modality("texture", channels=1, size=224),
    Modality("frequency", channels=1, size=224, aligned=False),
    Modality("rgb", size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
]
CLASSES = ["real", "fake"]          # optional
DEFAULT_LAYER = "fusion"            # optional: the layer the explorer opens on
CHECKPOINT = "checkpoints/best.pt"  # optional: a state_dict, relative to this file


def build_model():                  # returns the nn.Module
    from my_project import ForgeryNet

    return ForgeryNet()
"""

PYTHON_EXAMPLE = """\
from cam_core import Explainer, Modality

explainer = Explainer(model, modalities=[Modality("rgb"), Modality("depth", channels=1)])
result = explainer.explain({"rgb": "a.png", "depth": "a_depth.png"}, layer="fusion")
result.overlay("rgb", colormap="jet", image_weight=0.5)   # uint8 (N, H, W, 3)
"""


def render() -> None:
    """The About page."""
    st.title("About CAM Explorer")
    st.markdown(
        "CAM Explorer shows **where a PyTorch model looks**: Grad-CAM and related heatmaps, "
        "per input modality, for any layer of the model, for any class. It is made for models "
        "with several inputs (RGB + frequency + texture, RGB + depth, image pairs) fused by "
        "attention — the model is never edited.\n\n"
        "**In the explorer**: upload one image per modality (several files make a batch, paired "
        "by order), pick a layer in the table (rows whose *CAM target* box is unchecked cannot "
        "be targets; the note says why), a method and a target class, then tune colormap and "
        "image weight — those only re-blend the cached heatmaps. Download one overlay as PNG, "
        "or everything as a ZIP with a `settings.json` that records the view."
    )

    st.header("Use your own model", anchor=False)
    st.markdown(
        "Describe the model in a **spec file** and name it when starting the app. Several "
        "`--spec` options (or `CAM_EXPLORER_SPEC=a.py:b.py`) add several models to the "
        "sidebar's model list. Model code is loaded only from the server side, never from "
        "the browser. The torchvision architectures (resnet18, vit_b_16, swin_t, ...) are in "
        "the list too, with random weights until a checkpoint is loaded: upload a state_dict "
        "(`torch.save(model.state_dict(), 'weights.pt')`) under the sidebar's model list, or "
        "name one with `CHECKPOINT` in a spec file. Whole pickled models are refused, since "
        "loading them could run code."
    )
    st.code(SPEC_EXAMPLE, language="python")
    st.code("streamlit run app.py -- --spec my_spec.py", language="bash")
    st.markdown("The same spec drives the command line:")
    st.code(
        "python -m cam_core explain --spec my_spec.py --input rgb=a.png "
        "--input texture=b.png --input frequency=c.png --layer fusion --out results/",
        language="bash",
    )
    st.markdown("And from Python, without the app:")
    st.code(PYTHON_EXAMPLE, language="python")

    st.header("The current model", anchor=False)
    explainer = common.current_explainer()
    st.dataframe(
        pd.DataFrame(
            {
                "modality": [m.name for m in explainer.modalities],
                "channels": [m.channels for m in explainer.modalities],
                "size (H×W)": [
                    "any" if m.size is None else f"{m.size[0]}×{m.size[1]}"
                    for m in explainer.modalities
                ],
                "spatially aligned": [bool(m.aligned) for m in explainer.modalities],
                "description": [m.description for m in explainer.modalities],
            }
        ),
        hide_index=True,
    )
    st.caption(
        f"Model **{common.current_model()}** · classes: "
        + (", ".join(explainer.classes) if explainer.classes else "unnamed")
        + f" · default layer: `{explainer.default_layer}`"
    )

    st.header("Good to know", anchor=False)
    st.markdown(
        "- **Layers**: 4-D outputs work directly; token outputs `(N, L, C)` are reshaped to a "
        "grid when `L` (or `L-1` with a class token) is a grid; a module called several times "
        "(a shared encoder) has one row per call (`encoder@1` = its second call).\n"
        "- **Methods**: gradient methods explain all modalities with one forward and backward "
        "pass; ScoreCAM and AblationCAM run the model many times per sample (slow on CPU).\n"
        "- **Modalities that are not spatially aligned** (a Fourier spectrum): the heatmap marks "
        "frequencies, not places in the scene.\n"
        "- **Shared server**: one copy of each model serves every user, under a lock; results "
        "are cached by input content, so nobody sees another user's images."
    )
