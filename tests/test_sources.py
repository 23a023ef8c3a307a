"""Model sources: spec files, the model list the app offers, and outputs other than a tensor."""

from __future__ import annotations

import dataclasses
import io
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cam_core.errors import CamError, InputError, ModelLoadError, SpecError
from cam_core.modality import Modality
from cam_core.sources import (
    TORCHVISION_MODELS,
    ModelSpec,
    available_models,
    demo_spec,
    load_spec,
    spec_paths_from,
    torchvision_spec,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

GOOD_SPEC = """\
import torch
from torch import nn
from cam_core import Modality

MODALITIES = [Modality("rgb", size=16), Modality("depth", channels=1, size=16)]
CLASSES = ["cat", "dog"]
DEFAULT_LAYER = "conv"
OUTPUT = "logits"
NOTICE = "toy model"

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6, 2)

    def forward(self, rgb, depth):
        x = torch.relu(self.conv(torch.cat([rgb, depth], 1)))
        return {"aux": x, "logits": self.fc(x.mean((2, 3)))}

def build_model():
    torch.manual_seed(0)
    return Net()
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def _inputs(n: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"rgb": torch.randn(n, 3, 16, 16, generator=g), "depth": torch.rand(n, 1, 16, 16)}


# --- loading a spec file --------------------------------------------------------------------


def test_good_spec_loads_every_field(tmp_path):
    spec = load_spec(_write(tmp_path, "toy.py", GOOD_SPEC))
    assert spec.name == "toy"
    assert [m.name for m in spec.modalities] == ["rgb", "depth"]
    assert spec.classes == ("cat", "dog")
    assert spec.default_layer == "conv"
    assert spec.output == "logits"
    assert spec.notice == "toy model"
    assert spec.checkpoint is None
    assert spec.source == str((tmp_path / "toy.py").resolve())
    model, report = spec.load_model()
    assert isinstance(model, nn.Module) and report is None


def test_good_spec_builds_an_explainer_that_explains(tmp_path):
    spec = load_spec(_write(tmp_path, "toy.py", GOOD_SPEC))
    explainer = spec.build_explainer(device="cpu")
    assert explainer.default_layer == "conv" and explainer.classes == ["cat", "dog"]
    result = explainer.explain(_inputs(), method="gradcam")
    assert result.cams["rgb"].shape == (2, 16, 16)
    assert result.cams["depth"].shape == (2, 16, 16)
    assert result.probabilities.shape == (2, 2)


def test_each_build_is_a_fresh_model(tmp_path):
    spec = load_spec(_write(tmp_path, "toy.py", GOOD_SPEC))
    first, _ = spec.load_model()
    second, _ = spec.load_model()
    assert first is not second


def test_missing_build_model_is_named(tmp_path):
    path = _write(
        tmp_path, "nobuild.py", "from cam_core import Modality\nMODALITIES = [Modality('rgb')]\n"
    )
    with pytest.raises(SpecError, match=r"nobuild\.py: defines no build_model\(\)"):
        load_spec(path)


def test_misspelled_build_model_gets_a_case_hint(tmp_path):
    path = _write(tmp_path, "case.py", "def Build_Model():\n    pass\n")
    with pytest.raises(SpecError, match="found Build_Model; names are case-sensitive"):
        load_spec(path)


def test_syntax_error_names_file_and_line(tmp_path):
    path = _write(tmp_path, "broken.py", "import torch\n\ndef build_model(:\n    pass\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert f"{path.resolve()}:3: syntax error" in str(info.value)
    assert isinstance(info.value.__cause__, SyntaxError)


def test_exception_while_importing_names_file_line_and_cause(tmp_path):
    path = _write(tmp_path, "raises.py", "import os\n\nx = 1\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(
        SpecError, match=r"raises\.py:4: importing the spec raised RuntimeError: no GPU"
    ):
        load_spec(path)


def test_missing_import_in_spec_is_reported(tmp_path):
    path = _write(tmp_path, "imports.py", "import not_a_real_package_xyz\n")
    with pytest.raises(
        SpecError, match=r"imports\.py:1: .*ModuleNotFoundError.*not_a_real_package_xyz"
    ):
        load_spec(path)


def test_build_raising_names_spec_line_and_inner_location(tmp_path):
    _write(
        tmp_path,
        "my_net.py",
        """\
        def make():
            raise ValueError("num_classes must be > 0")
        """,
    )
    path = _write(
        tmp_path,
        "buildfails.py",
        """\
        from cam_core import Modality
        import my_net  # next to the spec: importable

        MODALITIES = [Modality("rgb")]

        def build_model():
            return my_net.make()
        """,
    )
    spec = load_spec(path)  # importing works; the failure comes with building
    with pytest.raises(SpecError) as info:
        spec.load_model()
    message = str(info.value)
    assert f"{path.resolve()}:7: build_model() of 'buildfails' raised ValueError" in message
    assert "num_classes must be > 0" in message
    assert "my_net.py:2" in message


def test_build_returning_something_else_is_refused(tmp_path):
    path = _write(
        tmp_path,
        "notmodule.py",
        "from cam_core import Modality\nMODALITIES = [Modality('rgb')]\n"
        "def build_model():\n    return {'weights': 1}\n",
    )
    with pytest.raises(SpecError, match="returned dict; it must return the torch.nn.Module"):
        load_spec(path).load_model()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("MODALITIES = None", "defines no MODALITIES"),
        ("MODALITIES = ['rgb']", r":2: MODALITIES holds 'rgb' \(str\)"),
        ("MODALITIES = [Modality('a'), Modality('a')]", "names a more than once"),
        ("MODALITIES = [Modality('a')]\nCLASSES = 'cat'", r":3: CLASSES must be a non-empty list"),
        ("MODALITIES = [Modality('a')]\nDEFAULT_LAYER = 4", ":3: DEFAULT_LAYER must be"),
        ("MODALITIES = [Modality('a')]\nOUTPUT = 1.5", ":3: OUTPUT must be"),
        ("MODALITIES = [Modality('a')]\nCHECKPOINT = 'w.pt'", r"CHECKPOINT .*w\.pt does not exist"),
    ],
)
def test_malformed_spec_values_are_named_with_their_line(tmp_path, line, expected):
    text = f"from cam_core import Modality\n{line}\ndef build_model():\n    pass\n"
    with pytest.raises(SpecError, match=expected):
        load_spec(_write(tmp_path, "bad.py", text))


def test_missing_file_folder_and_non_python_are_refused(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "absent.py")
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)
    with pytest.raises(SpecError, match="not a .py file"):
        load_spec(_write(tmp_path, "spec.txt", GOOD_SPEC))


def test_spec_checkpoint_is_relative_to_the_spec_and_loaded(tmp_path):
    weights_spec = load_spec(_write(tmp_path, "toy.py", GOOD_SPEC))
    trained, _ = weights_spec.load_model()
    with torch.no_grad():
        trained.fc.bias.fill_(3.0)
    (tmp_path / "weights").mkdir()
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "weights" / "toy.pt")
    path = _write(tmp_path, "toy_ckpt.py", GOOD_SPEC + "CHECKPOINT = 'weights/toy.pt'\n")
    spec = load_spec(path)
    assert spec.checkpoint == (tmp_path / "weights" / "toy.pt").resolve()
    model, report = spec.load_model()
    assert torch.equal(model.fc.bias, torch.full((2,), 3.0))
    assert report.nested_under == "state_dict"
    assert spec.notice_for(None) is None  # a loaded checkpoint clears the notice


def test_failed_checkpoint_leaves_the_loaded_explainer_alone(tmp_path):
    spec = load_spec(_write(tmp_path, "toy.py", GOOD_SPEC))
    explainer = spec.build_explainer(device="cpu")
    before = {k: v.clone() for k, v in explainer.model.state_dict().items()}
    wrong = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(5, 6)}, wrong)
    with pytest.raises(ModelLoadError, match="missing"):
        spec.build_explainer(device="cpu", checkpoint=wrong.getvalue())
    for key, value in explainer.model.state_dict().items():
        assert torch.equal(value, before[key])
    assert explainer.explain(_inputs(1)).cams["rgb"].shape == (1, 16, 16)


# --- the examples -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["forgery_spec.py", "two_stream_vit_spec.py"])
def test_example_specs_explain_at_their_default_layer(name):
    spec = load_spec(EXAMPLES / name)
    explainer = spec.build_explainer(device="cpu")
    inputs = {
        m.name: torch.rand(2, m.channels, *m.size, generator=torch.Generator().manual_seed(i))
        for i, m in enumerate(spec.modalities)
    }
    row = next(info for info in explainer.layer_tree() if info.path == spec.default_layer)
    assert row.ready, row.reason
    result = explainer.explain(inputs, method="gradcam")
    for m in spec.modalities:
        assert result.cams[m.name].shape == (2, *m.size)
    assert not result.empty["rgb"].any(), result.notices


def test_forgery_example_has_the_users_forward_signature():
    spec = load_spec(EXAMPLES / "forgery_spec.py")
    model, _ = spec.load_model()
    assert [m.arg for m in spec.modalities] == ["x_b", "x_f", "x_p"]
    assert [m.name for m in spec.modalities] == ["texture", "frequency", "rgb"]
    assert any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


def test_two_stream_vit_token_layer_is_laid_on_the_patch_grid():
    spec = load_spec(EXAMPLES / "two_stream_vit_spec.py")
    explainer = spec.build_explainer(device="cpu")
    rows = {info.path: info for info in explainer.layer_tree()}
    assert rows["rgb_from_depth"].output_shape == (1, 65, 64)
    result = explainer.explain(
        {"rgb": torch.rand(1, 3, 64, 64), "depth": torch.rand(1, 1, 64, 64)},
        layer="rgb_from_depth",
    )
    assert result.raw["rgb"].shape[-2:] == (8, 8)  # class token dropped, 8x8 patch grid


# --- outputs other than a tensor --------------------------------------------------------------


@dataclasses.dataclass
class _Output:
    features: torch.Tensor
    scores: torch.Tensor


class _ManyOutputs(nn.Module):
    """Returns its 3-class scores wrapped as ``kind``; the aux entry comes first on purpose."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, rgb: torch.Tensor):
        features = torch.relu(self.conv(rgb))
        scores = self.fc(features.mean((2, 3)))
        aux = features.mean(1)
        return {
            "tensor": scores,
            "tuple": (scores, aux),
            "dict_logits": {"aux": aux, "logits": scores},
            "dict_scores": {"aux": aux, "scores": scores},
            "dataclass": _Output(features=aux, scores=scores),
        }[self.kind]


def _many_outputs_spec(kind: str, output: object) -> ModelSpec:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return _ManyOutputs(kind)

    return ModelSpec(
        name=kind,
        build_model=build,
        modalities=(Modality("rgb", size=12),),
        default_layer="conv",
        output=output,
    )


@pytest.mark.parametrize(
    ("kind", "output"),
    [
        ("tensor", None),
        ("tuple", None),  # default rule: first tensor
        ("tuple", 0),
        ("dict_logits", None),  # default rule: the "logits" key
        ("dict_scores", "scores"),
        ("dataclass", "scores"),
        ("dataclass", lambda out: out.scores),
    ],
)
def test_output_rule_picks_the_logits(kind, output):
    explainer = _many_outputs_spec(kind, output).build_explainer(device="cpu")
    reference = _many_outputs_spec("tensor", None).build_explainer(device="cpu")
    images = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    result = explainer.explain({"rgb": images}, method="gradcam", target=1)
    expected = reference.explain({"rgb": images}, method="gradcam", target=1)
    np.testing.assert_allclose(result.probabilities, expected.probabilities, rtol=1e-6)
    np.testing.assert_allclose(result.cams["rgb"], expected.cams["rgb"], atol=1e-6)


@pytest.mark.parametrize(
    ("kind", "output", "listed"),
    [
        ("dict_scores", None, "'aux': Tensor(2, 12, 12)"),  # first tensor is not (N, K)
        ("dict_scores", "logits", "'scores': Tensor(2, 3)"),
        ("dataclass", 5, "_Output(features=Tensor(2, 12, 12), scores=Tensor(2, 3))"),
    ],
)
def test_wrong_output_rule_lists_what_the_model_returned(kind, output, listed):
    explainer = _many_outputs_spec(kind, output).build_explainer(device="cpu")
    with pytest.raises(InputError) as info:
        explainer.explain({"rgb": torch.randn(2, 3, 12, 12)}, method="gradcam")
    assert listed in str(info.value)


# --- what the app offers ----------------------------------------------------------------------


def test_spec_paths_from_argv_and_environment(tmp_path):
    env = {"CAM_EXPLORER_SPEC": os.pathsep.join(["env_a.py", "", "b.py"])}
    argv = ["--spec", "a.py", "--other", "x", "--spec=b.py"]
    assert spec_paths_from(argv, env) == [Path("a.py"), Path("b.py"), Path("env_a.py")]
    assert spec_paths_from(["app.py", "--", "--spec", "c.py"], {}) == [Path("c.py")]
    assert spec_paths_from([], {}) == []


def test_available_models_keeps_working_models_next_to_a_broken_spec(tmp_path):
    good = _write(tmp_path, "toy.py", GOOD_SPEC)
    broken = _write(tmp_path, "broken.py", "def build_model(:\n")
    (tmp_path / "other").mkdir()
    same_stem = _write(tmp_path / "other", "toy.py", GOOD_SPEC)
    models = available_models([good, broken, same_stem, tmp_path / "missing.py"])
    assert list(models)[:5] == ["demo", "toy", "broken", str(same_stem), "missing"]
    assert list(models)[5:] == list(TORCHVISION_MODELS)
    assert isinstance(models["toy"], ModelSpec)
    assert isinstance(models["broken"], SpecError) and "syntax error" in str(models["broken"])
    assert models[str(same_stem)].name == str(same_stem)
    assert isinstance(models["missing"], SpecError)
    assert isinstance(models["demo"], ModelSpec), models["demo"]
    assert all(isinstance(models[n], ModelSpec) for n in TORCHVISION_MODELS)
    # the broken spec does not stop the good one from working
    assert models["toy"].build_explainer(device="cpu").explain(_inputs(1)).cams["depth"].shape


def test_spec_named_like_a_torchvision_model_does_not_shadow_it(tmp_path):
    path = _write(tmp_path, "resnet18.py", GOOD_SPEC)
    models = available_models([path])
    assert models["resnet18"].source == "torchvision"
    assert models[str(path)].source == str(path.resolve())


def test_demo_spec_wraps_the_bundled_demo():
    spec = demo_spec()
    assert spec.name == "demo" and spec.modalities and spec.default_layer
    assert spec.notice_for(None) is None


def test_unknown_torchvision_name_lists_the_choices():
    with pytest.raises(SpecError, match="choose one of resnet18, resnet50"):
        torchvision_spec("resnet19")


def test_torchvision_model_follows_a_fine_tuned_checkpoints_class_count():
    torch.manual_seed(0)
    import torchvision

    fine_tuned = torchvision.models.resnet18(weights=None, num_classes=5)
    buffer = io.BytesIO()
    torch.save(nn.DataParallel(fine_tuned).state_dict(), buffer)
    spec = torchvision_spec("resnet18", image_size=32)
    explainer = spec.build_explainer(device="cpu", checkpoint=buffer.getvalue())
    assert explainer.model.fc.out_features == 5
    assert explainer.classes is None  # ImageNet names no longer apply
    assert explainer.predict({"rgb": torch.randn(1, 3, 32, 32)}).shape == (1, 5)


def test_spec_errors_are_cam_errors():
    assert issubclass(SpecError, ModelLoadError) and issubclass(SpecError, CamError)
