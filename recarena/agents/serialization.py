"""Saving and loading agents: tensors in safetensors, everything else in JSON, written atomically.

An agent directory holds ``agent.json`` (the registered agent name, a format version, the typed
config as plain data and small JSON-able extras), ``weights.safetensors`` (every tensor) and
``manifest.json`` (the size and SHA-256 of both, as a checkpoint's manifest: written last, checked
on every load, so a flipped byte is a :class:`CheckpointError` naming the file, never different
scores). Nothing is pickled, so loading an agent never runs code from its files. Directories
written before the manifest (``format_version`` 1) still load, unverified.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recarena.core.checkpoint import file_checksums, verify_checksums
from recarena.core.config import migrate_renamed_keys, to_dict, warn_old_config
from recarena.core.errors import CheckpointError
from recarena.core.io import atomic_write, atomic_write_json

FORMAT_VERSION = 2
"""2: the directory has a ``manifest.json``; 1 (still read): it has none."""
METADATA_FILE = "agent.json"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
_CHECKED_FILES = (WEIGHTS_FILE, METADATA_FILE)


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

    The weights are written first, then the metadata, then the manifest of both: a directory whose
    files do not go together (a save cut short) fails its checksums on load.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / WEIGHTS_FILE, tensors)
    atomic_write_json(
        directory / METADATA_FILE,
        {"agent": name, "format_version": FORMAT_VERSION, "config": to_dict(config), "extra": extra or {}},
    )
    write_manifest(directory)
    return directory


def write_manifest(directory: str | Path) -> Path:
    """(Re)write ``manifest.json`` of an agent directory from its current ``agent.json`` and weights."""
    directory = Path(directory)
    return atomic_write_json(directory / MANIFEST_FILE,
                             {"format_version": FORMAT_VERSION, "files": file_checksums(directory, _CHECKED_FILES)})


def verify_agent_files(directory: str | Path) -> None:
    """Check ``agent.json`` and ``weights.safetensors`` against ``manifest.json`` (sizes and SHA-256).

    A directory of format version 1 (written before manifests) has nothing to check against; any
    later one must have its manifest. Problems are :class:`CheckpointError`\\ s naming the file.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        version = _format_version(directory / METADATA_FILE)
        if version == 1:
            return
        raise CheckpointError(f"{manifest_path}: missing; the agent's files cannot be verified (save the agent again)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest_path}: corrupt manifest ({error})") from error
    verify_checksums(directory, files, _CHECKED_FILES, manifest_path)


def _format_version(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format_version")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


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
    if metadata["format_version"] not in (1, FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: format version {metadata['format_version']} is not supported (expected {FORMAT_VERSION})"
        )
    return metadata


def load_agent_files(
    directory: str | Path, expected_name: str, config_class: type | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(config data, tensors, extra) of an agent saved under ``expected_name`` in ``directory``,
    verified against its manifest first.

    With ``config_class`` (the agent's config dataclass), a config written before the config-vocabulary
    rename has its old keys read as the new ones (``recarena.core.config.migrate_renamed_keys``; one
    :class:`~recarena.core.config.OldConfigWarning` naming the directory): ``agent.json`` is covered by
    the manifest, so users cannot rename them by hand."""
    metadata = read_agent_metadata(directory)
    verify_agent_files(directory)
    if metadata["agent"] != expected_name:
        raise CheckpointError(
            f"{directory}: holds a '{metadata['agent']}' agent, not a '{expected_name}' agent"
        )
    tensors = load_tensors(Path(directory) / WEIGHTS_FILE)
    config = metadata["config"]
    if config_class is not None and isinstance(config, dict):
        config, notes = migrate_renamed_keys(config, config_class)
        warn_old_config(directory, notes, prefix="config.")
    return config, tensors, metadata["extra"]


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
