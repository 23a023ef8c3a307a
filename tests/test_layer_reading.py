"""How a layer's output becomes a map, where one input size alone could mislead.

Token grids come from the input's size and the number of patch tokens (never from a square root
that happens to fit); channels-first versus channels-last is decided, never guessed, also when
the channel count equals a spatial size; a 1×1 map says why; an in-place op after the layer does
not change the activation the map is computed from.  References: grad-cam with the reshape its
documentation prescribes, captum's expected values, and hand computations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.ops.misc import Permute

from cam_core import Explainer, LayerError, Modality
from cam_core.layers import analyze_output, patch_grid, token_segments
from tests.conftest import SingleTokenNet

# -- token grids -----------------------------------------------------------------------------------


# (H, W) of the input, patch side, class tokens → the grid the tokens lie on.
TOKEN_TABLE = [
    ((128, 96), 16, 1, (8, 6)),  # 49 tokens: once read as a 7×7 square
    ((96, 64), 16, 1, (6, 4)),  # 25 tokens: once read as 5×5
    ((224, 160), 16, 1, (14, 10)),
    ((64, 48), 16, 1, (4, 3)),
    ((96, 128), 16, 1, (6, 8)),
    ((48, 48), 16, 1, (3, 3)),
    ((32, 32), 4, 0, (8, 8)),
    ((100, 60), 16, 0, (6, 3)),  # unpadded patches: ⌊100/16⌋ × ⌊60/16⌋
    ((100, 60), 16, 1, (7, 4)),  # padded patches: ⌈100/16⌉ × ⌈60/16⌉
]


@pytest.mark.parametrize(("size", "patch", "cls", "grid"), TOKEN_TABLE)
def test_token_grid_comes_from_input_size_and_patch_count(size, patch, cls, grid):
    length = cls + grid[0] * grid[1]
    segments, prefix = token_segments(length, {"rgb": size})
    assert prefix == cls
    assert [(s.start, s.height, s.width) for s in segments] == [(cls, *grid)]
    assert patch_grid(grid[0] * grid[1], size) == grid


def test_square_grid_is_only_the_last_resort_and_says_so():
    # 197 tokens over a 300×200 input fit no patch grid of it: a model that resizes to 224².
    view = analyze_output(torch.zeros(1, 197, 8), 1, {"rgb": (300, 200)})
    assert (view.segments[0].height, view.segments[0].width, view.prefix) == (14, 14, 1)
    assert "square" in view.describe((1, 197, 8)) and "resize" in view.describe((1, 197, 8))


@pytest.mark.parametrize("size", [(128, 96), (96, 64), (224, 160), (64, 48)])
def test_class_token_vit_on_non_square_input_equals_grad_cam_with_right_reshape(size):
    torch.manual_seed(0)
    model = SingleTokenNet(width=8, patch=16)
    x = torch.randn(2, 3, *size)
    h, w = size[0] // 16, size[1] // 16

    def reshape(tokens):  # grad-cam's documented ViT reshape, on the h×w patch grid
        return tokens[:, 1:].reshape(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2)

    explainer = Explainer(model, [Modality("rgb")], device="cpu")
    row = next(r for r in explainer.layer_tree({"rgb": x}) if r.path == "block")
    assert row.ready and f"class token dropped, grid {h}×{w}" in row.reason
    result = explainer.explain({"rgb": x}, "block", "gradcam")
    assert result.raw["rgb"].shape == (2, h, w)
    with GradCAM(model, [model.block], reshape_transform=reshape) as cam:
        expected = cam(x, None)
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-3)
    assert expected.max() > 0.99


# -- channels-first or channels-last ---------------------------------------------------------------


class NarrowConvNeXt(nn.Module):
    """A ConvNeXt stage in miniature: a stride-4 stem to ``width`` channels, then a block that
    works channels-last (depthwise conv, permute, LayerNorm, MLP, permute back).  At 64 px the
    block's channels-last tensors are ``(N, 16, 16, 16)``: channels equal to both spatial sides.
    """

    def __init__(self, width: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 4, stride=4)
        self.block = nn.Sequential(
            nn.Conv2d(width, width, 7, padding=3, groups=width),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(width),
            nn.Linear(width, 4 * width),
            nn.GELU(),
            nn.Linear(4 * width, width),
            Permute([0, 3, 1, 2]),
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = y + self.block(y)
        return self.head(y.mean(dim=(2, 3)))


class FixedSizeConvNeXt(NarrowConvNeXt):
    """The same, refusing any input but 64×64 up front (as timm's strict image size does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == (64, 64), f"input size {tuple(x.shape[-2:])} != (64, 64)"
        return super().forward(x)


def _nhwc(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.permute(0, 3, 1, 2)


# (H, W) of the input and the width: the block's channels-last maps are (N, H/4, W/4, width).
LAYOUT_TABLE = [
    ((64, 64), 16),  # 16 channels at 16×16: both readings fit
    ((48, 48), 12),  # 12 channels at 12×12
    ((64, 48), 16),  # non-square: 16×12 with 16 channels
    ((48, 64), 16),  # 12×16 with 16 channels
    ((64, 64), 8),  # channels differ from the sides: the shape alone tells
]


@pytest.mark.parametrize(("size", "width"), LAYOUT_TABLE)
def test_channels_last_is_decided_and_shown_in_the_layer_tree(size, width):
    torch.manual_seed(0)
    explainer = Explainer(NarrowConvNeXt(width), [Modality("rgb")], device="cpu")
    rows = {r.path: r for r in explainer.layer_tree({"rgb": torch.randn(1, 3, *size)})}
    for path in ("block.1", "block.2", "block.3", "block.5"):
        assert rows[path].ready and rows[path].layout == "nhwc", rows[path].reason
        assert "channels-last" in rows[path].reason
    for path in ("stem", "block.0", "block.6", "block"):
        assert rows[path].ready and rows[path].layout == "nchw", rows[path].reason
        assert "channels-first" in rows[path].reason


@pytest.mark.parametrize(("size", "width"), LAYOUT_TABLE)
@pytest.mark.parametrize(("method", "cls"), [("gradcam", GradCAM), ("layercam", LayerCAM)])
def test_channels_last_layer_equals_grad_cam_with_permute(size, width, method, cls):
    torch.manual_seed(0)
    model = NarrowConvNeXt(width)
    x = torch.randn(2, 3, *size)
    result = Explainer(model, [Modality("rgb")], device="cpu").explain(
        {"rgb": x}, "block.2", method, target=1
    )
    with cls(model, [model.block[2]], reshape_transform=_nhwc) as cam:
        expected = cam(x, [ClassifierOutputTarget(1)] * 2)
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-3)
    assert expected.max() > 0.99


@pytest.mark.parametrize(("method", "cls"), [("eigencam", EigenCAM), ("scorecam", ScoreCAM)])
def test_channels_last_with_channels_equal_to_sides_for_eigencam_and_scorecam(method, cls):
    torch.manual_seed(0)
    model = NarrowConvNeXt(16)
    x = torch.randn(1, 3, 64, 64)
    result = Explainer(model, [Modality("rgb")], device="cpu").explain(
        {"rgb": x}, "block.5", method, target=0
    )
    with cls(model, [model.block[5]], reshape_transform=_nhwc) as cam:
        expected = cam(x, [ClassifierOutputTarget(0)])
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-3)


