"""Explainer.compare: a layer x method grid equal to one explain per cell, one pass per method."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import three_input_batch

from cam_core import Explainer, InputError

LAYERS = ["texture_branch", "rgb_branch.2", "attn", "fuse"]


def test_compare_equals_separate_explains_for_every_cell(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    inputs = three_input_batch(2, seed=5)
    methods = ["gradcam", "gradcam++", "layercam", "eigencam", "fullgrad"]
    grid = explainer.compare(inputs, LAYERS, methods)
    assert list(grid) == [(layer, method) for method in methods for layer in LAYERS]
    for (layer, method), result in grid.items():
        single = explainer.explain(inputs, layer, method)
        assert result.method == method
        assert result.targets == single.targets
        for name in ("texture", "frequency", "rgb"):
            np.testing.assert_allclose(
                result.cams[name], single.cams[name], atol=1e-4, err_msg=f"{layer} {method}"
            )


def test_compare_runs_one_forward_per_gradient_method_for_all_layers(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    forwards = []
    three_net.register_forward_hook(lambda *_: forwards.append(1))
    explainer.compare(three_input_batch(2), LAYERS, ["gradcam", "layercam", "hirescam"])
    assert len(forwards) == 3


def test_compare_reports_progress_per_method_and_explicit_targets(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    calls = []
    grid = explainer.compare(
        three_input_batch(2), ["fuse"], ["gradcam", "xgradcam"], target=[1, 3],
        progress=lambda done, total: calls.append((done, total)),
    )  # fmt: skip
    assert calls == [(1, 2), (2, 2)]
    assert all(result.targets == [1, 3] for result in grid.values())


def test_compare_needs_a_layer_and_a_method(three_net, three_modalities):
    explainer = Explainer(three_net, three_modalities, device="cpu")
    with pytest.raises(InputError, match="at least one layer and one method"):
        explainer.compare(three_input_batch(1), [], ["gradcam"])


def test_suggested_layers_are_the_default_and_outer_layers_across_the_depth():
    from cam_core.demo import load_explainer
    from cam_core.grid import suggest_layers

    explainer = load_explainer(device="cpu")
    layers = suggest_layers(explainer, explainer.layer_tree(), count=4)
    assert len(layers) == 4 and "head.features" in layers  # the recommended layer
    assert layers[0] == "rgb_branch"  # the first outer module, in forward order
    assert not any(layer.endswith(("stem.2", ".relu")) for layer in layers)


def test_grid_scale_shares_one_maximum_across_cells_and_samples(three_net, three_modalities):
    from cam_core.grid import grid_scale

    explainer = Explainer(three_net, three_modalities, device="cpu")
    grid = explainer.compare(three_input_batch(2), ["texture_branch", "fuse"], ["gradcam"])
    own, one = grid_scale(grid, "rgb", shared=False)
    assert one == 1.0 and own[("fuse", "gradcam")] is grid[("fuse", "gradcam")].cams["rgb"]
    shared, high = grid_scale(grid, "rgb", shared=True)
    raw_max = max(float(np.maximum(r.raw["rgb"], 0).max()) for r in grid.values())
    assert high == pytest.approx(raw_max)
    # reference: each raw map's positive part over the grid's maximum, drawn at the input size
    for cell, maps in shared.items():
        expected = [
            cv2.resize(np.maximum(r, 0) / raw_max, (32, 32), interpolation=cv2.INTER_LINEAR)
            for r in grid[cell].raw["rgb"]
        ]
        np.testing.assert_allclose(maps, np.clip(expected, 0, 1), atol=1e-6)


def test_rank_cells_puts_the_most_faithful_first_in_the_metrics_direction():
    from cam_core.grid import rank_cells

    scores = {
        ("a", "gradcam"): {"rgb": np.array([0.5])},
        ("b", "gradcam"): {"rgb": np.array([0.1])},
        ("c", "gradcam"): {"rgb": np.array([np.nan])},
        ("d", "gradcam"): {"rgb": np.array([0.9])},
    }
    assert [c for c, _ in rank_cells(scores, "deletion", "rgb")] == ["b", "a", "d", "c"]
    assert [c for c, _ in rank_cells(scores, "insertion", "rgb")] == ["d", "a", "b", "c"]
