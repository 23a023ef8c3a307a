"""Every public call leaves the model as it found it: state_dict bytes, training flags,
requires_grad, .grad and hook counts hashed around each call, failing calls included.

RELIABILITY row 3, for the whole public surface of Explainer (issue 12).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from cam_core import Explainer
from cam_core.errors import CamError
from tests.conftest import hook_count, state_hash, three_input_batch


def _fingerprint(model: torch.nn.Module) -> tuple:
    return (
        state_hash(model),
        tuple(m.training for m in model.modules()),
        tuple(p.requires_grad for p in model.parameters()),
        tuple(p.grad is None for p in model.parameters()),
        hook_count(model),
    )


def _bad_inputs():
    inputs = three_input_batch(1)
    inputs["rgb"] = inputs["rgb"].clone()
    inputs["rgb"][0, 0, 0, 0] = float("nan")
    return inputs


def _cams(e, x):
    return e.explain(x, "fuse").cams


CALLS = {
    # succeeding calls
    "predict": lambda e, x: e.predict(x),
    "layer_tree": lambda e, x: e.layer_tree(x),
    "explain gradcam": lambda e, x: e.explain(x, "fuse", "gradcam"),
    "explain gradcam++ aug_smooth": lambda e, x: e.explain(x, "fuse", "gradcam++", aug_smooth=True),
    "explain scorecam": lambda e, x: e.explain(x, "fuse", "scorecam"),
    "explain ablationcam": lambda e, x: e.explain(x, "fuse", "ablationcam"),
    "explain fullgrad": lambda e, x: e.explain(x, None, "fullgrad"),
    "sweep": lambda e, x: e.sweep(x, ["fuse", "rgb_branch.2"]),
    "attention": lambda e, x: e.attention(x, "attn"),
    "attention_layers": lambda e, x: e.attention_layers(x),
    "branches": lambda e, x: e.branches(x),
    "explain_branches": lambda e, x: e.explain_branches(x),
    "contributions": lambda e, x: e.contributions(x),
    "compare": lambda e, x: e.compare(x, ["fuse"], ["gradcam", "hirescam"]),
    "faithfulness": lambda e, x: e.faithfulness(x, _cams(e, x), steps=4),
    # failing calls (CamError)
    "rollout without self-attention": lambda e, x: e.rollout(x),
    "explain unknown layer": lambda e, x: e.explain(x, "nope"),
    "explain target out of range": lambda e, x: e.explain(x, "fuse", target=99),
    "explain unknown method": lambda e, x: e.explain(x, "fuse", "magic"),
    "explain missing modality": lambda e, x: e.explain({"rgb": x["rgb"]}, "fuse"),
    "explain NaN input": lambda e, x: e.explain(_bad_inputs(), "fuse"),
    "sweep no layers": lambda e, x: e.sweep(x, []),
    "attention not attention": lambda e, x: e.attention(x, "fuse"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_public_call_leaves_model_state_unchanged(call, three_net, three_modalities):
    three_net.train()  # a flag the explainer must switch off and back on
    three_net.fuse.weight.requires_grad_(False)  # a frozen parameter stays frozen
    explainer = Explainer(three_net, three_modalities, device="cpu")
    inputs = three_input_batch(1)
    before = _fingerprint(three_net)
    with contextlib.suppress(CamError):  # failing calls fail with a CamError, nothing else
        CALLS[call](explainer, inputs)
    assert _fingerprint(three_net) == before


def test_fault_inside_scorecam_leaves_model_state_unchanged(three_net, three_modalities):
    """A model that raises half-way through a perturbation run (a fault, not an input error)."""
    three_net.train()
    explainer = Explainer(three_net, three_modalities, device="cpu")
    calls = []

    def fail_third(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected fault")

    handle = three_net.fuse.register_forward_pre_hook(fail_third)
    before = _fingerprint(three_net)
    try:
        with pytest.raises(RuntimeError, match="injected fault"):
            explainer.explain(three_input_batch(1), "fuse", "scorecam")
        assert _fingerprint(three_net) == before
    finally:
        handle.remove()
