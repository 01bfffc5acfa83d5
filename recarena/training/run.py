"""A training run's directory: what produced it, its checkpoints and its TensorBoard events.

Layout::

    runs/<name>/
      config.yaml        the resolved run config (every default filled in)
      metadata.json      versions, git commit, command line, data/simulator/catalogue fingerprints
      checkpoints/       step_<N>/ {state.safetensors, metadata.json, manifest.json}, latest
      tb/                TensorBoard event files (``tensorboard --logdir runs``)
      agent/             the final agent (``Agent.save``), loadable by evaluate.py
      eval.json          the latest held-out evaluation

Every file is written atomically (``recarena.io``).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from recarena.core.config import to_dict
from recarena.core.errors import CheckpointError
from recarena.core.io import atomic_write_json, atomic_write_text

CONFIG_FILE = "config.yaml"
METADATA_FILE = "metadata.json"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tb"
AGENT_DIR = "agent"
EVAL_FILE = "eval.json"

_PACKAGES = ("recarena", "torch", "numpy", "gymnasium", "stable-baselines3", "sb3-contrib", "transformers", "tensorboard")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a run depends on (None where not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(directory: str | Path | None = None) -> str | None:
    """The current git commit of the source tree (with ``-dirty`` when it has changes), or None."""
    cwd = Path(directory or Path(__file__).resolve().parent.parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if status else "") if commit else None


def simulator_fingerprints(simulator: Any) -> dict[str, Any]:
    """The simulator record (name, config, data fingerprint) plus the catalogue fingerprint where known."""
    from recarena.simulators.registry import describe

    record = describe(simulator)
    log = getattr(simulator, "log", None)
    if log is not None:
        record["data_fingerprint"] = log.fingerprint()
        record["item_set_fingerprint"] = log.item_set_fingerprint()
        record["data_name"] = log.name
    return record


def default_run_name(agent: str, data: str | None, seed: int) -> str:
    """``<agent>_<data>_s<seed>_<UTC timestamp>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    data_name = Path(data).name if data else "synthetic"
    return f"{agent}_{data_name}_s{seed}_{stamp}"


class RunDirectory:
    """Paths and files of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def agent(self) -> Path:
        return self.path / AGENT_DIR

    @classmethod
    def create(cls, path: str | Path, config: Any, metadata: dict[str, Any]) -> RunDirectory:
        """Make the directory and write ``config.yaml`` and ``metadata.json`` (refuses a used directory)."""
        run = cls(path)
        if (run.path / CONFIG_FILE).exists():
            raise CheckpointError(f"{run.path}: already holds a run; use --resume {run.path} to continue it")
        run.path.mkdir(parents=True, exist_ok=True)
        run.checkpoints.mkdir(exist_ok=True)
        run.tensorboard.mkdir(exist_ok=True)
        run.write_config(config)
        run.write_metadata(metadata)
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDirectory:
        """An existing run directory (for ``--resume``); says what is missing otherwise."""
        run = cls(path)
        if not run.path.is_dir():
            raise CheckpointError(f"{run.path}: run directory not found")
        for name in (CONFIG_FILE, METADATA_FILE):
            if not (run.path / name).is_file():
                raise CheckpointError(f"{run.path}: missing {name}; not a recarena run directory")
        return run

    def read_config(self) -> dict[str, Any]:
        try:
            data = yaml.safe_load((self.path / CONFIG_FILE).read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise CheckpointError(f"{self.path / CONFIG_FILE}: not valid YAML ({error})") from error
        if not isinstance(data, dict):
            raise CheckpointError(f"{self.path / CONFIG_FILE}: expected a mapping")
        return data

    def read_metadata(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / METADATA_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{self.path / METADATA_FILE}: not valid JSON ({error})") from error

    def write_config(self, config: Any) -> None:
        atomic_write_text(self.path / CONFIG_FILE, yaml.safe_dump(to_dict(config), sort_keys=False))

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        atomic_write_json(self.path / METADATA_FILE, metadata)

    def write_eval(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.path / EVAL_FILE, result)


def run_metadata(simulator: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """metadata.json content: versions, git commit, command line, time, simulator and data fingerprints."""
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "simulator": simulator_fingerprints(simulator),
        **(extra or {}),
    }
