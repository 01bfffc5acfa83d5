"""Saving and loading agents: tensors in safetensors, everything else in JSON, written atomically.

An agent directory holds ``agent.json`` (the registered agent name, a format version, the typed
config as plain data and small JSON-able extras) and ``weights.safetensors`` (every tensor). Nothing
is pickled, so loading an agent never runs code from its files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recarena.core.config import to_dict
from recarena.core.errors import CheckpointError
from recarena.core.io import atomic_write, atomic_write_json

FORMAT_VERSION = 1
METADATA_FILE = "agent.json"
WEIGHTS_FILE = "weights.safetensors"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` to a safetensors file atomically (copies to contiguous CPU tensors first)."""
    plain = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(plain, str(tmp)))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning a missing or corrupt file into :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error


def save_agent_files(
    directory: str | Path,
    name: str,
    config: Any,
    tensors: dict[str, torch.Tensor],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write an agent (``name``, typed ``config``, ``tensors``, JSON ``extra``) into ``directory``.

    The weights are written before the metadata, so a directory whose ``agent.json`` exists always
    has the weights that go with it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / WEIGHTS_FILE, tensors)
    atomic_write_json(
        directory / METADATA_FILE,
        {"agent": name, "format_version": FORMAT_VERSION, "config": to_dict(config), "extra": extra or {}},
    )
    return directory


def read_agent_metadata(directory: str | Path) -> dict[str, Any]:
    """The parsed ``agent.json`` of an agent directory, checked for the required keys."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; is '{directory}' a saved agent directory?")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    missing = [key for key in ("agent", "format_version", "config", "extra") if key not in metadata]
    if not isinstance(metadata, dict) or missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    if metadata["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {metadata['format_version']} is not supported (expected {FORMAT_VERSION})"
        )
    return metadata


def load_agent_files(
    directory: str | Path, expected_name: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(config data, tensors, extra) of an agent saved under ``expected_name`` in ``directory``."""
    metadata = read_agent_metadata(directory)
    if metadata["agent"] != expected_name:
        raise CheckpointError(
            f"{directory}: holds a '{metadata['agent']}' agent, not a '{expected_name}' agent"
        )
    tensors = load_tensors(Path(directory) / WEIGHTS_FILE)
    return metadata["config"], tensors, metadata["extra"]


def require_tensors(
    tensors: dict[str, torch.Tensor], names: list[str], where: str | Path
) -> None:
    """Raise :class:`CheckpointError` naming the tensors a checkpoint lacks."""
    missing = [name for name in names if name not in tensors]
    if missing:
        raise CheckpointError(f"{where}: missing tensors {missing}")


def generator_state(generator: torch.Generator) -> torch.Tensor:
    """The state of a torch generator as a uint8 tensor (safetensors can store it)."""
    return generator.get_state().clone()


def set_generator_state(generator: torch.Generator, state: torch.Tensor) -> None:
    """Restore a state produced by :func:`generator_state`."""
    generator.set_state(state.to(torch.uint8).cpu())
