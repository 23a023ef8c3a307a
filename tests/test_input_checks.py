"""Odd tensors, sizes, specs and faults become a result or a CamError, never a raw exception.

RELIABILITY rows 20-21 (issue 12 item 3): float64/float16/bfloat16 tensors are cast to the
model's dtype (a notice says so); an input of a size the model cannot take is an InputError
naming the modality and the size it accepts; MODALITIES that do not fit ``forward`` are refused
when the Explainer is built; a spec raising SystemExit/BaseException is that model's SpecError;
out-of-memory while preparing inputs is a ResourceError; 2- or 5-channel arrays are refused
for their channels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cam_core import Explainer, Modality, modality
from cam_core.errors import InputError, ResourceError, SpecError
from cam_core.sources import available_models, load_spec
from tests.conftest import ThreeInputNet, hook_count, state_hash, three_input_batch


@pytest.fixture
def explainer(three_net, three_modalities) -> Explainer:
    return Explainer(three_net, three_modalities, device="cpu")


# -- dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_are_cast_to_the_models_dtype_with_a_notice(explainer, dtype):
    inputs = three_input_batch(2)
    reference = explainer.explain(inputs, "fuse")
    cast = {name: t.to(dtype) for name, t in inputs.items()}
    result = explainer.explain(cast, "fuse")
    # The same numbers as float32 inputs rounded to that dtype first (computed another way).
    rounded = explainer.explain({n: t.to(dtype).float() for n, t in inputs.items()}, "fuse")
    np.testing.assert_allclose(result.cams["rgb"], rounded.cams["rgb"], atol=1e-6)
    if dtype == torch.float64:
        np.testing.assert_allclose(result.cams["rgb"], reference.cams["rgb"], atol=1e-5)
    name = str(dtype).removeprefix("torch.")
    assert any(f"rgb: {name} tensor cast to float32" in n for n in result.notices)


def test_float64_model_gets_float64_inputs(three_modalities):
    torch.manual_seed(0)
    net = ThreeInputNet().double()
    explainer = Explainer(net, three_modalities, device="cpu")
    result = explainer.explain(three_input_batch(1), "fuse")
    assert result.cams["rgb"].shape == (1, 32, 32)
    assert any("cast to float64" in n for n in result.notices)


# -- sizes ----------------------------------------------------------------------------------------


class FixedSizeNet(nn.Module):
    """forward(texture, rgb): flattens a 16x16 map into a Linear: only 16x16 inputs fit."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_t = nn.Conv2d(1, 4, 3, padding=1)
        self.conv_p = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 2)

    def forward(self, texture, rgb):
        return self.fc((self.conv_t(texture) + self.conv_p(rgb)).flatten(1))


def test_wrong_spatial_size_names_the_modality_and_the_size_the_model_takes():
    torch.manual_seed(0)
    net = FixedSizeNet()
    explainer = Explainer(
        net, [Modality("texture", channels=1, size=16), Modality("rgb", size=16)], device="cpu"
    )
    before, hooks = state_hash(net), hook_count(net)
    inputs = {"texture": torch.randn(1, 1, 16, 16), "rgb": torch.randn(1, 3, 12, 12)}
    for call in (
        lambda: explainer.explain(inputs, "conv_p"),
        lambda: explainer.predict(inputs),
    ):
        with pytest.raises(InputError, match="rgb is 12×12, but the model takes 16×16") as info:
            call()
        assert info.value.modality == "rgb"
        assert isinstance(info.value.__cause__, RuntimeError)
    assert state_hash(net) == before and hook_count(net) == hooks
    ok = explainer.explain({**inputs, "rgb": torch.randn(1, 3, 16, 16)}, "conv_p")
    assert ok.cams["rgb"].shape == (1, 16, 16)


def test_wrong_size_without_declared_sizes_blames_the_odd_one_out():
    torch.manual_seed(0)
    net = FixedSizeNet()

    class Three(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, a, b, rgb):
            return self.net(a + b, rgb)

    mods = [Modality("a", channels=1), Modality("b", channels=1), Modality("rgb")]
    explainer = Explainer(Three(), mods, device="cpu")
    inputs = {"a": torch.randn(1, 1, 16, 16), "b": torch.randn(1, 1, 16, 16)}
    with pytest.raises(InputError, match="rgb is 20×20, but the model takes 16×16"):
        explainer.predict({**inputs, "rgb": torch.randn(1, 3, 20, 20)})


# -- signature ------------------------------------------------------------------------------------


def test_modalities_not_matching_forward_are_refused_when_the_explainer_is_built(three_net):
    two = [Modality("texture", channels=1), Modality("rgb")]
    with pytest.raises(InputError, match=r"required argument\(s\) x_p") as info:
        Explainer(three_net, two, device="cpu")
    assert "ThreeInputNet.forward(x_b" in str(info.value)
    four = [*two, Modality("frequency", channels=1), Modality("depth", channels=1)]
    with pytest.raises(InputError, match="4 modalities are passed by position"):
        Explainer(three_net, four, device="cpu")
    named = [
        Modality("texture", channels=1),
        Modality("frequency", channels=1),
        Modality("rgb", arg="x_rgb"),
    ]
    with pytest.raises(InputError, match="no argument named 'x_rgb'"):
        Explainer(three_net, named, device="cpu")


