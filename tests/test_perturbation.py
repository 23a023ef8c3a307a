"""ScoreCAM and AblationCAM sized to the device: copies per call from free memory, halved on
out-of-memory, no prediction forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cam_core.gradcam_runs as runs
from cam_core import Explainer
from tests.conftest import ThreeInputNet, three_input_batch


def _batches_seen(model: ThreeInputNet) -> tuple[list[int], object]:
    seen: list[int] = []
    handle = model.fuse.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    return seen, handle


def _short_of_memory_above(model: ThreeInputNet, limit: int):
    """``fuse`` raises torch's out-of-memory error on batches larger than ``limit``."""

    def hook(_module, args):
        if args[0].shape[0] > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected, batch {args[0].shape[0]})")

    return model.fuse.register_forward_pre_hook(hook)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_out_of_memory_halves_the_copies_and_keeps_the_maps(method, three_modalities):
    torch.manual_seed(0)
    model = ThreeInputNet()
    explainer = Explainer(model, three_modalities, device="cpu")
    inputs = three_input_batch(1, seed=3)
    expected = explainer.explain(inputs, "fuse", method)
    seen, counting = _batches_seen(model)
    short = _short_of_memory_above(model, 3)
    try:
        result = explainer.explain(inputs, "fuse", method)
    finally:
        short.remove()
        counting.remove()
    # 8 channels: batches of 8 and 4 were tried and failed, batches of 2 ran.
    assert {8, 4, 2} <= set(seen) and seen[-1] == 2
    for name in expected.cams:
        np.testing.assert_allclose(result.cams[name], expected.cams[name], atol=1e-6)
    assert result.targets == expected.targets
    np.testing.assert_allclose(result.probabilities, expected.probabilities, atol=1e-6)
    assert any("ran out of memory with" in n and "continued with 2" in n for n in result.notices)
    assert not any("out of memory" in n for n in expected.notices)


def test_copies_per_call_follow_free_memory(three_modalities, monkeypatch):
    torch.manual_seed(0)
    model = ThreeInputNet()
    explainer = Explainer(model, three_modalities, device="cpu")
    inputs = three_input_batch(1, seed=1)
    explainer.explain(inputs, "fuse", "ablationcam")  # measures one copy's memory once
    (per_copy,) = explainer._copy_bytes.values()
    assert per_copy > sum(t.numel() * 4 for t in inputs.values())  # inputs + activations
    monkeypatch.setattr(runs, "free_memory", lambda device: 2 * 3 * per_copy + 1)
    seen, counting = _batches_seen(model)
    try:
        explainer.explain(inputs, "fuse", "ablationcam")
    finally:
        counting.remove()
    # grad-cam's own forward on the sample, then its activation pass, then ablations of 3.
    assert seen == [1, 1, 3, 3, 2]


def test_predicted_class_needs_no_extra_forward(three_modalities):
    torch.manual_seed(0)
    model = ThreeInputNet()
    explainer = Explainer(model, three_modalities, device="cpu")
    inputs = three_input_batch(2, seed=2)
    seen, counting = _batches_seen(model)
    try:
        result = explainer.explain(inputs, "fuse", "ablationcam")
    finally:
        counting.remove()
    assert seen[0] == 1  # no forward of the whole batch to fix the class first
    with torch.no_grad():
        logits = model(*inputs.values())
    assert result.targets == logits.argmax(dim=1).tolist()
    np.testing.assert_allclose(result.probabilities, logits.softmax(dim=1).numpy(), atol=1e-6)
