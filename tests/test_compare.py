"""Explainer.compare: a layer x method grid equal to one explain per cell, one pass per method."""

from __future__ import annotations

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