def test_star_args_and_keyword_models_still_work(three_net, three_modalities):
    class StarArgs(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = three_net

        def forward(self, *xs):
            return self.net(*xs)

    class Keywords(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = three_net

        def forward(self, x_b, **rest):
            return self.net(x_b, rest["x_f"], rest["x_p"])

    inputs = three_input_batch(1)
    reference = Explainer(three_net, three_modalities, device="cpu").explain(inputs, "fuse")
    star = Explainer(StarArgs(), three_modalities, device="cpu").explain(inputs, "net.fuse")
    keyword_modalities = [
        three_modalities[0],
        Modality("frequency", channels=1, arg="x_f"),
        Modality("rgb", arg="x_p", mean=three_modalities[2].mean, std=three_modalities[2].std),
    ]
    keyword = Explainer(Keywords(), keyword_modalities, device="cpu").explain(inputs, "net.fuse")
    np.testing.assert_allclose(star.cams["rgb"], reference.cams["rgb"], atol=1e-6)
    np.testing.assert_allclose(keyword.cams["rgb"], reference.cams["rgb"], atol=1e-6)


# -- specs ----------------------------------------------------------------------------------------

SPEC_HEAD = """
from torch import nn
from cam_core import Modality
MODALITIES = [Modality("rgb")]
"""


def _spec(tmp_path, name, body):
    path = tmp_path / f"{name}.py"
    path.write_text(SPEC_HEAD + body)
    return path


@pytest.mark.parametrize(
    "body, raised",
    [
        ("raise SystemExit(3)\ndef build_model(): pass\n", "SystemExit: 3"),
        ("class Boom(BaseException): pass\nraise Boom('nope')\n", "Boom: nope"),
    ],
)
def test_spec_raising_base_exceptions_at_import_is_a_spec_error(tmp_path, body, raised):
    with pytest.raises(SpecError, match=f"importing the spec raised {raised}"):
        load_spec(_spec(tmp_path, "broken", body))


@pytest.mark.parametrize("raise_", ["SystemExit('bye')", "BaseException('deep')"])
def test_build_model_raising_base_exceptions_is_a_spec_error(tmp_path, raise_):
    spec = load_spec(_spec(tmp_path, "exits", f"def build_model():\n    raise {raise_}\n"))
    with pytest.raises(SpecError, match=r"build_model\(\) of 'exits' raised"):
        spec.build_explainer(device="cpu")


def test_keyboard_interrupt_in_a_spec_still_stops_the_process(tmp_path):
    spec = load_spec(_spec(tmp_path, "ctrl_c", "def build_model():\n    raise KeyboardInterrupt\n"))
    with pytest.raises(KeyboardInterrupt):
        spec.build_explainer(device="cpu")


def test_one_broken_spec_leaves_every_other_model_available(tmp_path):
    broken = _spec(tmp_path, "broken", "raise SystemExit(1)\n")
    good = _spec(tmp_path, "good", "def build_model():\n    return nn.Conv2d(3, 2, 1)\n")
    models = available_models([broken, good], torchvision=False)
    assert isinstance(models["broken"], SpecError)
    assert not isinstance(models["good"], SpecError) and not isinstance(models["demo"], SpecError)


def test_spec_modalities_not_matching_forward_is_a_spec_error(tmp_path):
    body = "def build_model():\n    return nn.Bilinear(3, 3, 2)\n"  # forward(input1, input2)
    spec = load_spec(_spec(tmp_path, "two_args", body))
    with pytest.raises(SpecError, match=r"two_args\.py: the modalities \(rgb\) do not match"):
        spec.build_explainer(device="cpu")


# -- resources and channels -----------------------------------------------------------------------


def test_out_of_memory_while_preparing_inputs_is_a_resource_error(explainer, monkeypatch):
    def exhausted(self, images):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    images = {
        "texture": np.zeros((32, 32), np.uint8),
        "frequency": np.zeros((32, 32), np.uint8),
        "rgb": np.zeros((32, 32, 3), np.uint8),
    }
    with monkeypatch.context() as patch:
        patch.setattr(modality.Modality, "normalize", exhausted)
        with pytest.raises(ResourceError, match="while preparing the inputs"):
            explainer.explain(images, "fuse")
    assert explainer.explain(images, "fuse").cams["rgb"].shape == (1, 32, 32)


@pytest.mark.parametrize("channels", [2, 5])
def test_numpy_images_with_2_or_5_channels_are_refused_for_their_channels(explainer, channels):
    images = {
        "texture": np.zeros((32, 32), np.uint8),
        "frequency": np.zeros((32, 32), np.uint8),
        "rgb": np.zeros((32, 32, channels), np.uint8),
    }
    with pytest.raises(InputError, match=f"has {channels} channels") as info:
        explainer.explain(images, "fuse")
    assert info.value.modality == "rgb"
    assert "images" not in str(info.value)
