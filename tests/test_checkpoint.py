"""load_checkpoint: state_dicts in every common wrapping load; anything else is refused clearly.

RELIABILITY rows 6-9: malicious pickles never run, key/shape problems are named and leave the
model unchanged, broken files give a clear error, GPU-saved checkpoints load on the CPU.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from cam_core.checkpoint import load_checkpoint, read_state_dict
from cam_core.errors import ModelLoadError


class TinyNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def _net(seed: int, classes: int = 3) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(classes)


def _saved(obj: object, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_state_equal(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


@pytest.fixture
def trained() -> TinyNet:
    """The weights a user trained (seed 1), distinct from a fresh model's (seed 0)."""
    return _net(seed=1)


# --- what loads ----------------------------------------------------------------------------


@pytest.mark.parametrize("as_", ["path", "str", "bytes", "file"])
def test_loads_bare_state_dict_from_every_source_kind(tmp_path, trained, as_):
    data = _saved(trained.state_dict())
    path = tmp_path / "weights.pt"
    path.write_bytes(data)
    source = {"path": path, "str": str(path), "bytes": data, "file": io.BytesIO(data)}[as_]
    model = _net(seed=0)
    report = load_checkpoint(model, source)
    _assert_state_equal(model, trained.state_dict())
    assert report.tensors == len(trained.state_dict())
    assert report.nested_under is None and report.stripped_prefix is None


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict"])
def test_loads_state_dict_nested_under_common_keys(trained, key):
    data = _saved({key: trained.state_dict(), "epoch": 7, "optimizer": {"lr": 0.1}})
    model = _net(seed=0)
    report = load_checkpoint(model, data)
    _assert_state_equal(model, trained.state_dict())
    assert report.nested_under == key
    assert set(report.ignored_entries) == {"epoch", "optimizer"}
    assert key in str(report)


def test_strips_dataparallel_module_prefix(trained):
    data = _saved(nn.DataParallel(trained).state_dict())
    assert all(k.startswith("module.") for k in torch.load(io.BytesIO(data)))
    model = _net(seed=0)
    report = load_checkpoint(model, data)
    _assert_state_equal(model, trained.state_dict())
    assert report.stripped_prefix == "module."
    assert "module." in str(report)


def test_keeps_module_prefix_when_the_model_itself_is_wrapped(trained):
    wrapped = nn.DataParallel(_net(seed=0))
    load_checkpoint(wrapped, _saved(nn.DataParallel(trained).state_dict()))
    _assert_state_equal(wrapped.module, trained.state_dict())


def test_cuda_saved_checkpoint_loads_on_cpu(monkeypatch, trained, tmp_path):
    # No GPU here: record "cuda:0" as the storage location exactly where torch.save writes it
    # (location_tag), which is what a save from CUDA tensors puts in the file.
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    data = _saved(trained.state_dict())
    monkeypatch.undo()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"cuda:0" in pickled and b"cpu" not in pickled
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(io.BytesIO(data), weights_only=True)
    path = tmp_path / "cuda.pth"
    path.write_bytes(data)
    model = _net(seed=0)
    load_checkpoint(model, path)
    _assert_state_equal(model, trained.state_dict())
    assert all(v.device.type == "cpu" for v in model.state_dict().values())


def test_read_state_dict_returns_tensors_without_a_model(trained):
    state, report = read_state_dict(_saved({"state_dict": trained.state_dict()}))
    assert state.keys() == trained.state_dict().keys()
    assert report.nested_under == "state_dict"


# --- what is refused, and the model stays as it was ----------------------------------------


