"""Each modality's own branch: discovery from the autograd graph, branch CAMs, fused notices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import Branch, SharedEncoderNet, ThreeInputNet, hook_count, three_input_batch
from torch import nn

from cam_core import Explainer, LayerError, Modality, metrics
from cam_core.branches import FUSED_NOTICE_START
from cam_core.demo import CLASSES, generate, load_explainer

THREE_BRANCHES = {"texture": "texture_branch", "frequency": "frequency_branch", "rgb": "rgb_branch"}


@pytest.fixture(scope="module")
def demo() -> Explainer:
    return load_explainer(device="cpu")


@pytest.fixture
def three(three_net, three_modalities) -> Explainer:
    return Explainer(three_net, three_modalities, device="cpu")


class EarlyFusionNet(nn.Module):
    """Texture and rgb concatenated channel-wise before the first conv; depth has its own
    branch, and also reaches the head directly (a skip around its branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Branch(4, 8)
        self.depth_branch = Branch(1, 8)
        self.head = nn.Linear(9, 3)

    def forward(self, texture, rgb, depth):
        fused = self.stem(torch.cat([texture, rgb], dim=1)) + self.depth_branch(depth)
        return self.head(torch.cat([fused.mean(dim=(2, 3)), depth.mean(dim=(1, 2, 3))[:, None]], 1))


class ChannelConcatNet(nn.Module):
    """Two one-channel inputs concatenated before any layer: no branches at all."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Branch(2, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, a, b):
        return self.head(self.body(torch.cat([a, b], 1)).mean(dim=(2, 3)))


class Counting(nn.Module):
    """Counts forward passes of ``net`` and backward passes through its logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.forwards = self.backwards = 0

    def forward(self, *args):
        self.forwards += 1
        logits = self.net(*args)
        if logits.requires_grad:
            logits.register_hook(self._backward)
        return logits

    def _backward(self, grad):
        self.backwards += 1


# -- discovery ------------------------------------------------------------------------------------


def test_demo_branches_are_its_three_encoders(demo: Explainer) -> None:
    assert demo.branches() == {
        "rgb": "rgb_branch",
        "frequency": "frequency_branch",
        "texture": "texture_branch",
    }


def test_a_side_road_of_one_modality_is_not_its_branch(demo: Explainer) -> None:
    # fusion.norm_query sees only rgb and runs after rgb_branch, but the residual around the
    # attention bypasses it: rgb_branch is where all of rgb's influence passes.
    demo.branches()
    (scopes,) = demo._scopes.values()
    by_path = {s.path: s for s in scopes}
    assert by_path["fusion.norm_query"].sources == {"rgb"}
    assert not by_path["fusion.norm_query"].carries
    assert by_path["rgb_branch"].carries
    assert by_path["head.features"].sources == {"rgb", "frequency", "texture"}


def test_three_branch_cross_attention_model_branches(three: Explainer) -> None:
    assert three.branches(three_input_batch(1)) == THREE_BRANCHES


def test_branches_are_cached_per_input_size(three: Explainer) -> None:
    three.branches(three_input_batch(1, size=32))
    three.branches(three_input_batch(2, size=32, seed=3))
    assert len(three._scopes) == 1
    assert three.branches(three_input_batch(1, size=48)) == THREE_BRANCHES
    assert len(three._scopes) == 2


def test_each_call_of_a_shared_encoder_is_one_input_s_branch() -> None:
    torch.manual_seed(0)
    explainer = Explainer(SharedEncoderNet(), [Modality("left"), Modality("right")], "cpu")
    inputs = {"left": torch.randn(1, 3, 16, 16), "right": torch.randn(1, 3, 16, 16)}
    assert explainer.branches(inputs) == {"left": "encoder@0", "right": "encoder@1"}


def test_inputs_fused_before_any_layer_have_no_branch() -> None:
    torch.manual_seed(0)
    explainer = Explainer(
        EarlyFusionNet(),
        [Modality("texture", channels=1), Modality("rgb"), Modality("depth", channels=1)],
        "cpu",
    )
    inputs = {
        "texture": torch.randn(1, 1, 16, 16),
        "rgb": torch.randn(1, 3, 16, 16),
        "depth": torch.randn(1, 1, 16, 16),
    }
    # depth also reaches the head around its branch: the deepest layer of depth alone is used.
    assert explainer.branches(inputs) == {"texture": None, "rgb": None, "depth": "depth_branch"}
    result = explainer.explain_branches(inputs)
    assert result.layers == {"depth": "depth_branch"}
    assert not result.cams["texture"].any() and result.empty["texture"].all()
    assert any(
        n.startswith("texture: no CAM-ready layer sees texture alone") for n in result.notices
    )


def test_no_hooks_left_after_branch_discovery(three: Explainer) -> None:
    three.branches(three_input_batch(1))
    assert hook_count(three.model) == 0


# -- branch CAMs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "eigencam"])
def test_explain_branches_equals_explain_at_each_branch(three: Explainer, method: str) -> None:
    inputs = three_input_batch(3)
    result = three.explain_branches(inputs, method, target=[0, 2, 1])
    assert result.layers == THREE_BRANCHES
    for name, layer in THREE_BRANCHES.items():
        reference = three.explain(inputs, layer, method, target=[0, 2, 1])
        np.testing.assert_allclose(result.cams[name], reference.cams[name], atol=1e-4)
        np.testing.assert_allclose(result.raw[name], reference.raw[name], atol=1e-4)
        np.testing.assert_allclose(result.probabilities, reference.probabilities, atol=1e-6)
    assert result.targets == [0, 2, 1]
    # Each modality's map is its own: not one map resized onto every input.
    assert not np.allclose(result.cams["texture"], result.cams["rgb"])


def test_explain_branches_on_the_demo_equals_explain(demo: Explainer) -> None:
    data = generate(4, seed=123)
    result = demo.explain_branches(data.inputs)
    for name, layer in demo.branches().items():
        reference = demo.explain(data.inputs, layer).cams[name]
        np.testing.assert_allclose(result.cams[name], reference, atol=1e-4)
    assert result.fused_notice is None


def test_explain_branches_runs_one_forward_and_one_backward(three_modalities) -> None:
    torch.manual_seed(0)
    counting = Counting(ThreeInputNet())
    explainer = Explainer(counting, three_modalities, device="cpu")
    inputs = three_input_batch(2)
    branches = explainer.branches(inputs)  # discovery: its own forward, cached per input size
    assert branches == {name: f"net.{layer}" for name, layer in THREE_BRANCHES.items()}
    counting.forwards = counting.backwards = 0
    explainer.explain_branches(inputs)
    assert (counting.forwards, counting.backwards) == (1, 1)
    assert hook_count(counting) == 0


def test_explain_branches_with_aug_smooth_equals_explain(three: Explainer) -> None:
    inputs = three_input_batch(1)
    result = three.explain_branches(inputs, target=1, aug_smooth=True)
    assert result.options["aug_smooth"] is True
    reference = three.explain(inputs, "texture_branch", target=1, aug_smooth=True)
    np.testing.assert_allclose(result.cams["texture"], reference.cams["texture"], atol=1e-4)


def test_explain_branches_of_a_slow_method_reports_progress_on_the_whole(
    three: Explainer,
) -> None:
    inputs = three_input_batch(1)
    seen: list[tuple[int, int]] = []
    result = three.explain_branches(inputs, "scorecam", progress=lambda *p: seen.append(p))
    reference = three.explain(inputs, "texture_branch", "scorecam")
    np.testing.assert_allclose(result.cams["texture"], reference.cams["texture"], atol=1e-4)
    # One run per modality and branch layer, counted on the whole; it ends at its total.
    assert seen[-1][0] == seen[-1][1] == 3 * len(THREE_BRANCHES)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_explain_branches_refuses_a_method_without_layer(three: Explainer) -> None:
    with pytest.raises(Exception, match="ignores layers"):
        three.explain_branches(three_input_batch(1), "fullgrad")


def test_a_model_without_any_branch_is_a_layer_error() -> None:
    torch.manual_seed(0)
    explainer = Explainer(
        ChannelConcatNet(), [Modality("a", channels=1), Modality("b", channels=1)], "cpu"
    )
    inputs = {"a": torch.randn(1, 1, 8, 8), "b": torch.randn(1, 1, 8, 8)}
    assert explainer.branches(inputs) == {"a": None, "b": None}
    with pytest.raises(LayerError, match="no CAM-ready layer of this model sees a single"):
        explainer.explain_branches(inputs)


def test_texture_branch_cam_points_at_the_edit_on_fresh_demo_samples(demo: Explainer) -> None:
    data = generate(60, seed=777)  # not a seed training or the samples used
    edited = np.flatnonzero(data.labels != CLASSES.index("authentic"))
    inputs = {name: images[edited] for name, images in data.inputs.items()}
    masks = data.masks[edited]
    result = demo.explain_branches(inputs, target=data.labels[edited].tolist())
    hits = metrics.pointing_game(result.cams["texture"], masks)
    # Against another sample's region, the same maps score what a map blind to the edit does.
    control = metrics.pointing_game(result.cams["texture"], np.roll(masks, 1, axis=0))
    assert hits.mean() >= 0.9, hits.mean()
    assert control.mean() <= 0.4, control.mean()


# -- fused layers say so --------------------------------------------------------------------------


def test_a_fused_layer_says_once_it_is_one_map_of_a_fused_layer(demo: Explainer) -> None:
    data = generate(2, seed=5)
    result = demo.explain(data.inputs, "head.features")
    fused = [n for n in result.notices if n.startswith(FUSED_NOTICE_START)]
    assert fused == [result.fused_notice]
    assert "head.features mixes rgb, frequency and texture" in result.fused_notice
    # The same map on every input, which is what the notice says.
    assert np.array_equal(result.raw["rgb"], result.raw["texture"])
    assert result.layers == dict.fromkeys(demo.names, "head.features")


def test_fused_notice_also_comes_with_sweep(three: Explainer) -> None:
    swept = three.sweep(three_input_batch(1), ["fuse", "texture_branch"])
    assert "fuse mixes texture, frequency and rgb" in swept["fuse"].fused_notice
    assert swept["texture_branch"].fused_notice is None


def test_a_branch_layer_and_input_dependent_methods_have_no_fused_notice(
    three: Explainer,
) -> None:
    inputs = three_input_batch(1)
    assert three.explain(inputs, "texture_branch").fused_notice is None
    # ScoreCAM perturbs each modality in its own run: not one map drawn on every input.
    assert three.explain(inputs, "fuse", "scorecam").fused_notice is None
