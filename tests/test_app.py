"""The Streamlit app, headless (streamlit.testing.v1.AppTest): the explorer page end to end."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from cam_core import demo
from cam_core.explainer import Explainer
from pages.ui.explorer import BRANCHES, ONE_LAYER

APP = str(Path(__file__).absolute().parents[1] / "app.py")
TIMEOUT = 180  # generous: two CPU cores are shared with other test runs


@pytest.fixture
def explain_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every Explainer.explain (and explain_branches: layer "branches") call the app makes
    (layer, method, target), in order."""
    calls: list[dict] = []
    original = Explainer.explain

    def counting(self, inputs, layer, method="gradcam", target=None, **kwargs):
        calls.append({"layer": layer, "method": method, "target": target})
        return original(self, inputs, layer, method, target, **kwargs)

    def branches(self, inputs, method="gradcam", target=None, **kwargs):
        calls.append({"layer": "branches", "method": method, "target": target})
        return original_branches(self, inputs, method, target, **kwargs)

    original_branches = Explainer.explain_branches
    monkeypatch.setattr(Explainer, "explain", counting)
    monkeypatch.setattr(Explainer, "explain_branches", branches)
    return calls


@pytest.fixture
def deferred_downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[[], bytes]]:
    """file name -> the callable each (deferred) st.download_button registered: what the
    browser receives on click."""
    found: dict[str, Callable[[], bytes]] = {}
    original = MediaFileManager.add_deferred

    def spy(self, data, mimetype, coordinates, file_name=None, **kwargs):
        found[file_name] = data
        return original(self, data, mimetype, coordinates, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy)
    return found


@pytest.fixture
def app() -> Iterator[AppTest]:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    yield at


def png_bytes(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> bytes:
    """A real PNG file: random pixels of the given (height, width) and mode."""
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if mode == "RGB" else size
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, "PNG")
    return buffer.getvalue()


def modalities(at: AppTest) -> list:
    from pages.ui import common

    return list(common.load_model(common.DEMO_MODEL).modalities)


def uploader(at: AppTest, name: str):
    return at.file_uploader(key=f"upload:demo:{name}")


def upload_all(at: AppTest, count: int = 1, seed: int = 0) -> None:
    """One real PNG per sample for every modality (grayscale where the modality is)."""
    for m in modalities(at):
        mode = "L" if m.channels == 1 else "RGB"
        files = [
            (f"{m.name}_{i}.png", png_bytes((48, 40), mode, seed + i), "image/png")
            for i in range(count)
        ]
        uploader(at, m.name).set_value(files)


def captions(at: AppTest) -> list[str]:
    return [c for image in at.image for c in image.captions]


def test_opens_on_the_demo_with_overlays_shown(app: AppTest) -> None:
    names = [m.name for m in modalities(app)]
    assert len(app.image) == len(names)  # one sample preloaded: one overlay per modality
    assert [c.split(" · ")[0] for c in captions(app)] == names
    assert all("%" in c for c in captions(app))  # class and probability in the caption
    assert not app.error
    # One uploader per modality, labelled with its name, channels and size.
    for m in modalities(app):
        assert m.name in uploader(app, m.name).label
    # Every class's probability, named as such: "top-5" only when there are more than five.
    from cam_core import demo

    assert len(demo.CLASSES) <= 5
    (line,) = [md.value for md in app.markdown if md.value.startswith("**Sample 1**")]
    assert "probabilities:" in line and "top-" not in line
    assert line.count("%") == len(demo.CLASSES)
    # The model picker (app.py, shared by all pages) survives reruns.
    app.run()
    assert app.selectbox(key="model").value == "demo"


def test_uploading_a_png_per_modality_gives_new_overlays(
    app: AppTest, explain_calls: list[dict]
) -> None:
    before = [image.value for image in app.image]
    upload_all(app, count=2, seed=7)
    app.run()
    assert not app.exception and not app.error
    assert len(explain_calls) == 1
    assert len(app.image) == 2 * len(modalities(app))  # two samples, paired by order
    assert [image.value for image in app.image][:3] != before
    assert any("_1.png" in c for c in captions(app))


