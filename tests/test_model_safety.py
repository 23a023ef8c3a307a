"""The shared model is left exactly as it was: hooks, weights, flags, gradients, submodules."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cam_core import CamError, Explainer, LayerError, ResourceError, TargetError
from tests.conftest import hook_count, snapshot, three_input_batch


def _assert_untouched(model, before, hooks_before, training=True):
    assert hook_count(model) == hooks_before
    after = snapshot(model)
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]), key
    assert all(m.training is training for m in model.modules())


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "ablationcam", "shapleycam", "fullgrad"])
def test_no_hooks_left_and_model_unchanged_after_success(method, three_net, three_modalities):
    three_net.train()  # the user's flag must survive grad-cam's model.eval()
    before, hooks = snapshot(three_net), hook_count(three_net)
    explainer = Explainer(three_net, three_modalities, device="cpu")
    explainer.explain(three_input_batch(1), "attn", method)
    _assert_untouched(three_net, before, hooks)
    assert all(p.grad is None for p in three_net.parameters())
    assert all(p.requires_grad for p in three_net.parameters())


def test_no_hooks_left_after_failed_explain(three_net, three_modalities):
    three_net.train()
    before, hooks = snapshot(three_net), hook_count(three_net)
    explainer = Explainer(three_net, three_modalities, device="cpu")
    with pytest.raises(TargetError):
        explainer.explain(three_input_batch(1), "fuse", target=99)
    _assert_untouched(three_net, before, hooks)
    with pytest.raises(LayerError):
        explainer.explain(three_input_batch(1), "head")  # fails inside the forward hook
    _assert_untouched(three_net, before, hooks)


def test_existing_grads_and_frozen_parameters_are_kept(three_net, three_modalities):
    for p in three_net.rgb_branch.parameters():
        p.requires_grad_(False)
    marker = torch.full_like(three_net.head.weight, 7.0)
    three_net.head.weight.grad = marker
    Explainer(three_net, three_modalities, device="cpu").explain(three_input_batch(1), "rgb_branch")
    assert three_net.head.weight.grad is marker
    assert three_net.fuse.weight.grad is None
    assert not any(p.requires_grad for p in three_net.rgb_branch.parameters())
    assert three_net.head.weight.requires_grad


def test_error_inside_ablationcam_leaves_no_ablation_layer(
    three_net, three_modalities, monkeypatch
):
    from pytorch_grad_cam.ablation_layer import AblationLayer

    modules_before = dict(three_net.named_modules())
    hooks = hook_count(three_net)

    def broken(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    monkeypatch.setattr(AblationLayer, "set_next_batch", broken)
    explainer = Explainer(three_net, three_modalities, device="cpu")
    with pytest.raises(ResourceError, match="out of memory") as info:
        explainer.explain(three_input_batch(1), "rgb_branch", "ablationcam")
    assert "next request can run" in str(info.value)
    assert dict(three_net.named_modules()).keys() == modules_before.keys()
    assert all(m is modules_before[k] for k, m in three_net.named_modules())
    assert not any(isinstance(m, AblationLayer) for m in three_net.modules())
    assert hook_count(three_net) == hooks
    monkeypatch.undo()
    result = explainer.explain(three_input_batch(1), "rgb_branch", "ablationcam")
    assert result.cams["rgb"].max() > 0.99  # the next request works


def test_out_of_memory_in_forward_is_reported_and_next_request_works(
    three_net, three_modalities, monkeypatch
):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    calls = {"n": 0}
    original = type(three_net.fuse).forward

    def flaky(self, x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 99 GB")
        return original(self, x)

    monkeypatch.setattr(type(three_net.fuse), "forward", flaky)
    with pytest.raises(ResourceError, match="out of memory on cpu"):
        explainer.explain(three_input_batch(1), "fuse")
    assert explainer.explain(three_input_batch(1), "fuse").cams["rgb"].max() > 0.99


def test_other_runtime_errors_are_not_disguised(three_net, three_modalities, monkeypatch):
    def broken(self, x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(type(three_net.fuse), "forward", broken)
    explainer = Explainer(three_net, three_modalities, device="cpu")
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as info:
        explainer.explain(three_input_batch(1), "fuse")
    assert not isinstance(info.value, CamError)
    assert hook_count(three_net) == 0


def test_stop_exception_from_progress_callback_leaves_no_hooks(three_net, three_modalities):
    class StopRun(Exception):  # what Streamlit raises in the script thread on rerun/stop
        pass

    def progress(done, total):
        raise StopRun

    before, hooks = snapshot(three_net), hook_count(three_net)
    explainer = Explainer(three_net, three_modalities, device="cpu")
    with pytest.raises(StopRun):
        explainer.explain(three_input_batch(2), "fuse", "scorecam", progress=progress)
    _assert_untouched(three_net, before, hooks)


def test_import_cam_core_does_not_import_streamlit():
    code = "import sys, cam_core; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
