"""The bundled demo: the shipped model classifies and localizes on fresh data, training runs end
to end and reproducibly, and the generator's masks mean what they say."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cam_core import load_image
from cam_core.demo import (
    CLASSES,
    DEFAULT_LAYER,
    MODALITIES,
    SAMPLES_DIR,
    WEIGHTS,
    build_model,
    derive_modalities,
    generate,
    load_explainer,
)
from cam_core.demo import data as demo_data
from cam_core.demo.train import SAMPLE_PLAN, main
from cam_core.session import list_samples

FRESH_SEED = 777  # not a seed training, its validation or its samples use
NAMES = [m.name for m in MODALITIES]
ALIGNED = [m.name for m in MODALITIES if m.aligned]


@pytest.fixture(scope="module")
def explainer():
    return load_explainer(device="cpu")


def pointing_game(cams: np.ndarray, masks: np.ndarray) -> float:
    """Fraction of samples with a region whose CAM maximum lies inside it."""
    hits = [mask.flat[int(np.argmax(cam))] for cam, mask in zip(cams, masks) if mask.any()]
    return float(np.mean(hits))


# --- the generator -------------------------------------------------------------------------------


def test_generate_gives_uint8_modalities_labels_and_bool_masks():
    batch = generate(7, seed=3)
    assert list(batch.inputs) == NAMES
    assert batch.inputs["rgb"].shape == (7, 64, 64, 3)
    assert batch.inputs["frequency"].shape == batch.inputs["texture"].shape == (7, 64, 64)
    assert all(images.dtype == np.uint8 for images in batch.inputs.values())
    assert batch.labels.shape == (7,) and batch.labels.dtype == np.int64
    assert set(batch.labels) <= set(range(len(CLASSES)))
    assert batch.masks.shape == (7, 64, 64) and batch.masks.dtype == bool


def test_generate_is_seeded_and_balanced():
    a, b, c = generate(9, seed=5), generate(9, seed=5), generate(9, seed=6)
    assert all(np.array_equal(a.inputs[k], b.inputs[k]) for k in NAMES)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.inputs["rgb"], c.inputs["rgb"])
    assert np.bincount(a.labels, minlength=len(CLASSES)).tolist() == [3, 3, 3]


def test_masks_are_empty_exactly_for_authentic_images():
    batch = generate(30, seed=11)
    has_region = batch.masks.any(axis=(1, 2))
    assert np.array_equal(has_region, batch.labels != CLASSES.index("authentic"))
    area = batch.masks[has_region].mean(axis=(1, 2))
    assert area.min() > 0.02 and area.max() < 0.2


def test_the_class_only_changes_pixels_inside_the_mask():
    images = {}
    for label in range(len(CLASSES)):
        images[label], mask = demo_data._sample(np.random.default_rng(42), label, 64)
        if mask.any():
            region = mask
    for label in (1, 2):
        assert np.array_equal(images[label][~region], images[0][~region])
        assert not np.array_equal(images[label][region], images[0][region])


def test_derive_modalities_recomputes_the_generated_maps():
    batch = generate(4, seed=2)
    derived = derive_modalities(batch.inputs["rgb"])
    for name in ("frequency", "texture"):
        assert np.array_equal(derived[name], batch.inputs[name])
    single = derive_modalities(batch.inputs["rgb"][0])
    assert np.array_equal(single["texture"], batch.inputs["texture"][0])


# --- the shipped model ---------------------------------------------------------------------------


def test_shipped_weights_are_a_small_state_dict():
    assert WEIGHTS.stat().st_size <= 5 * 2**20
    state = torch.load(WEIGHTS, weights_only=True, map_location="cpu")
    assert set(state) == set(build_model(weights=False).state_dict())
    assert sum(p.numel() for p in build_model().parameters()) <= 2_000_000


def test_default_layer_is_a_ready_cam_target(explainer):
    rows = {row.path: row for row in explainer.layer_tree()}
    assert rows[DEFAULT_LAYER].ready, rows[DEFAULT_LAYER].reason
    assert explainer.default_layer == DEFAULT_LAYER and explainer.classes == list(CLASSES)


def test_shipped_model_classifies_and_localizes_fresh_samples(explainer):
    fresh = generate(32, seed=FRESH_SEED)
    result = explainer.explain(
        fresh.inputs, layer=DEFAULT_LAYER, method="gradcam", target=fresh.labels.tolist()
    )
    accuracy = float((result.probabilities.argmax(axis=1) == fresh.labels).mean())
    assert accuracy >= 0.9
    for name in ALIGNED:
        assert result.cams[name].shape == (32, 64, 64)
        assert pointing_game(result.cams[name], fresh.masks) >= 0.8, name


def test_samples_are_complete_and_classified_as_labelled(explainer):
    samples = list_samples(SAMPLES_DIR, NAMES)
    assert list(samples) == [name for name, _ in SAMPLE_PLAN]
    for name, files in samples.items():
        truth = json.loads((SAMPLES_DIR / name / "truth.json").read_text())
        mask = load_image(SAMPLES_DIR / name / "mask.png", channels=1)[..., 0] > 127
        assert mask.any() == (truth["class"] != "authentic")
        images = {m.name: load_image(files[m.name], channels=m.channels) for m in MODALITIES}
        assert all(image.shape[:2] == (64, 64) for image in images.values())
        probabilities = explainer.predict({k: v[None] for k, v in images.items()})
        assert CLASSES[int(probabilities.argmax())] == truth["class"], name


# --- training ------------------------------------------------------------------------------------


def test_training_runs_end_to_end_and_is_reproducible(tmp_path, capsys):
    args = ["--steps", "3", "--batch-size", "8", "--pool", "48", "--validation", "16"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "3/3" in capsys.readouterr().err  # the progress bar ran to the end
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0

    first = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    second = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    assert first.keys() == set(build_model(weights=False).state_dict())
    assert all(torch.equal(first[k], second[k]) for k in first)

    summary = json.loads((tmp_path / "a" / "training.json").read_text())
    assert summary["steps"] == 3 and 0.0 <= summary["held_out_accuracy"] <= 1.0
    assert list(list_samples(tmp_path / "a" / "samples", NAMES)) == [n for n, _ in SAMPLE_PLAN]