def test_different_file_counts_per_modality_is_a_clear_error(app: AppTest) -> None:
    upload_all(app, count=1)
    first = modalities(app)[0].name
    uploader(app, first).set_value(
        [(f"x{i}.png", png_bytes((32, 32), seed=i), "image/png") for i in range(2)]
    )
    app.run()
    assert not app.exception
    assert any("same number" in e.value for e in app.error)
    assert app.image  # the previous result stays on screen


def test_broken_upload_errors_for_that_modality_and_keeps_the_rest(
    app: AppTest, explain_calls: list[dict]
) -> None:
    shown = [image.value for image in app.image]
    upload_all(app, count=1, seed=3)
    broken = modalities(app)[-1].name
    uploader(app, broken).set_value(("broken.png", b"not a png at all", "image/png"))
    app.run()
    assert not app.exception
    assert [e.value for e in app.error if "broken.png" in e.value]
    assert not explain_calls  # nothing computed from an incomplete batch
    assert [image.value for image in app.image] == shown  # the previous result stays
    for m in modalities(app)[:-1]:
        assert uploader(app, m.name).value  # the other uploads are kept
    # Fixing the broken one computes with the kept uploads.
    uploader(app, broken).set_value(("fixed.png", png_bytes((40, 40), "L"), "image/png"))
    app.run()
    assert not app.error and len(explain_calls) == 1
    assert any("fixed.png" in c for c in captions(app))


def test_upload_over_the_size_limit_is_refused_with_the_limit(app: AppTest) -> None:
    name = modalities(app)[0].name
    uploader(app, name).set_value(("huge.png", b"\0" * (21 * 1024 * 1024), "image/png"))
    app.run()
    assert not app.exception
    assert any("huge.png" in e.value and "limit is 20 MB" in e.value for e in app.error)
    assert app.image


def open_layer_panel(at: AppTest):
    """The layer panel's table (sent closed; the browser opens it on a click)."""
    return at.dataframe[0]


def layer_panel(at: AppTest):
    (panel,) = [e for e in at.expander if e.label.startswith(("Layer ", "One layer for all"))]
    return panel


def test_selecting_a_layer_in_the_tree_recomputes_there(
    app: AppTest, explain_calls: list[dict]
) -> None:
    table = open_layer_panel(app)
    rows = table.value
    pick = int(
        np.flatnonzero((rows["path"] != app.session_state["layer:demo"]) & rows["CAM target"])[0]
    )
    path = rows["path"][pick]
    app.session_state[table.key] = {"selection": {"rows": [pick], "columns": []}}
    app.run()
    assert not app.exception and not app.error
    assert app.session_state["layer:demo"] == path
    assert explain_calls and explain_calls[-1]["layer"] == path
    assert any(path in c.value for c in app.caption)


def test_a_layer_that_cannot_be_a_target_is_refused_with_the_reason(app: AppTest) -> None:
    table = open_layer_panel(app)
    rows = table.value
    current = app.session_state["layer:demo"]
    refused = np.flatnonzero(~rows["CAM target"].astype(bool))
    if not len(refused):
        pytest.skip("the demo model has no layer that cannot be a CAM target")
    pick = int(refused[0])
    app.session_state[table.key] = {"selection": {"rows": [pick], "columns": []}}
    app.run()
    assert not app.exception
    assert app.session_state["layer:demo"] == current
    assert any(
        "cannot be a CAM target" in w.value and rows["note"][pick] in w.value for w in app.warning
    )


def test_image_weight_and_colormap_only_reblend(app: AppTest, explain_calls: list[dict]) -> None:
    before = [image.value for image in app.image]
    app.slider(key="image_weight").set_value(0.2).run()
    after_weight = [image.value for image in app.image]
    app.selectbox(key="colormap").set_value("viridis").run()
    after_colormap = [image.value for image in app.image]
    assert not app.exception
    assert explain_calls == []  # no model call for a display change
    assert before != after_weight != after_colormap


