"""Atomic training checkpoints: tensors in safetensors, everything else in JSON, never pickled.

A checkpoint is a directory ``<checkpoints>/step_<N>/`` holding

* ``state.safetensors`` - every tensor of the training state (weights, optimiser moments, replay
  buffer arrays, generator states);
* ``metadata.json`` - the JSON-able rest (counters, the structure of nested states, run identity);
* ``manifest.json`` - format version, step, and the size and SHA-256 of the two files above.

It is written into a hidden temporary directory and renamed into place in one step, and only then
is ``<checkpoints>/latest`` (a one-line text file) switched to it, so a process killed at any
moment leaves the previous checkpoint intact and ``latest`` pointing at a complete one. Reading
checks the manifest and every checksum and turns any problem into :class:`CheckpointError` saying
what is wrong; :func:`check_identity` compares the run identity (agent, catalogue, spaces) so a
checkpoint is never restored into a run it does not belong to.

:func:`flatten_state` / :func:`unflatten_state` turn nested states (optimiser ``state_dict``\\ s,
NumPy RNG tuples, dicts of arrays) into (flat tensors, JSON skeleton) and back, so anything made of
dicts, lists, tuples, scalars, tensors and arrays can be checkpointed without pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recarena.core.errors import CheckpointError
from recarena.core.io import atomic_write_text

FORMAT_VERSION = 1
STATE_FILE = "state.safetensors"
METADATA_FILE = "metadata.json"
MANIFEST_FILE = "manifest.json"
LATEST_FILE = "latest"


class OldCheckpointWarning(UserWarning):
    """A checkpoint written by an older recarena was resumed with part of its state started afresh
    (e.g. session statistics whose old layout does not map exactly onto the new one)."""


# NumPy dtypes safetensors/torch cannot hold directly are widened and restored on load.
_WIDENED = {np.dtype(np.uint16): torch.int32, np.dtype(np.uint32): torch.int64}


# ---------------------------------------------------------------------------- nested states


def flatten_state(tree: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into (flat tensors keyed by path, a JSON-able skeleton).

    Tensors and NumPy arrays are replaced in the skeleton by ``{"__tensor__": key}`` /
    ``{"__ndarray__": key, "dtype": ...}``; tuples and dicts with non-string keys are tagged so
    :func:`unflatten_state` rebuilds them exactly.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().to("cpu").contiguous().clone()
            return {"__tensor__": path}
        if isinstance(node, np.ndarray):
            array = np.ascontiguousarray(node)
            if array.dtype in _WIDENED:
                tensors[path] = torch.from_numpy(array.astype(np.int64)).to(_WIDENED[array.dtype])
            else:
                tensors[path] = torch.from_numpy(array.copy())
            return {"__ndarray__": path, "dtype": array.dtype.str}
        if isinstance(node, np.generic):
            return node.item()
        if isinstance(node, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in node):
                return {k: walk(v, f"{path}/{k}") for k, v in node.items()}
            return {"__items__": [[k, walk(v, f"{path}/{k}")] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot checkpoint {path or '<root>'}: unsupported type {type(node).__name__}")

    return tensors, walk(tree, prefix)


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Rebuild the nested state :func:`flatten_state` split; a missing tensor is a CheckpointError."""

    def tensor(key: str) -> torch.Tensor:
        if key not in tensors:
            raise CheckpointError(f"checkpoint is missing tensor '{key}'")
        return tensors[key]

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "__tensor__" in node:
                return tensor(node["__tensor__"])
            if "__ndarray__" in node:
                return tensor(node["__ndarray__"]).numpy().astype(np.dtype(node["dtype"]), copy=True)
            if "__items__" in node:
                return {(tuple(k) if isinstance(k, list) else k): walk(v) for k, v in node["__items__"]}
            if "__tuple__" in node:
                return tuple(walk(v) for v in node["__tuple__"])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(skeleton)


# ---------------------------------------------------------------------------- files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_checksums(directory: str | Path, names: tuple[str, ...] | list[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256": ..., "bytes": ...}}`` of the files ``names`` in ``directory`` (a manifest's ``files``)."""
    directory = Path(directory)
    return {name: {"sha256": _sha256(directory / name), "bytes": (directory / name).stat().st_size} for name in names}