def test_undecidable_layout_is_refused_with_the_suffix_that_fixes_it():
    torch.manual_seed(0)
    model = FixedSizeConvNeXt()
    x = torch.randn(1, 3, 64, 64)
    explainer = Explainer(model, [Modality("rgb")], device="cpu")
    row = next(r for r in explainer.layer_tree({"rgb": x}) if r.path == "block.2")
    assert not row.ready and "':nchw' or ':nhwc'" in row.reason
    with pytest.raises(LayerError, match="':nchw' or ':nhwc'"):
        explainer.explain({"rgb": x}, "block.2", "gradcam")

    result = explainer.explain({"rgb": x}, "block.2:nhwc", "gradcam", target=2)
    with GradCAM(model, [model.block[2]], reshape_transform=_nhwc) as cam:
        expected = cam(x, [ClassifierOutputTarget(2)])
    np.testing.assert_allclose(result.cams["rgb"], expected, atol=1e-3)
    assert result.layer == "block.2:nhwc"


def test_layout_suffix_is_checked():
    explainer = Explainer(NarrowConvNeXt(), [Modality("rgb")], device="cpu")
    with pytest.raises(LayerError, match="'nchw' or 'nhwc'"):
        explainer.explain({"rgb": torch.randn(1, 3, 64, 64)}, "block.2:hwc", "gradcam")


def test_sweep_settles_channels_last_layers_like_explain():
    torch.manual_seed(0)
    explainer = Explainer(NarrowConvNeXt(16), [Modality("rgb")], device="cpu")
    x = {"rgb": torch.randn(2, 3, 64, 64)}
    swept = explainer.sweep(x, ["block.2", "block.5", "stem"], "gradcam")
    for layer, result in swept.items():
        np.testing.assert_allclose(
            result.cams["rgb"], explainer.explain(x, layer, "gradcam").cams["rgb"], atol=1e-5
        )


# -- 1×1 maps --------------------------------------------------------------------------------------