def test_zip_download_unzips_to_the_promised_files(
    app: AppTest,
    deferred_downloads: dict[str, Callable[[], bytes]],
) -> None:
    upload_all(app, count=2, seed=11)
    app.selectbox(key="colormap").set_value("turbo")
    app.slider(key="image_weight").set_value(0.35)
    app.run()
    assert not app.exception
    (name,) = [n for n in deferred_downloads if n.endswith(".zip")]
    data = deferred_downloads[name]()
    sizes = {m.name: m.size for m in modalities(app)}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = set(archive.namelist())
        settings = json.loads(archive.read("settings.json"))
        for m, size in sizes.items():
            for i in range(2):
                # Overlays and originals at the upload's own size (48x40), CAMs at the model's.
                for kind in ("overlays", "originals"):
                    with Image.open(io.BytesIO(archive.read(f"{kind}/{i:02d}_{m}.png"))) as im:
                        assert im.size[::-1] == (48, 40) and im.mode == "RGB"
                cam = np.load(io.BytesIO(archive.read(f"cams/{i:02d}_{m}.npy")))
                assert cam.shape == tuple(size) and cam.dtype == np.float32
                assert f"raw/{i:02d}_{m}.npy" in members
    assert settings["model"] == "demo"
    assert settings["colormap"] == "turbo" and settings["image_weight"] == 0.35
    # The demo opens on each modality's own branch: no one layer, a layer per modality.
    from pages.ui import common

    assert settings["layer"] is None
    assert settings["layers"] == common.load_model(common.DEMO_MODEL).branches()
    assert settings["method"] == "gradcam" and settings["target"] is None
    assert len(settings["probabilities"]) == 2
    assert settings["inputs"][next(iter(sizes))] == [f"{next(iter(sizes))}_{i}.png" for i in (0, 1)]
    assert set(settings["files"]) == members
    # Each overlay in the ZIP is byte for byte the PNG of its own download button (and shown).
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for m in sizes:
            for i in range(2):
                png = deferred_downloads[f"{i:02d}_{m}_overlay.png"]()
                assert archive.read(f"overlays/{i:02d}_{m}.png") == png


def test_about_page_renders(app: AppTest) -> None:
    app.switch_page("pages/about.py").run()
    assert not app.exception
    assert any("spec" in md.value for md in app.markdown)


def test_a_missing_modality_is_named_and_the_result_kept(app: AppTest) -> None:
    shown = [image.value for image in app.image]
    first, *others = modalities(app)
    mode = "L" if first.channels == 1 else "RGB"
    uploader(app, first.name).set_value(("only.png", png_bytes((32, 32), mode), "image/png"))
    app.run()
    assert not app.exception
    assert any(repr(others[0].name) in w.value for w in app.warning)
    assert [image.value for image in app.image] == shown


def test_choosing_a_target_class_explains_that_class(
    app: AppTest, explain_calls: list[dict]
) -> None:
    target = app.selectbox(key="target")
    klass = target.options[-1]  # "k: name"
    index = int(klass.split(":")[0])
    target.set_value(index).run()
    assert not app.exception and not app.error
    assert explain_calls[-1]["target"] == index
    assert all(klass.split(": ")[1] in c for c in captions(app))


def test_a_slow_method_runs_with_progress(app: AppTest, explain_calls: list[dict]) -> None:
    app.selectbox(key="method").set_value("scorecam").run()
    assert not app.exception and not app.error
    assert explain_calls[-1]["method"] == "scorecam"
    assert len(app.image) == len(modalities(app))


def test_stopping_mid_compute_leaves_no_hooks() -> None:
    """A Streamlit rerun/stop surfaces as an exception from the progress callback (the script's
    next st call); the model must come out clean."""
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    from pages.ui import common

    explainer = common.load_model(common.DEMO_MODEL)
    images = {m.name: [np.zeros((*m.size, m.channels), np.uint8)] for m in explainer.modalities}

    def stop(done: int, total: int) -> None:
        raise StopException()

    with pytest.raises(StopException):
        explainer.explain(images, explainer.default_layer, "scorecam", progress=stop)
    model = explainer.model
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks


