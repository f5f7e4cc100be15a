"""Checkpoints as dicts of numpy arrays through the safe unpickler, both ways
with torch.load / torch.save (python3-torch, in the test only)."""

import collections

import numpy as np
import pytest

import albef
from conftest import CHECKPOINT

torch = pytest.importorskip("torch")


def test_official_checkpoint_reads_as_torch_load_does():
    ours = albef.load_checkpoint(CHECKPOINT)
    theirs = torch.load(CHECKPOINT, map_location="cpu")
    assert isinstance(ours["model"], collections.OrderedDict)
    assert list(ours["model"]) == list(theirs["model"])
    for name, tensor in theirs["model"].items():
        assert ours["model"][name].dtype == tensor.numpy().dtype, name
        assert np.array_equal(ours["model"][name], tensor.numpy()), name


def test_saved_checkpoint_reads_back_with_torch_load(tmp_path):
    state = collections.OrderedDict()
    state["weight"] = np.arange(12, dtype=np.float32).reshape(3, 4)
    state["weight_t"] = state["weight"].T  # a strided view
    state["ids"] = np.array([[1, 2]], dtype=np.int64)
    state["half"] = np.ones(3, dtype=np.float16)
    state["flags"] = np.array([True, False])
    checkpoint = {"model": state, "epoch": 3, "lr": 1e-4, "name": "tiny", "raw": b"\x00\x01", "none": None,
                  "steps": [1, 2.5, (3, "x")], "epoch_np": np.int64(7), 5: "int key"}
    path = tmp_path / "saved.pth"
    albef.save_checkpoint(path, checkpoint)
    loaded = torch.load(path)
    assert isinstance(loaded["model"], collections.OrderedDict) and list(loaded["model"]) == list(state)
    for name, array in state.items():
        assert np.array_equal(loaded["model"][name].numpy(), array), name
        assert loaded["model"][name].numpy().dtype == array.dtype, name
    assert (loaded["epoch"], loaded["lr"], loaded["name"], loaded["raw"], loaded["none"]) == (3, 1e-4, "tiny", b"\x00\x01", None)
    assert loaded["steps"] == [1, 2.5, (3, "x")] and loaded["epoch_np"].dtype == torch.int64 and loaded["epoch_np"].item() == 7 and loaded[5] == "int key"


def test_torch_save_reads_back_with_load_checkpoint(tmp_path):
    shared = torch.randn(4, 3)
    state = collections.OrderedDict(a=shared, tied=shared, row=shared[1], ints=torch.arange(5),
                                    bf16=torch.tensor([1.5, -2.0], dtype=torch.bfloat16))
    for legacy in (False, True):
        path = tmp_path / f"torch_{legacy}.pth"
        torch.save({"model": state, "epoch": 2, "config": {"lr": 1e-4, "queue_size": 65536}}, path,
                   _use_new_zipfile_serialization=not legacy)
        loaded = albef.load_checkpoint(path)
        model = loaded["model"]
        assert list(model) == list(state) and loaded["epoch"] == 2 and loaded["config"]["queue_size"] == 65536
        assert np.array_equal(model["a"], shared.numpy()) and np.array_equal(model["row"], shared[1].numpy())
        assert np.shares_memory(model["a"], model["tied"])  # one storage in the file: one buffer
        assert model["bf16"].dtype == np.float32 and model["bf16"].tolist() == [1.5, -2.0]


def test_edit_a_checkpoint_and_load_it_into_a_model(tmp_path):
    # Inspect and edit without torch.load: a new ITC temperature, saved and read back.
    checkpoint = albef.load_checkpoint(CHECKPOINT)
    checkpoint["model"]["temp"] = np.float32(0.05)
    path = tmp_path / "edited.pth"
    albef.save_checkpoint(path, checkpoint)
    assert float(torch.load(path)["model"]["temp"]) == pytest.approx(0.05)
    assert float(albef.load_checkpoint(path)["model"]["temp"]) == pytest.approx(0.05)


def test_torch_tensors_can_be_saved_directly(tmp_path):
    path = tmp_path / "from_torch.pth"
    albef.save_checkpoint(path, {"w": torch.arange(6.0).reshape(2, 3)})
    assert torch.equal(torch.load(path)["w"], torch.arange(6.0).reshape(2, 3))