class DeepNarrowNet(nn.Module):
    """Five stride-2 convs (stride 32), a squeeze-excite style 1×1 conv after a global pool."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *[nn.Sequential(nn.Conv2d(3 if i == 0 else 8, 8, 3, 2, 1), nn.ReLU()) for i in range(5)]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.squeeze = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        y = y * torch.sigmoid(self.squeeze(self.pool(y)))
        return self.head(y.mean(dim=(2, 3)))


def test_one_by_one_map_says_whether_the_input_is_too_small_or_pooled():
    explainer = Explainer(DeepNarrowNet(), [Modality("rgb")], device="cpu")
    x = {"rgb": torch.randn(1, 3, 32, 32)}
    rows = {r.path: r for r in explainer.layer_tree(x)}
    assert not rows["features.4"].ready
    assert rows["features.4"].reason.startswith(
        "the input is too small for this layer: 32×32 px gives 1×1 (64×64 px gives 2×2)"
    )
    assert rows["features.3"].ready  # 2×2 at 32 px
    for path in ("pool", "squeeze"):
        assert not rows[path].ready and "after global pooling" in rows[path].reason
    with pytest.raises(LayerError, match="the input is too small for this layer: 32×32 px"):
        explainer.explain(x, "features.4", "gradcam")
    with pytest.raises(LayerError, match="after global pooling"):
        explainer.explain(x, "squeeze", "gradcam")


# -- in-place operations after the layer -----------------------------------------------------------


class OneConvNet(nn.Module):
    """captum's ``BasicModel_ConvNet_One_Conv(inplace=True)``, hand-set weights: ``x + x2`` →
    conv 3×3 of ones (biases -50, -75) → in-place ReLU → Linear(8, 4) → in-place ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, 1)
        self.relu1 = nn.ReLU(inplace=True)
        self.fc1 = nn.Linear(8, 4)
        self.relu2 = nn.ReLU(inplace=True)
        with torch.no_grad():
            self.conv1.weight.fill_(1.0)
            self.conv1.bias.copy_(torch.tensor([-50.0, -75.0]))
            self.fc1.weight.copy_(torch.cat([torch.ones(4, 5), -torch.ones(4, 3)], dim=1))
            self.fc1.bias.zero_()

    def forward(self, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.conv1(x + x2))
        return self.relu2(self.fc1(y.reshape(-1, 8)))


def test_in_place_relu_after_layer_does_not_change_the_activation_read():
    # By hand: x + x2 = 1..16 on a 4×4 grid; the conv sums 3×3 windows (54, 63, 90, 99), so
    # channel 0 = [4, 13, 40, 49] and channel 1 = [-21, -12, 15, 24].  For class 0 the gradient
    # is 1 on channel 0 and (0, 0, -1, -1) on channel 1 (ReLU masks and fc weights): mean
    # weights 1 and -0.5.  Map = ch0 - 0.5 ch1 on the conv's real output = captum's expected
    # [[14.5, 19], [32.5, 37]]; read after the in-place ReLU it would be [[4, 13], [32.5, 37]].
    x = torch.arange(16.0).view(1, 1, 4, 4)
    inputs = (x, torch.ones(1, 1, 4, 4))
    modalities = [Modality("x", channels=1), Modality("x2", channels=1)]
    explainer = Explainer(OneConvNet(), modalities, device="cpu")
    result = explainer.explain(inputs, "conv1", "gradcam", target=0)
    np.testing.assert_allclose(result.raw["x"][0], [[14.5, 19.0], [32.5, 37.0]], atol=1e-4)
    swept = explainer.sweep(inputs, ["conv1"], "gradcam", target=0)["conv1"]
    np.testing.assert_allclose(swept.raw["x"][0], [[14.5, 19.0], [32.5, 37.0]], atol=1e-4)


def test_grad_cam_reads_the_tensor_an_in_place_op_changed():
    # Why the README does not claim equality with grad-cam here: grad-cam's hook keeps the
    # very tensor the in-place ReLU then overwrites.
    model = OneConvNet()

    class Summed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x, torch.ones_like(x))

    x = torch.arange(16.0).view(1, 1, 4, 4)
    with GradCAM(Summed(), [model.conv1]) as cam:
        cam.get_target_width_height = lambda _x: None  # keep grad-cam's map at 2×2
        raw = []
        original = cam.get_cam_image
        cam.get_cam_image = lambda *a, **k: raw.append(original(*a, **k)) or raw[-1]
        cam(x, [ClassifierOutputTarget(0)])
    np.testing.assert_allclose(raw[0][0], [[4.0, 13.0], [32.5, 37.0]], atol=1e-4)