# ---------------------------------------------------------------------------- checkpoint upload
class _WritesAFile:
    """A pickle payload: unpickling it calls open(path, "w"), which creates the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def saved(obj: object) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def checkpoint_uploader(at: AppTest, model: str = "demo"):
    return at.file_uploader(key=f"checkpoint_upload:{model}")


def shown_probabilities(at: AppTest, model: str = "demo") -> np.ndarray:
    return np.asarray(at.session_state[f"last:{model}"]["result"].probabilities)


def reseeded_demo_weights(seed: int) -> dict:
    """A state_dict for the demo architecture that differs from the bundled weights."""
    import torch

    from cam_core import sources

    model = sources.demo_spec().build_model()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model.state_dict()


def reference_probabilities(spec, checkpoint: bytes | None, images: dict) -> np.ndarray:
    """Probabilities computed without the app: a fresh explainer from the spec."""
    explainer = spec.build_explainer(checkpoint=checkpoint)
    return explainer.explain(images, explainer.default_layer).probabilities


def test_checkpoint_upload_replaces_random_weights_and_their_notice(app: AppTest) -> None:
    import torch
    import torchvision

    from cam_core import sources

    app.selectbox(key="model").set_value("resnet18").run()
    image = png_bytes((64, 64), seed=5)
    app.file_uploader(key="upload:resnet18:rgb").set_value(("cat.png", image, "image/png")).run()
    assert not app.exception and not app.error
    assert any(sources.RANDOM_WEIGHTS_NOTICE in w.value for w in app.warning)
    random_probabilities = shown_probabilities(app, "resnet18")

    # Fine-tuned on 5 classes, saved from DataParallel inside a training checkpoint.
    torch.manual_seed(0)
    trained = torchvision.models.resnet18(num_classes=5)
    state = {f"module.{k}": v for k, v in trained.state_dict().items()}
    data = saved({"model": state, "epoch": 7})
    checkpoint_uploader(app, "resnet18").set_value(("finetuned.pth", data, "")).run()
    assert not app.exception and not app.error
    assert not any(sources.RANDOM_WEIGHTS_NOTICE in w.value for w in app.warning)
    (loaded,) = [s.value for s in app.success]
    assert "finetuned.pth" in loaded and "'model'" in loaded and "'module.'" in loaded
    assert str(len(trained.state_dict())) in loaded
    probabilities = shown_probabilities(app, "resnet18")
    expected = reference_probabilities(sources.torchvision_spec("resnet18"), data, {"rgb": [image]})
    assert probabilities.shape == (1, 5) != random_probabilities.shape
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_refused_checkpoints_keep_the_previous_one_and_a_good_one_loads(
    app: AppTest, tmp_path: Path
) -> None:
    from cam_core import sources

    spec = sources.demo_spec()
    upload_all(app, count=1, seed=2)
    app.run()
    images = {m.name: [f.getvalue() for f in uploader(app, m.name).value] for m in modalities(app)}
    base = shown_probabilities(app)
    np.testing.assert_allclose(base, reference_probabilities(spec, None, images), atol=1e-5)

    good = saved(reseeded_demo_weights(seed=1))
    checkpoint_uploader(app).set_value(("good.pt", good, "")).run()
    assert not app.exception and not app.error
    expected = reference_probabilities(spec, good, images)
    np.testing.assert_allclose(shown_probabilities(app), expected, atol=1e-5)
    assert not np.allclose(expected, base)
    shown = [image.value for image in app.image]

    # A pickle that would create a file: refused before it runs; good.pt stays in use.
    target = tmp_path / "pwned.txt"
    checkpoint_uploader(app).set_value(("evil.pt", saved({"w": _WritesAFile(target)}), "")).run()
    assert not app.exception
    assert not target.exists()
    (error,) = app.error
    assert "evil.pt" in error.value and "state_dict" in error.value
    assert any("Still using the checkpoint **good.pt**" in c.value for c in app.caption)
    np.testing.assert_allclose(shown_probabilities(app), expected, atol=1e-5)
    assert [image.value for image in app.image] == shown
    for m in modalities(app):
        assert uploader(app, m.name).value  # the other inputs are kept

    # Wrong keys: every problem key is named.
    wrong = reseeded_demo_weights(seed=1)
    missing = next(iter(wrong))
    wrong["extra.weight"] = wrong.pop(missing)
    checkpoint_uploader(app).set_value(("wrong.pt", saved(wrong), "")).run()
    assert not app.exception
    (error,) = app.error
    assert missing in error.value and "extra.weight" in error.value
    np.testing.assert_allclose(shown_probabilities(app), expected, atol=1e-5)

    # Another good one loads; removing it goes back to the base model.
    other = saved(reseeded_demo_weights(seed=2))
    checkpoint_uploader(app).set_value(("other.pt", other, "")).run()
    assert not app.exception and not app.error
    np.testing.assert_allclose(
        shown_probabilities(app), reference_probabilities(spec, other, images), atol=1e-5
    )
    checkpoint_uploader(app).set_value(None).run()
    assert not app.exception and not app.error and not app.success
    np.testing.assert_allclose(shown_probabilities(app), base, atol=1e-5)


def test_checkpoint_over_the_limit_is_refused_with_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pages.ui import common

    # Before the first run: the widget's (browser-side) limit is part of its identity.
    monkeypatch.setattr(common, "CHECKPOINT_LIMIT_MB", 0.5)
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    shown = [image.value for image in app.image]
    big = saved(reseeded_demo_weights(seed=1)) + b"\0" * (1024 * 1024)
    checkpoint_uploader(app).set_value(("big.pt", big, "")).run()
    assert not app.exception
    (error,) = app.error
    assert "big.pt" in error.value and "limit is 0.5 MB" in error.value
    assert [image.value for image in app.image] == shown


# -- each modality's own branch, and modality contributions ------------------------------------


def charts(at: AppTest) -> list:
    """The data of every contributions chart shown, one DataFrame per sample."""
    return [
        pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_pandas()
        for chart in at.get("vega_lite_chart")
    ]


def test_each_modality_s_own_branch_is_the_default_on_the_demo(app: AppTest) -> None:
    mode = app.radio(key="layer_mode:demo")
    assert mode.value == BRANCHES and mode.options == [BRANCHES, ONE_LAYER]
    result = app.session_state["last:demo"]["result"]
    branches = demo.load_explainer("cpu").branches()
    assert result.layers == branches and result.layer is None
    # Each overlay is its own input's map, not one map resized onto every input.
    assert not np.allclose(result.cams["rgb"], result.cams["texture"])
    shown = " ".join(c.value for c in app.caption)
    assert all(f"`{layer}`" in shown for layer in branches.values())
    assert result.fused_notice is None and "One map of a fused layer" not in shown


def test_one_layer_after_the_fusion_says_once_it_is_one_fused_map(
    app: AppTest, explain_calls: list[dict]
) -> None:
    app.radio(key="layer_mode:demo").set_value(ONE_LAYER).run()
    assert not app.exception and not app.error
    assert explain_calls[-1]["layer"] == demo.DEFAULT_LAYER  # head.features: after the fusion
    fused = [c.value for c in app.caption if c.value.startswith("One map of a fused layer")]
    assert len(fused) == 1 and demo.DEFAULT_LAYER in fused[0]
    assert not any("One map of a fused layer" in box.value for box in app.info)  # said once


def test_picking_a_layer_row_leaves_the_branches(app: AppTest, explain_calls: list[dict]) -> None:
    table = app.dataframe[0]
    rows = table.value
    pick = int(np.flatnonzero(rows["path"] == "texture_branch.down2")[0])
    app.session_state[table.key] = {"selection": {"rows": [pick], "columns": []}}
    app.run()
    assert not app.exception and not app.error
    assert app.radio(key="layer_mode:demo").value == ONE_LAYER
    assert explain_calls[-1]["layer"] == "texture_branch.down2"
    # Back to the branches (cached: no recompute); the table's layer is kept for later.
    app.radio(key="layer_mode:demo").set_value(BRANCHES).run()
    assert app.session_state["last:demo"]["result"].layers["texture"] == "texture_branch"
    assert app.session_state["layer:demo"] == "texture_branch.down2"


def test_contributions_chart_per_sample_shows_explainer_contributions(app: AppTest) -> None:
    upload_all(app, count=2, seed=5)
    app.run()
    assert not app.exception and not app.error
    shown = charts(app)
    assert len(shown) == 2  # one chart per sample, next to its overlays
    # The same PNGs straight to cam_core, for the classes the app explained.
    explainer = demo.load_explainer("cpu")
    files = {
        m.name: [png_bytes((48, 40), "L" if m.channels == 1 else "RGB", 5 + i) for i in range(2)]
        for m in modalities(app)
    }
    targets = app.session_state["last:demo"]["result"].targets
    expected = explainer.contributions(files, targets)
    for i, frame in enumerate(shown):
        assert list(frame["modality"]) == explainer.names
        np.testing.assert_allclose(
            frame["drop"], [expected[name][i] for name in explainer.names], atol=1e-5
        )


def test_a_method_without_layer_runs_while_the_branches_are_chosen(
    app: AppTest, explain_calls: list[dict]
) -> None:
    assert app.radio(key="layer_mode:demo").value == BRANCHES
    app.selectbox(key="method").set_value("fullgrad").run()
    assert not app.exception and not app.error
    assert explain_calls[-1] == {"layer": None, "method": "fullgrad", "target": None}
    assert len(app.image) == len(modalities(app))


# --------------------------------------------------------------- state, URL, settings (issue 11)
SIZELESS_SPEC = """
import torch
from torch import nn
from cam_core import Modality

