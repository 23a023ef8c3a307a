"""Reading attention and rolling it out, against one plain forward of the same model.

    python bench/attention_speed.py [--repeats 3]

Models: the demo (three 64 px inputs, cross-attention ``fusion.attn``) on its four bundled
samples, and torchvision's vit_b_16, timm's vit_tiny_patch16_224 and a Hugging Face ViT (random
weights, 224 px, batch 1). For each: one forward (``Explainer.predict``), ``Explainer.attention``
of one layer (one forward with the weights read, plus the perturbation runs that find which
tokens are whose, stopped at that layer), ``Explainer.rollout`` over every self-attention layer,
and the token grids found. Medians of ``--repeats`` runs; this machine is shared, so compare the
ratios (measured in one run), not the seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).absolute().parents[1]
sys.path.insert(0, str(ROOT))

from cam_core import CamError, Explainer, Modality  # noqa: E402


def _median(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _grids(segments) -> str:
    return ", ".join(f"{s.modality or 'tokens'} {s.height}x{s.width}@{s.start}" for s in segments)


def _models() -> list[tuple[str, Explainer, dict, str]]:
    """(name, explainer, inputs, layer to read) per model; random weights except the demo's."""
    import timm
    import torchvision
    import transformers

    from cam_core import demo
    from cam_core.images import load_image
    from cam_core.session import list_samples

    explainer = demo.load_explainer(device="cpu")
    samples = list_samples(demo.SAMPLES_DIR, explainer.names).values()
    inputs = {
        m.name: [load_image(files[m.name], channels=m.channels) for files in samples]
        for m in explainer.modalities
    }
    torch.manual_seed(0)
    image = {"image": torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))}
    one = [Modality("image", size=(224, 224))]
    vit = torchvision.models.vit_b_16(weights=None)
    tiny = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    config = transformers.ViTConfig(
        hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
        image_size=224, patch_size=16,
    )  # fmt: skip
    hf = transformers.ViTForImageClassification(config)  # sdpa: weights recomputed from q, k
    by_keyword = [Modality("image", size=(224, 224), arg="pixel_values")]
    return [
        ("demo (4 samples)", explainer, inputs, "fusion.attn"),
        ("torchvision vit_b_16", Explainer(vit, one, device="cpu"), image,
         "encoder.layers.encoder_layer_11.self_attention"),
        ("timm vit_tiny_patch16_224", Explainer(tiny, one, device="cpu"), image, "blocks.11.attn"),
        ("HF ViT (sdpa, vit_tiny sizes)", Explainer(hf, by_keyword, device="cpu"), image,
         "vit.layers.11.attention"),
    ]  # fmt: skip


def _measure(name: str, explainer: Explainer, inputs: dict, layer: str, repeats: int) -> None:
    batch = explainer.prepare(inputs)
    explainer.attention_layers(batch)  # the layer tree, once (cached by the Explainer)
    result = explainer.attention(batch, layer)  # warm-up
    forward = _median(lambda: explainer.predict(batch), repeats)
    read = _median(lambda: explainer.attention(batch, layer), repeats)
    try:
        rolled = explainer.rollout(batch)
    except CamError as exc:
        roll_text = f"{'—':>9} {'—':>6}"
        note = f"rollout: {str(exc).split(':')[0]}"
    else:
        roll = _median(lambda: explainer.rollout(batch), repeats)
        roll_text = f"{roll * 1000:7.0f}ms {roll / forward:5.1f}x"
        note = f"rollout of {len(rolled.layers)} layers, grid {rolled.raw.shape[1:]}"
    print(
        f"{name:30} {forward * 1000:7.0f}ms {read * 1000:8.0f}ms {read / forward:5.1f}x {roll_text}"
    )
    queries, keys = _grids(result.query_segments), _grids(result.key_segments)
    print(f"    {layer} ({result.kind}, {result.heads} heads): queries {queries}; keys {keys}")
    print(f"    {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# torch threads {torch.get_num_threads()}, medians of {args.repeats}")
    print(f"{'model':30} {'forward':>9} {'attention':>10} {'ratio':>6} {'rollout':>9} {'ratio':>6}")
    for name, explainer, inputs, layer in _models():
        _measure(name, explainer, inputs, layer, args.repeats)


if __name__ == "__main__":
    main()