def verify_checksums(directory: str | Path, files: Any, names: tuple[str, ...] | list[str], manifest_path: str | Path) -> None:
    """Check each of ``names`` in ``directory`` against the sizes and SHA-256 of ``files`` (from the
    manifest ``manifest_path``); a missing, unlisted, truncated or altered file is a :class:`CheckpointError`
    naming it."""
    directory = Path(directory)
    if not isinstance(files, dict):
        raise CheckpointError(f"{manifest_path}: corrupt manifest ('files' is not a mapping)")
    for name in names:
        file = directory / name
        expected = files.get(name)
        if not isinstance(expected, dict):
            raise CheckpointError(f"{manifest_path}: does not list {name}")
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise CheckpointError(f"{file}: corrupt (size {size} bytes, manifest says {expected.get('bytes')})")
        actual = _sha256(file)
        if actual != expected.get("sha256"):
            raise CheckpointError(f"{file}: corrupt (SHA-256 {actual[:12]}..., manifest says {str(expected.get('sha256'))[:12]}...)")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint taken after ``step`` environment steps."""
    return f"step_{step:012d}"


def write_checkpoint(
    checkpoints_dir: str | Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a checkpoint for ``step`` atomically, point ``latest`` at it, keep the newest ``keep``.

    Returns the checkpoint directory. ``metadata`` must be JSON-able (use :func:`flatten_state`).
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    root = Path(checkpoints_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(plain, str(tmp / STATE_FILE))
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")
        manifest = {"format_version": FORMAT_VERSION, "step": int(step), "files": file_checksums(tmp, (STATE_FILE, METADATA_FILE))}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        for name in (STATE_FILE, METADATA_FILE, MANIFEST_FILE):
            with open(tmp / name, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():  # a checkpoint for this step already exists (re-run after a crash)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST_FILE, final.name + "\n")
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    """Delete old checkpoints beyond the newest ``keep`` and temporary leftovers of killed writes."""
    for leftover in root.glob(".step_*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    existing = sorted(p for p in root.glob("step_*") if p.is_dir())
    latest = latest_checkpoint(root)
    for old in existing[:-keep]:
        if latest is None or old != latest:
            shutil.rmtree(old, ignore_errors=True)


def checkpoint_step(path: str | Path) -> int | None:
    """The step in a checkpoint directory's name (``step_<N>``), or None for other names."""
    name = Path(path).name
    return int(name[5:]) if name.startswith("step_") and name[5:].isdigit() else None


def list_checkpoints(checkpoints_dir: str | Path) -> list[Path]:
    """Every checkpoint directory (``step_<N>``, complete or not) under ``checkpoints_dir``, oldest first."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def latest_checkpoint(checkpoints_dir: str | Path) -> Path | None:
    """The directory ``latest`` points at, or None when there is no checkpoint yet."""
    root = Path(checkpoints_dir)
    pointer = root / LATEST_FILE
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    if not name.startswith("step_") or "/" in name:
        raise CheckpointError(f"{pointer}: does not name a checkpoint ({name!r})")
    path = root / name
    if not path.is_dir():
        raise CheckpointError(f"{pointer}: points at {name}, which does not exist")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], int]:
    """(tensors, metadata, step) of the checkpoint directory ``path``, verified against its manifest."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST_FILE}; not a checkpoint directory (or an incomplete one)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        version, step, files = manifest["format_version"], int(manifest["step"]), manifest["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{manifest_path}: corrupt manifest ({error})") from error
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{manifest_path}: format version {version} is not supported (expected {FORMAT_VERSION})")
    verify_checksums(path, files, (STATE_FILE, METADATA_FILE), manifest_path)
    try:
        tensors = load_file(str(path / STATE_FILE))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path / STATE_FILE}: not a readable safetensors file ({error})") from error
    try:
        metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path / METADATA_FILE}: not valid JSON ({error})") from error
    return tensors, metadata, step


def check_identity(expected: dict[str, Any], found: dict[str, Any], where: str | Path) -> None:
    """Raise CheckpointError naming every identity field (agent, catalogue, spaces...) that differs."""
    problems = [
        f"{key}: checkpoint has {found.get(key)!r}, this run has {value!r}"
        for key, value in expected.items()
        if found.get(key) != value
    ]
    if problems:
        raise CheckpointError(f"{where}: checkpoint does not match this run - " + "; ".join(problems))
