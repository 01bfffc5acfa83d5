"""Atomic checkpoints: round trips, corruption and mismatch errors, crashes during a write."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from recarena.core import checkpoint
from recarena.core.checkpoint import (
    check_identity,
    flatten_state,
    latest_checkpoint,
    read_checkpoint,
    unflatten_state,
    write_checkpoint,
)
from recarena.core.errors import CheckpointError


def _nested_state() -> dict:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    np.random.seed(7)
    return {
        "weights": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "pcg": np.random.default_rng(3).bit_generator.state,
        "buffer": {"obs": np.arange(6, dtype=np.int64).reshape(2, 3), "done": np.array([True, False])},
        "counters": {"steps": 12, "eps": 0.25, "name": "dqn", "nothing": None},
        "pair": (1, torch.tensor([2.5])),
        "int_keys": {0: "a", 5: [1, 2]},
    }


def _assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b and type(a) is type(b)


def test_flatten_round_trip_through_files(tmp_path: Path) -> None:
    state = _nested_state()
    tensors, skeleton = flatten_state(state)
    write_checkpoint(tmp_path, 10, tensors, {"state": skeleton})
    loaded_tensors, metadata, step = read_checkpoint(latest_checkpoint(tmp_path))
    assert step == 10
    restored = unflatten_state(loaded_tensors, metadata["state"])
    _assert_same(state, restored)
    # The restored RNG states really restore the generators.
    np.random.set_state(restored["numpy_rng"])
    first = np.random.rand(3)
    np.random.set_state(state["numpy_rng"])
    assert np.array_equal(first, np.random.rand(3))
    optimizer = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    optimizer.load_state_dict(restored["optimizer"])


def test_flatten_rejects_unsupported_types() -> None:
    with pytest.raises(TypeError, match="counters/bad: unsupported type object"):
        flatten_state({"counters": {"bad": object()}})


def test_latest_pointer_and_pruning(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        write_checkpoint(tmp_path, step, {"x": torch.tensor([step])}, {"step": step}, keep=2)
    names = sorted(p.name for p in tmp_path.glob("step_*"))
    assert names == [checkpoint.checkpoint_name(3), checkpoint.checkpoint_name(4)]
    tensors, metadata, step = read_checkpoint(latest_checkpoint(tmp_path))
    assert step == 4 and metadata == {"step": 4} and tensors["x"].item() == 4
    assert latest_checkpoint(tmp_path / "nothing_here") is None


def test_corrupt_state_file_is_detected(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, 1, {"x": torch.arange(100.0)}, {"a": 1})
    data = bytearray((path / checkpoint.STATE_FILE).read_bytes())
    data[-5] ^= 0xFF
    (path / checkpoint.STATE_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"state\.safetensors: corrupt \(SHA-256"):
        read_checkpoint(path)


def test_truncated_and_missing_files_are_detected(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, 1, {"x": torch.arange(100.0)}, {"a": 1})
    state = path / checkpoint.STATE_FILE
    state.write_bytes(state.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="corrupt \\(size 50 bytes"):
        read_checkpoint(path)
    state.unlink()
    with pytest.raises(CheckpointError, match="state.safetensors: missing"):
        read_checkpoint(path)
    (path / checkpoint.MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match="no manifest.json"):
        read_checkpoint(path)


def test_edited_metadata_and_bad_manifest_are_detected(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, 1, {"x": torch.zeros(2)}, {"a": 1})
    (path / checkpoint.METADATA_FILE).write_text(json.dumps({"a": 2}) + "\n")
    with pytest.raises(CheckpointError, match="metadata.json: corrupt"):
        read_checkpoint(path)
    (path / checkpoint.MANIFEST_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt manifest"):
        read_checkpoint(path)
    (path / checkpoint.MANIFEST_FILE).write_text(json.dumps({"format_version": 99, "step": 1, "files": {}}))
    with pytest.raises(CheckpointError, match="format version 99 is not supported"):
        read_checkpoint(path)


def test_latest_pointing_nowhere_is_an_error(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 1, {"x": torch.zeros(2)}, {})
    (tmp_path / checkpoint.LATEST_FILE).write_text("step_000000000099\n")
    with pytest.raises(CheckpointError, match="does not exist"):
        latest_checkpoint(tmp_path)
    (tmp_path / checkpoint.LATEST_FILE).write_text("../../etc\n")
    with pytest.raises(CheckpointError, match="does not name a checkpoint"):
        latest_checkpoint(tmp_path)


def test_crash_during_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_checkpoint(tmp_path, 1, {"x": torch.ones(3)}, {"step": 1})

    def explode(tensors, filename):  # dies after writing half a file, like a killed process
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(checkpoint, "save_file", explode)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, 2, {"x": torch.zeros(3)}, {"step": 2})
    monkeypatch.undo()
    tensors, metadata, step = read_checkpoint(latest_checkpoint(tmp_path))
    assert step == 1 and torch.equal(tensors["x"], torch.ones(3))
    assert not list(tmp_path.glob(".step_*"))  # the temporary directory was removed


def test_leftover_temporary_directories_are_cleaned(tmp_path: Path) -> None:
    (tmp_path / ".step_000000000005.abc.tmp").mkdir(parents=True)  # what a SIGKILL mid-write leaves
    write_checkpoint(tmp_path, 6, {"x": torch.ones(1)}, {})
    assert not list(tmp_path.glob(".step_*"))
    assert latest_checkpoint(tmp_path).name == checkpoint.checkpoint_name(6)


def test_identity_mismatch_names_the_fields() -> None:
    check_identity({"agent": "dqn", "n_items": 5}, {"agent": "dqn", "n_items": 5}, "ckpt")
    with pytest.raises(CheckpointError, match=r"n_items: checkpoint has 7, this run has 5"):
        check_identity({"agent": "dqn", "n_items": 5}, {"agent": "dqn", "n_items": 7}, "ckpt")
    with pytest.raises(CheckpointError, match=r"agent: checkpoint has 'ppo'"):
        check_identity({"agent": "dqn"}, {"agent": "ppo"}, "ckpt")


def test_write_rejects_bad_keep(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep must be >= 1"):
        write_checkpoint(tmp_path, 1, {}, {}, keep=0)
