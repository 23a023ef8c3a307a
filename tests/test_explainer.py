"""The Explainer on multi-input models: equal to grad-cam's own numbers, for every layer kind."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from cam_core import (
    CamError,
    Explainer,
    InputError,
    LayerError,
    MethodError,
    Modality,
    TargetError,
)
from tests.conftest import (
    ConcatWorkaround,
    SharedEncoderNet,
    SingleTokenNet,
    ThreeInputNet,
    TwoStreamTokenNet,
    three_input_batch,
)


def _reference(model, layer, inputs, cls=GradCAM, reshape=None, targets=None):
    """grad-cam itself, on the concatenate-and-slice workaround model."""
    x = torch.cat([inputs["texture"], inputs["frequency"], inputs["rgb"]], dim=1)
    with cls(ConcatWorkaround(model), [layer], reshape_transform=reshape) as cam:
        return cam(x, targets)


@pytest.mark.parametrize(("method", "cls"), [("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus)])
@pytest.mark.parametrize("layer", ["rgb_branch", "texture_branch.2", "fuse"])
def test_explain_equals_grad_cam_on_concat_workaround(method, cls, layer, three_modalities):
    torch.manual_seed(0)
    model = ThreeInputNet()
    inputs = three_input_batch(n=3)
    explainer = Explainer(model, three_modalities, device="cpu")
    result = explainer.explain(inputs, layer=layer, method=method)
    module = dict(model.named_modules())[layer]
    expected = _reference(model, module, inputs, cls)
    for name in ("texture", "frequency", "rgb"):
        assert result.cams[name].shape == (3, 32, 32)
        assert result.cams[name].dtype == np.float32
        np.testing.assert_allclose(result.cams[name], expected, atol=1e-3)
    assert expected.max() > 0.99  # the reference carries signal, so equality means something


def test_token_layer_equals_grad_cam_with_hand_written_reshape(three_modalities):
    torch.manual_seed(1)
    model = ThreeInputNet()
    inputs = three_input_batch(n=2)
    result = Explainer(model, three_modalities, device="cpu").explain(inputs, layer="attn")

    # The workaround users write: grad-cam cannot hook a tuple output, so the attention's
    # output tensor is passed through a hookable identity, and tokens are reshaped by hand.
    def reshape(tokens):  # (N, 256, C) → (N, C, 16, 16)
        return tokens.reshape(tokens.shape[0], 16, 16, tokens.shape[2]).permute(0, 3, 1, 2)

    tap = nn.Identity()
    original_forward = model.attn.forward

    def attn_forward(*args, **kwargs):
        out, weights = original_forward(*args, **kwargs)
        return tap(out), weights

    model.attn.forward = attn_forward
    try:
        expected = _reference(model, tap, inputs, GradCAM, reshape=reshape)
    finally:
        del model.attn.forward
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-3)
    assert expected.max() > 0.99


def test_cls_token_layer_equals_grad_cam_vit_reshape():
    torch.manual_seed(2)
    model = SingleTokenNet()
    x = torch.randn(2, 3, 32, 32)

    def reshape(tokens):  # grad-cam's documented ViT reshape: drop the class token
        grid = tokens[:, 1:].reshape(tokens.shape[0], 8, 8, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)

    result = Explainer(model, [Modality("rgb")], device="cpu").explain({"rgb": x}, "block")
    with GradCAM(model, [model.block], reshape_transform=reshape) as cam:
        expected = cam(x, None)
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-3)


def test_tuple_output_layer_uses_first_tensor(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    row = next(r for r in explainer.layer_tree(three_input_batch(1)) if r.path == "attn")
    assert row.ready and "element 0" in row.reason and "16×16" in row.reason
    result = explainer.explain(three_input_batch(2), "attn", "hirescam")
    assert result.cams["rgb"].shape == (2, 32, 32)
    assert result.raw["rgb"].shape == (2, 16, 16)


def test_concatenated_tokens_are_split_per_modality():
    torch.manual_seed(3)
    model = TwoStreamTokenNet()
    modalities = [Modality("rgb"), Modality("depth", channels=1)]
    inputs = {"rgb": torch.randn(2, 3, 32, 32), "depth": torch.randn(2, 1, 48, 48)}
    explainer = Explainer(model, modalities, device="cpu")
    row = next(r for r in explainer.layer_tree(inputs) if r.path == "block")
    assert row.ready and "split per modality" in row.reason
    assert "rgb 8×8" in row.reason and "depth 12×12" in row.reason
    result = explainer.explain(inputs, "block", "gradcam")
    assert result.raw["rgb"].shape == (2, 8, 8)
    assert result.raw["depth"].shape == (2, 12, 12)
    assert result.cams["rgb"].shape == (2, 32, 32)
    assert result.cams["depth"].shape == (2, 48, 48)

    # Reference: grad-cam on the block with a reshape that picks the depth tokens by hand.
    class DepthExplained(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, depth):
            return self.model(inputs["rgb"], depth)

    def depth_tokens(tokens):
        grid = tokens[:, 1 + 64 :].reshape(tokens.shape[0], 12, 12, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)

    with GradCAM(DepthExplained(), [model.block], reshape_transform=depth_tokens) as cam:
        expected = cam(inputs["depth"], None)
    np.testing.assert_allclose(result.cams["depth"], expected, atol=1e-3)


def test_keyword_modality_is_passed_by_name():
    torch.manual_seed(3)
    model = TwoStreamTokenNet()
    inputs = {"rgb": torch.randn(1, 3, 32, 32), "depth": torch.randn(1, 1, 32, 32)}
    positional = Explainer(model, [Modality("rgb"), Modality("depth", channels=1)], device="cpu")
    # Keyword order differs from forward's: only arg= makes it right.
    keyword = Explainer(
        model,
        [Modality("depth", channels=1, arg="depth"), Modality("rgb", arg="rgb")],
        device="cpu",
    )
    a = positional.explain(inputs, "embed_rgb", "gradcam")
    b = keyword.explain(inputs, "embed_rgb", "gradcam")
    np.testing.assert_allclose(a.cams["rgb"], b.cams["rgb"], atol=1e-6)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_modalities_of_different_sizes_get_cams_at_their_own_size(three_modalities):
    torch.manual_seed(0)
    model = ThreeInputNet()
    inputs = three_input_batch(n=2, size=32)
    inputs["texture"] = torch.randn(2, 1, 64, 48)  # other size, other aspect
    result = Explainer(model, three_modalities, device="cpu").explain(inputs, "fuse")
    assert result.cams["texture"].shape == (2, 64, 48)
    assert result.cams["rgb"].shape == (2, 32, 32)
    # texture's CAM is the same layer map resized: downsampling it back gives rgb's map.
    assert (
        np.corrcoef(result.cams["rgb"][0].ravel(), _resize(result.cams["texture"][0]).ravel())[0, 1]
        > 0.9
    )


def _resize(cam):
    import cv2

    return cv2.resize(cam, (32, 32), interpolation=cv2.INTER_AREA)


def test_shared_encoder_lists_each_call_and_explains_the_chosen_one():
    torch.manual_seed(4)
    model = SharedEncoderNet()
    modalities = [Modality("left"), Modality("right")]
    inputs = {"left": torch.randn(2, 3, 32, 32), "right": torch.randn(2, 3, 32, 32)}
    explainer = Explainer(model, modalities, device="cpu")
    rows = [r for r in explainer.layer_tree(inputs) if r.module_path == "encoder"]
    assert [r.path for r in rows] == ["encoder@0", "encoder@1"]
    assert all(r.ready and r.calls == 2 for r in rows)
    first = explainer.explain(inputs, "encoder@0")
    second = explainer.explain(inputs, "encoder@1")
    assert not np.allclose(first.cams["left"], second.cams["left"], atol=1e-3)

    # Reference for call 1: the encoder's output on the right image, by grad-cam on a model
    # that runs a copy of the encoder for the right image only.
    class Untied(nn.Module):
        def __init__(self):
            super().__init__()
            self.right_encoder = copy.deepcopy(model.encoder)

        def forward(self, right):
            a = model.encoder(inputs["left"]).mean(dim=(2, 3))
            b = self.right_encoder(right).mean(dim=(2, 3))
            return model.head(torch.cat([a, b], dim=1))

    untied = Untied()
    with GradCAM(untied, [untied.right_encoder]) as cam:
        expected = cam(inputs["right"], None)
    np.testing.assert_allclose(second.cams["right"], expected, atol=1e-3)
    plain = explainer.explain(inputs, "encoder")
    assert any("runs 2 times" in n for n in plain.notices)
    with pytest.raises(LayerError, match="no call 2"):
        explainer.explain(inputs, "encoder@2")


def test_batch_of_six_matches_one_by_one(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    inputs = three_input_batch(n=6, seed=5)
    batched = explainer.explain(inputs, "rgb_branch", "gradcam++")
    assert batched.cams["rgb"].shape == (6, 32, 32)
    assert batched.probabilities.shape == (6, 4)
    for i in (0, 5):
        single = explainer.explain(
            {k: v[i : i + 1] for k, v in inputs.items()}, "rgb_branch", "gradcam++"
        )
        np.testing.assert_allclose(batched.cams["rgb"][i], single.cams["rgb"][0], atol=1e-4)


def test_scorecam_on_multi_input_model_equals_grad_cam_per_modality(three_net, three_modalities):
    inputs = three_input_batch(n=2, seed=6)
    result = Explainer(three_net, three_modalities, device="cpu").explain(
        inputs, "texture_branch", "scorecam"
    )
    # grad-cam ScoreCAM on one sample at a time with the other modalities bound: only the
    # explained modality is masked.
    for i in range(2):

        class TextureOnly(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = three_net

            def forward(self, x, i=i):
                n = x.shape[0]
                f = inputs["frequency"][i : i + 1].expand(n, -1, -1, -1)
                p = inputs["rgb"][i : i + 1].expand(n, -1, -1, -1)
                return self.net(x, f, p)

        model = TextureOnly()
        cam = ScoreCAM(model, [three_net.texture_branch])
        cam.batch_size = 32
        target = [ClassifierOutputTarget(result.targets[i])]
        expected = cam(inputs["texture"][i : i + 1], target)
        cam.activations_and_grads.release()
        np.testing.assert_allclose(result.cams["texture"][i], expected[0], atol=1e-3)
    assert result.cams["rgb"].shape == (2, 32, 32)


ALL_METHODS = [
    "gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "gradcam-elementwise",
    "eigencam", "eigengradcam", "kpca-cam", "scorecam", "ablationcam", "shapleycam", "fullgrad",
]  # fmt: skip


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_gives_unit_range_cams_for_every_modality(method, three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    assert method in explainer.methods()
    result = explainer.explain(three_input_batch(n=2), "rgb_branch", method)
    for name in ("texture", "frequency", "rgb"):
        cam = result.cams[name]
        assert cam.shape == (2, 32, 32) and cam.dtype == np.float32
        assert cam.min() >= 0.0 and cam.max() <= 1.0
        assert np.isfinite(cam).all()
    assert result.targets == list(result.probabilities.argmax(axis=1))
    assert result.method == method
    if method == "fullgrad":
        assert result.layer is None and any("Ignores the chosen layer" in n for n in result.notices)


def test_method_metadata_names_costs():
    explainer_methods = Explainer.method_info("scorecam")
    assert explainer_methods.slow and explainer_methods.per_sample
    assert not Explainer.method_info("gradcam").slow
    assert not Explainer.method_info("fullgrad").uses_layer
    with pytest.raises(MethodError, match="gradcam"):
        Explainer.method_info("gradcm")


def test_target_out_of_range_names_number_of_classes(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    with pytest.raises(TargetError, match="4 classes"):
        explainer.explain(three_input_batch(1), "fuse", target=7)
    with pytest.raises(TargetError, match="4 classes"):
        explainer.explain(three_input_batch(1), "fuse", "scorecam", target=4)
    with pytest.raises(TargetError, match="one per sample"):
        explainer.explain(three_input_batch(2), "fuse", target=[1])


def test_explicit_targets_per_sample_are_used(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu", classes=list("abcd"))
    inputs = three_input_batch(2)
    result = explainer.explain(inputs, "fuse", target=[1, "d"])
    assert result.targets == [1, 3]
    model = ConcatWorkaround(three_net)
    x = torch.cat([inputs["texture"], inputs["frequency"], inputs["rgb"]], dim=1)
    with GradCAM(model, [three_net.fuse]) as cam:
        expected = cam(x, [ClassifierOutputTarget(1), ClassifierOutputTarget(3)])
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-3)


def test_unknown_layer_suggests_close_matches(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    with pytest.raises(LayerError, match="rgb_branch"):
        explainer.explain(three_input_batch(1), "rgb_brnch")


def test_non_spatial_layer_is_listed_not_ready_and_refused(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    head = next(r for r in explainer.layer_tree(three_input_batch(1)) if r.path == "head")
    assert not head.ready and "no spatial dimensions" in head.reason
    with pytest.raises(LayerError, match="no spatial dimensions"):
        explainer.explain(three_input_batch(1), "head")


def test_missing_modality_is_named(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    inputs = three_input_batch(1)
    del inputs["frequency"]
    with pytest.raises(InputError, match="'frequency' is missing") as info:
        explainer.explain(inputs, "fuse")
    assert info.value.modality == "frequency"


def test_layer_tree_without_inputs_uses_modality_sizes(three_net):
    modalities = [
        Modality("texture", channels=1, size=32),
        Modality("frequency", channels=1, size=32),
        Modality("rgb", size=(32, 32)),
    ]
    rows = {r.path: r for r in Explainer(three_net, modalities, device="cpu").layer_tree()}
    assert rows["rgb_branch"].output_shape == (1, 8, 16, 16)
    assert rows["rgb_branch"].params == sum(p.numel() for p in three_net.rgb_branch.parameters())
    assert rows["attn.out_proj"].ready is False  # MultiheadAttention calls its weights directly


def test_dict_and_dataclass_outputs_pick_the_logits():
    from dataclasses import dataclass

    @dataclass
    class Output:
        features: list
        scores: torch.Tensor

    class DictNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            logits = self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))
            return {"aux": logits * 0 + 5, "logits": logits}

    class DataclassNet(DictNet):
        def forward(self, x):
            out = super().forward(x)
            return Output(features=[1], scores=out["logits"])

    torch.manual_seed(0)
    dict_net, dataclass_net = DictNet(), DataclassNet()
    dataclass_net.load_state_dict(dict_net.state_dict())
    x = {"rgb": torch.randn(1, 3, 16, 16)}
    a = Explainer(dict_net, [Modality("rgb")], device="cpu").explain(x, "conv")
    b = Explainer(dataclass_net, [Modality("rgb")], device="cpu").explain(x, "conv")
    np.testing.assert_allclose(a.cams["rgb"], b.cams["rgb"], atol=1e-6)
    assert not np.allclose(a.probabilities, 0.5)  # the "aux" entry would give equal scores
    c = Explainer(dict_net, [Modality("rgb")], device="cpu", output="aux").predict(x)
    np.testing.assert_allclose(c, 0.5, atol=1e-6)
    with pytest.raises(InputError, match=r"'missing'.*dict\('aux'"):
        Explainer(DictNet(), [Modality("rgb")], device="cpu", output="missing").predict(x)


def test_images_are_normalized_with_the_modality_spec(three_net, three_modalities):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (2, 32, 32), dtype=np.uint8)
    explainer = Explainer(three_net, three_modalities, device="cpu")
    from_images = explainer.explain({"texture": gray, "frequency": gray, "rgb": rgb}, "fuse")
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    tensors = {
        "texture": torch.from_numpy(gray).float()[:, None] / 255,
        "frequency": torch.from_numpy(gray).float()[:, None] / 255,
        "rgb": (torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255 - mean) / std,
    }
    from_tensors = explainer.explain(tensors, "fuse")
    np.testing.assert_allclose(from_images.cams["rgb"], from_tensors.cams["rgb"], atol=1e-5)
    np.testing.assert_array_equal(from_images.display["rgb"], rgb)
    np.testing.assert_array_equal(from_tensors.display["rgb"], rgb)  # de-normalized back
    assert from_images.display["texture"].shape == (2, 32, 32, 3)


def test_tensor_made_in_inference_mode_is_accepted(three_net, three_modalities):
    with torch.inference_mode():
        inputs = three_input_batch(1)
    result = Explainer(three_net, three_modalities, device="cpu").explain(inputs, "fuse")
    assert result.cams["rgb"].max() > 0.99


def test_two_threads_on_one_explainer_get_their_own_results(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    inputs = [three_input_batch(2, seed=10), three_input_batch(2, seed=11)]
    expected = [explainer.explain(x, "rgb_branch", "gradcam").cams["rgb"] for x in inputs]
    got: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(k):
        try:
            start.wait()
            for round_ in range(4):
                got[k, round_] = explainer.explain(inputs[k], "rgb_branch", "gradcam").cams["rgb"]
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not np.allclose(expected[0], expected[1], atol=1e-2)
    for (k, _), cams in got.items():
        np.testing.assert_allclose(cams, expected[k], atol=1e-6)


def test_prediction_during_cam_is_not_contaminated(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    a, b = three_input_batch(2, seed=1), three_input_batch(2, seed=2)
    expected_cam = explainer.explain(a, "fuse", "scorecam").cams["rgb"]
    expected_prob = explainer.predict(b)
    results = {}

    def cam():
        results["cam"] = explainer.explain(a, "fuse", "scorecam").cams["rgb"]

    thread = threading.Thread(target=cam)
    thread.start()
    results["prob"] = [explainer.predict(b) for _ in range(5)]
    thread.join()
    np.testing.assert_allclose(results["cam"], expected_cam, atol=1e-6)
    for prob in results["prob"]:
        np.testing.assert_allclose(prob, expected_prob, atol=1e-6)


def test_dead_layer_gives_no_signal_notice():
    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.dead = nn.Conv2d(4, 4, 1)
            self.head = nn.Linear(4, 2)
            nn.init.zeros_(self.dead.weight)
            nn.init.zeros_(self.dead.bias)

        def forward(self, x):
            return self.head(torch.relu(self.dead(self.conv(x))).mean(dim=(2, 3)))

    result = Explainer(Dead(), [Modality("rgb")], device="cpu").explain(
        {"rgb": torch.randn(1, 3, 16, 16)}, "dead"
    )
    assert result.empty["rgb"].tolist() == [True]
    assert np.all(result.cams["rgb"] == 0)
    assert any("no signal" in n for n in result.notices)


def test_non_aligned_modality_gets_a_notice(three_net):
    modalities = [
        Modality("texture", channels=1),
        Modality("frequency", channels=1, aligned=False),
        Modality("rgb"),
    ]
    result = Explainer(three_net, modalities, device="cpu").explain(three_input_batch(1), "fuse")
    assert any(n.startswith("frequency is not spatially aligned") for n in result.notices)


def test_aug_smooth_flips_every_modality_together(three_net, three_modalities):
    inputs = three_input_batch(1, seed=3)
    smooth = Explainer(three_net, three_modalities, device="cpu").explain(
        inputs, "texture_branch", aug_smooth=True
    )
    assert smooth.options["aug_smooth"] is True
    # grad-cam's aug_smooth on the concatenated input flips all modalities together: the same
    # semantics.  It averages maps scaled at input size without a final min-max, so compare the
    # min-maxed reference, to the precision that scaling order allows.
    x = torch.cat([inputs["texture"], inputs["frequency"], inputs["rgb"]], dim=1)
    with GradCAM(ConcatWorkaround(three_net), [three_net.texture_branch]) as cam:
        expected = cam(x, None, aug_smooth=True)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(smooth.cams["texture"], expected, atol=0.05)
    with GradCAM(ConcatWorkaround(three_net), [three_net.texture_branch]) as cam:
        unsmoothed = cam(x, None)
    assert np.abs(smooth.cams["texture"] - unsmoothed).max() > 0.05  # smoothing did something


def test_errors_are_cam_errors(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    for call in (
        lambda: explainer.explain(three_input_batch(1), "fuse", method="nope"),
        lambda: explainer.explain({"rgb": torch.randn(1, 3, 8, 8)}, "fuse"),
        lambda: explainer.explain({**three_input_batch(1), "rgb": torch.randn(1, 2, 32, 32)}),
    ):
        with pytest.raises(CamError):
            call()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "eigencam", "scorecam"])
def test_sweep_equals_explain_per_layer(method, three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    inputs = three_input_batch(2, seed=8)
    layers = ["texture_branch", "rgb_branch.2", "attn", "fuse"]
    swept = explainer.sweep(inputs, layers, method)
    assert list(swept) == layers
    for layer in layers:
        single = explainer.explain(inputs, layer, method)
        for name in ("texture", "rgb"):
            np.testing.assert_allclose(swept[layer].cams[name], single.cams[name], atol=1e-4)
        assert swept[layer].targets == single.targets
        assert swept[layer].layer == layer


def test_sweep_handles_shared_and_split_layers_and_refuses_bad_ones():
    torch.manual_seed(3)
    model = TwoStreamTokenNet()
    explainer = Explainer(model, [Modality("rgb"), Modality("depth", channels=1)], device="cpu")
    inputs = {"rgb": torch.randn(1, 3, 32, 32), "depth": torch.randn(1, 1, 48, 48)}
    swept = explainer.sweep(inputs, ["embed_rgb", "block"])
    single = explainer.explain(inputs, "block")
    np.testing.assert_allclose(swept["block"].cams["depth"], single.cams["depth"], atol=1e-5)
    with pytest.raises(LayerError, match="no spatial dimensions"):
        explainer.sweep(inputs, ["embed_rgb", "head"])
    shared = Explainer(SharedEncoderNet(), [Modality("left"), Modality("right")], device="cpu")
    pair = {"left": torch.randn(1, 3, 32, 32), "right": torch.randn(1, 3, 32, 32)}
    both = shared.sweep(pair, ["encoder@0", "encoder@1"])
    np.testing.assert_allclose(
        both["encoder@1"].cams["left"], shared.explain(pair, "encoder@1").cams["left"], atol=1e-5
    )


def test_branch_layer_notice_names_the_only_modality_it_sees(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    inputs = three_input_batch(1)
    branch = explainer.explain(inputs, "rgb_branch.2")
    assert any(
        n.startswith("rgb_branch.2 sees only rgb: on texture, frequency") for n in branch.notices
    )
    fused = explainer.explain(inputs, "fuse")
    assert not any("sees only" in n for n in fused.notices)
    swept = explainer.sweep(inputs, ["texture_branch", "fuse"])
    assert any("texture_branch sees only texture" in n for n in swept["texture_branch"].notices)
    assert not any("sees only" in n for n in swept["fuse"].notices)
