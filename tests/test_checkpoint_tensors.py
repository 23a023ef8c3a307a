"""A checkpoint with one bad tensor among good ones is refused before anything is copied.

RELIABILITY row 19: sparse, meta, quantized or non-floating tensors used to raise a raw
RuntimeError from load_state_dict after the tensors before them had been overwritten.  The model
must stay bit-for-bit as it was (its state_dict hashed before and after); NaN loads, with a
warning and a line in the report.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from cam_core.checkpoint import load_checkpoint
from cam_core.errors import ModelLoadError
from tests.conftest import state_hash


class Net(nn.Module):
    """Parameters before *and* after the bad one in state_dict order."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.middle = nn.Linear(4, 4)
        self.last = nn.Linear(4, 2)


def _model(seed: int) -> Net:
    torch.manual_seed(seed)
    model = Net()
    with torch.no_grad():
        model.bn.running_mean.uniform_()
    return model


def _saved(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _checkpoint_with(key: str, make) -> bytes:
    state = _model(seed=7).state_dict()
    state[key] = make(state[key])
    return _saved(state)


BAD = {
    "sparse": ("middle.weight", lambda t: t.to_sparse(), "sparse_coo tensor"),
    "sparse-csr": ("middle.weight", lambda t: t.to_sparse_csr(), "sparse_csr tensor"),
    "integer weight": ("middle.weight", lambda t: t.round().long(), "not floating point"),
    "bool weight": ("middle.bias", lambda t: t > 0, "not floating point"),
    "complex weight": ("middle.weight", lambda t: t.to(torch.complex64), "not floating point"),
    "float step counter": ("bn.num_batches_tracked", lambda t: t.float(), "vs model torch.int64"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_refused_checkpoint_leaves_model_bit_for_bit_unchanged(kind):
    key, make, message = BAD[kind]
    model = _model(seed=0)
    before = state_hash(model)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_checkpoint(model, _checkpoint_with(key, make))
    assert key in str(info.value)
    assert "left unchanged" in str(info.value)
    assert state_hash(model) == before


def test_meta_tensor_is_refused_before_anything_is_copied():
    model = _model(seed=0)
    before = state_hash(model)
    state = _model(seed=7).state_dict()
    state["middle.weight"] = torch.empty(4, 4, device="meta")
    # torch.save/load keep meta tensors meta, also with map_location="cpu".
    with pytest.raises(ModelLoadError, match="middle.weight is a meta tensor"):
        load_checkpoint(model, _saved(state))
    assert state_hash(model) == before


def test_quantized_tensor_is_refused():
    model = _model(seed=0)
    before = state_hash(model)
    state = _model(seed=7).state_dict()
    state["middle.weight"] = torch.quantize_per_tensor(state["middle.weight"], 0.1, 0, torch.qint8)
    with pytest.raises(ModelLoadError, match="middle.weight is quantized"):
        load_checkpoint(model, _saved(state))
    assert state_hash(model) == before


def test_other_float_dtypes_and_int_counters_still_load():
    model = _model(seed=0)
    source = _model(seed=7)
    state = source.state_dict()
    state["middle.weight"] = state["middle.weight"].double()
    state["last.weight"] = state["last.weight"].half()
    state["bn.num_batches_tracked"] = state["bn.num_batches_tracked"].int()
    report = load_checkpoint(model, _saved(state))
    assert report.tensors == len(state)
    assert torch.equal(model.middle.weight, source.middle.weight)
    assert torch.equal(model.last.weight, source.last.weight.half().float())
    assert report.non_finite == ()


def test_nan_weights_load_with_a_warning_and_a_line_in_the_report():
    model = _model(seed=0)
    state = _model(seed=7).state_dict()
    state["middle.bias"] = state["middle.bias"].clone()
    state["middle.bias"][1] = float("nan")
    with pytest.warns(RuntimeWarning, match="NaN or infinite values in middle.bias"):
        report = load_checkpoint(model, _saved(state))
    assert report.non_finite == ("middle.bias",)
    assert "NaN or infinite values in middle.bias" in str(report)
    assert torch.isnan(model.middle.bias[1])