class _WritesAFile:
    """A pickle payload: unpickling it calls open(path, "w"), which creates the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("container", ["torch_zip", "torch_legacy", "plain_pickle", "nested"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, trained, container):
    target = tmp_path / "pwned.txt"
    payload = _WritesAFile(target)
    if container == "torch_zip":
        data = _saved({"fc.weight": payload})
    elif container == "torch_legacy":
        data = _saved(payload, _use_new_zipfile_serialization=False)
    elif container == "plain_pickle":
        data = pickle.dumps(payload)
    else:
        data = _saved({"state_dict": trained.state_dict(), "extra": payload})
    model = _net(seed=0)
    before = _snapshot(model)
    with pytest.raises(ModelLoadError, match=r"refused.*state_dict\(\)"):
        load_checkpoint(model, data)
    assert not target.exists()
    _assert_state_equal(model, before)


def test_pickled_whole_model_is_refused_with_how_to_save_a_state_dict(trained):
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(_net(seed=0), _saved(trained))
    message = str(info.value)
    assert "whole pickled model" in message
    assert "TinyNet" in message
    assert "torch.save(model.state_dict()" in message


def test_checkpoint_with_a_pickled_optimizer_is_refused_and_names_the_class(trained):
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    data = _saved({"state_dict": trained.state_dict(), "optimizer": optimizer})
    with pytest.raises(ModelLoadError, match=r"pickled Python object \(torch\.optim\.sgd\.SGD\)"):
        load_checkpoint(_net(seed=0), data)


def test_missing_keys_are_named_and_model_is_unchanged(trained):
    state = trained.state_dict()
    del state["fc.bias"], state["bn.running_var"]
    model = _net(seed=0)
    before = _snapshot(model)
    with pytest.raises(ModelLoadError, match="2 missing: bn.running_var, fc.bias"):
        load_checkpoint(model, _saved(state))
    _assert_state_equal(model, before)


def test_unexpected_keys_are_named(trained):
    state = trained.state_dict()
    state["head.weight"] = torch.zeros(2, 2)
    with pytest.raises(ModelLoadError, match="1 unexpected: head.weight"):
        load_checkpoint(_net(seed=0), _saved(state))


def test_wrong_shapes_are_named_with_both_shapes():
    model = _net(seed=0, classes=3)
    before = _snapshot(model)
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(model, _saved(_net(seed=1, classes=10).state_dict()))
    message = str(info.value)
    assert "fc.weight checkpoint (10, 4) vs model (3, 4)" in message
    assert "fc.bias checkpoint (10,) vs model (3,)" in message
    assert "\n" not in message
    _assert_state_equal(model, before)


def test_long_key_lists_are_shortened():
    big = nn.Sequential(*[nn.Linear(2, 2) for _ in range(20)])
    with pytest.raises(ModelLoadError, match=r"40 unexpected: .* and 32 more"):
        load_checkpoint(_net(seed=0), _saved({**_net(0).state_dict(), **big.state_dict()}))


def test_previously_loaded_weights_stay_after_every_failure(tmp_path, trained):
    model = _net(seed=0)
    load_checkpoint(model, _saved(trained.state_dict()))
    good = _snapshot(model)
    partial = trained.state_dict()
    partial.pop("conv.weight")
    bad_sources = [
        b"",
        b"not a checkpoint",
        _saved(trained.state_dict())[:200],
        _saved(_net(seed=2, classes=5).state_dict()),
        _saved(partial),
        _saved(_net(seed=3)),
        _saved({"fc.weight": _WritesAFile(tmp_path / "x")}),
    ]
    for source in bad_sources:
        with pytest.raises(ModelLoadError):
            load_checkpoint(model, source)
        _assert_state_equal(model, good)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not a PyTorch checkpoint"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a PyTorch checkpoint"),
        (b'{"weights": [1, 2]}', "JSON or safetensors"),
    ],
)
def test_empty_and_non_checkpoint_bytes_give_a_clear_error(data, expected):
    with pytest.raises(ModelLoadError, match=expected):
        load_checkpoint(_net(seed=0), data)


def test_truncated_checkpoint_gives_a_clear_error(tmp_path, trained):
    path = tmp_path / "cut.pt"
    path.write_bytes(_saved(trained.state_dict())[:-300])
    with pytest.raises(ModelLoadError, match=r"cut\.pt .* is truncated or corrupted"):
        load_checkpoint(_net(seed=0), path)


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_checkpoint(_net(seed=0), tmp_path / "nope.pt")
    with pytest.raises(ModelLoadError, match="is a folder"):
        load_checkpoint(_net(seed=0), tmp_path)


def test_dict_without_tensors_lists_its_keys():
    with pytest.raises(ModelLoadError, match=r"top-level keys epoch, lr"):
        load_checkpoint(_net(seed=0), _saved({"epoch": 3, "lr": 0.1}))


def test_a_bare_tensor_is_not_a_state_dict():
    with pytest.raises(ModelLoadError, match="holds a Tensor, not a state_dict"):
        load_checkpoint(_net(seed=0), _saved(torch.zeros(3)))