MODALITIES = [Modality("rgb"), Modality("depth", channels=1)]
CLASSES = ["cat", "dog"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rgb = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.depth = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(8, 4, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 2)

    def forward(self, rgb, depth):
        x = self.fuse(torch.cat([self.rgb(rgb), self.depth(depth)], 1))
        return self.head(self.pool(x).flatten(1))


def build_model():
    torch.manual_seed(0)
    return Net()
"""


@pytest.fixture
def sizeless_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The README's minimal spec shape (no size= on any modality), given to the app the way
    `streamlit run app.py -- --spec` does; the app's model list is re-read."""
    from pages.ui import common

    path = tmp_path / "mine.py"
    path.write_text(SIZELESS_SPEC)
    monkeypatch.setenv("CAM_EXPLORER_SPEC", str(path))
    common._available_models.clear()
    yield path
    common._available_models.clear()


def test_choices_and_uploads_survive_a_visit_to_another_page(
    app: AppTest, explain_calls: list[dict]
) -> None:
    upload_all(app, count=1, seed=21)
    app.selectbox(key="colormap").set_value("viridis")
    app.slider(key="image_weight").set_value(0.3)
    app.selectbox(key="target").set_value(1)
    app.toggle(key="show_originals").set_value(True)
    app.run()
    shown = [image.value for image in app.image]
    assert len(explain_calls) == 1
    app.switch_page("pages/about.py").run()
    assert not app.exception
    app.switch_page("pages/explorer.py").run()
    assert not app.exception and not app.error
    assert app.selectbox(key="colormap").value == "viridis"
    assert app.slider(key="image_weight").value == pytest.approx(0.3)
    assert app.selectbox(key="target").value == 1
    assert app.toggle(key="show_originals").value is True
    # The uploads are explained again, from the result cache: same pictures, no model call.
    assert all("_0.png" in c for c in captions(app) if "original" not in c)
    assert [image.value for image in app.image] == shown
    assert len(explain_calls) == 1
    assert any("Kept from before" in c.value for c in app.caption)
    # Forgetting them goes back to the bundled sample.
    for m in modalities(app):
        app.button(key=f"forget:upload:demo:{m.name}").click()
        app.run()
    assert not any("_0.png" in c for c in captions(app))


def test_the_url_query_reproduces_model_layer_method_target_and_display() -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(
        {
            "layer": "rgb_branch",
            "method": "gradcam++",
            "target": "1: spliced",
            "colormap": "viridis",
            "image_weight": "0.3",
        }
    )
    at.run()
    assert not at.exception and not at.error
    assert at.session_state["layer:demo"] == "rgb_branch"
    assert at.radio(key="layer_mode:demo").value == ONE_LAYER  # the link names one layer
    assert at.selectbox(key="method").value == "gradcam++"
    assert at.selectbox(key="target").value == 1
    assert at.selectbox(key="colormap").value == "viridis"
    assert at.slider(key="image_weight").value == pytest.approx(0.3)
    result = at.session_state["last:demo"]["result"]
    assert (result.layer, result.method, result.targets) == ("rgb_branch", "gradcam++", [1])
    # The layer (no widget) is written to the URL by the page; widgets' values by the browser
    # (tests/test_browser.py checks those).
    assert at.query_params["layer"] in (["rgb_branch"], "rgb_branch")


def test_a_downloaded_settings_json_loads_back(
    app: AppTest, deferred_downloads: dict[str, Callable[[], bytes]]
) -> None:
    app.selectbox(key="colormap").set_value("turbo")
    app.slider(key="image_weight").set_value(0.35)
    app.selectbox(key="method").set_value("gradcam++")
    app.selectbox(key="target").set_value(2)
    app.run()
    (name,) = [n for n in deferred_downloads if n.endswith(".zip")]
    with zipfile.ZipFile(io.BytesIO(deferred_downloads[name]())) as archive:
        settings = archive.read("settings.json")
    fresh = AppTest.from_file(APP, default_timeout=TIMEOUT)
    fresh.run()
    assert fresh.selectbox(key="colormap").value == "jet"
    fresh.file_uploader(key="settings_upload").set_value(
        ("settings.json", settings, "application/json")
    )
    fresh.run()
    assert not fresh.exception and not fresh.error
    assert fresh.selectbox(key="colormap").value == "turbo"
    assert fresh.slider(key="image_weight").value == pytest.approx(0.35)
    assert fresh.selectbox(key="method").value == "gradcam++"
    assert fresh.selectbox(key="target").value == 2
    shown = fresh.session_state["last:demo"]["result"]
    assert (shown.method, shown.targets) == ("gradcam++", [2])


def test_a_file_that_is_not_a_settings_file_is_refused_plainly(app: AppTest) -> None:
    app.file_uploader(key="settings_upload").set_value(("notes.json", b"[1, 2", "text/plain"))
    app.run()
    assert not app.exception
    (error,) = [e.value for e in app.error]
    assert "notes.json is not a settings file" in error and "settings.json" in error
    assert app.image  # the view stays


def test_choosing_the_predicted_class_explicitly_reuses_the_result(
    app: AppTest, explain_calls: list[dict]
) -> None:
    predicted = app.session_state["last:demo"]["result"].targets[0]
    shown = [image.value for image in app.image]
    app.selectbox(key="target").set_value(predicted).run()
    assert not app.exception and not app.error
    assert explain_calls == []
    assert [image.value for image in app.image] == shown


def test_picking_a_layer_closes_the_panel_and_filtered_rows_show_full_paths(
    app: AppTest,
) -> None:
    table = open_layer_panel(app)
    rows = table.value
    assert rows["layer"].str.startswith("\u2003").any()  # the whole tree: indented names
    app.text_input(key="layer_filter:demo").set_value("conv").run()
    filtered = app.dataframe[0].value
    assert len(filtered) < len(rows)
    assert list(filtered["layer"]) == list(filtered["path"])  # full dotted paths
    pick = int(np.flatnonzero(filtered["CAM target"])[0])
    app.session_state[app.dataframe[0].key] = {"selection": {"rows": [pick], "columns": []}}
    app.run()
    assert not app.exception
    path = filtered["path"][pick]
    assert app.session_state["layer:demo"] == path
    # A new panel, named for the new layer and closed: the overlays are right under it again.
    assert f"`{path}`" in layer_panel(app).label
    assert layer_panel(app).proto.expanded is False


def test_the_app_opens_on_the_spec_given_on_the_command_line(sizeless_spec: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert at.selectbox(key="model").value == "mine"


def test_a_spec_without_sizes_lists_layers_and_explains_after_uploads(
    sizeless_spec: Path,
) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception and not at.error
    # Before any upload: what is needed, in plain words (no internal names).
    (note,) = [i.value for i in at.info if "layers are listed once" in i.value]
    assert "`rgb`" in note and "`depth`" in note and "()" not in note
    at.file_uploader(key="upload:mine:rgb").set_value(
        ("photo.png", png_bytes((30, 40), "RGB", 1), "image/png")
    )
    at.file_uploader(key="upload:mine:depth").set_value(
        ("depth.png", png_bytes((30, 40), "L", 2), "image/png")
    )
    at.run()
    assert not at.exception and not at.error
    assert at.session_state["layer:mine"] == "fuse"  # the block, not its ReLU
    assert len(at.image) == 2
    result = at.session_state["last:mine"]["result"]
    assert result.cams["rgb"].shape == (1, 30, 40)
