"""The user story's call: inputs as a tuple or list in the modalities' (forward) order."""

from __future__ import annotations

import numpy as np
import pytest

from cam_core import Explainer, InputError
from tests.conftest import three_input_batch


def test_tuple_and_list_inputs_equal_the_dict_in_modality_order(three_net, three_modalities):
    inputs = three_input_batch(n=2)
    explainer = Explainer(three_net, three_modalities, device="cpu")
    expected = explainer.explain(inputs, "fuse", "gradcam")
    x_b, x_f, x_p = inputs["texture"], inputs["frequency"], inputs["rgb"]
    for given in ((x_b, x_f, x_p), [x_b, x_f, x_p]):
        result = explainer.explain(given, "fuse", "gradcam")
        for name in ("texture", "frequency", "rgb"):
            np.testing.assert_array_equal(result.cams[name], expected.cams[name])
        np.testing.assert_array_equal(result.probabilities, expected.probabilities)
    # The order matters: swapping two same-shaped inputs changes the prediction.
    swapped = explainer.predict((x_f, x_b, x_p))
    assert not np.allclose(swapped, expected.probabilities)


def test_tuple_of_wrong_length_names_the_modalities_in_order(three_net, three_modalities):
    inputs = three_input_batch(n=1)
    explainer = Explainer(three_net, three_modalities, device="cpu")
    with pytest.raises(
        InputError, match=r"2 items; give one per modality .*texture, frequency, rgb"
    ):
        explainer.explain((inputs["texture"], inputs["rgb"]), "fuse")
