"""Hugging Face and timm models as they come: our CAM against grad-cam's documented usage.

    python bench/ecosystem_models.py [--out FILE.md]

Random weights, nothing downloaded, batch 2, Grad-CAM.  For each model and layer: how the
layer tree reads the output (no reshape given) and the largest difference from grad-cam run with
the wrapper and ``reshape_transform`` its documentation prescribes (tests/references.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).absolute().parents[1]
sys.path.insert(0, str(ROOT))

from cam_core import Explainer, Modality, load_spec  # noqa: E402
from tests.references import channels_last, drop_class_token, grad_cam, tap  # noqa: E402

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _hf_vit() -> Explainer:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(  # ViT-S/16 sizes
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        num_labels=10,
    )
    model = ViTForImageClassification(config).eval()
    pixels = Modality("pixel_values", arg="pixel_values", size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    return Explainer(model, [pixels], device="cpu")


def _timm(name: str, **kwargs) -> Callable[[], Explainer]:
    def build() -> Explainer:
        import timm

        model = timm.create_model(name, pretrained=False, **kwargs).eval()
        return Explainer(model, [Modality("rgb", size=224, **IMAGENET)], device="cpu")

    return build


def _hf_example() -> Explainer:
    return load_spec(ROOT / "examples" / "hf_rgbd_spec.py").build_explainer(device="cpu")


# (label, explainer factory, layer, grad-cam's reshape)
CASES = [
    ("HF ViTForImageClassification (ViT-S/16)", _hf_vit, "vit.layers.11.layernorm_before", 14),
    ("HF two encoders + fusion (examples/hf_rgbd_spec.py)", _hf_example, "fusion", 8),
    ("timm deit_tiny_patch16_224", _timm("deit_tiny_patch16_224"), "blocks.11.norm1", 14),
    ("timm swin_tiny_patch4_window7_224", _timm("swin_tiny_patch4_window7_224"), "layers.3", None),
    (
        "timm convnext_tiny (layer scale 1)",
        _timm("convnext_tiny", ls_init_value=1.0),
        "stages.3.blocks.2.norm",
        None,
    ),
    ("timm convnext_tiny (layer scale 1)", None, "stages.3", "nchw"),
]


def _reshape(kind: int | str | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if isinstance(kind, int):
        return drop_class_token(kind, kind)
    return None if kind == "nchw" else channels_last


def _reference(
    explainer: Explainer, layer: str, inputs: dict, targets: list, kind: int | str | None
) -> np.ndarray:
    """grad-cam's map, as its documentation has users run it."""
    module = explainer.model.get_submodule(layer)
    target = tap(module)  # grad-cam cannot hook a tuple output
    try:
        return grad_cam(
            explainer.model, explainer.modalities, target, inputs, targets, _reshape(kind)
        )
    finally:
        del module.forward


def measure(explainer: Explainer, layer: str, kind: int | str | None) -> str:
    """The last three cells of ``layer``'s markdown row."""
    g = torch.Generator().manual_seed(1)
    inputs = {
        m.name: torch.randn(2, m.channels, *m.size, generator=g) for m in explainer.modalities
    }
    row = next(r for r in explainer.layer_tree(inputs) if r.path == layer)
    result = explainer.explain(inputs, layer=layer)
    expected = _reference(explainer, layer, inputs, result.targets, kind)
    diff = max(float(np.abs(result.cams[m] - expected).max()) for m in explainer.names)
    params = sum(p.numel() for p in explainer.model.parameters()) / 1e6
    return f"{params:.1f} M | {row.reason} | {diff:.1e} |"


def _versions() -> str:
    import timm
    import transformers

    return f"transformers {transformers.__version__}, timm {timm.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    lines = [
        "| model | layer | parameters | read as (no reshape given) | max \\|ours - grad-cam\\| |",
        "|---|---|---|---|---|",
    ]
    explainer = None
    for label, build, layer, kind in CASES:
        explainer = build() if build is not None else explainer
        lines.append(f"| {label} | `{layer}` | " + measure(explainer, layer, kind))
        print(lines[-1], flush=True)
    footer = (
        f"\nMeasured with torch {torch.__version__}, {_versions()}, random weights, batch 2, "
        "Grad-CAM."
    )
    print(footer)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n" + footer + "\n")


if __name__ == "__main__":
    main()
