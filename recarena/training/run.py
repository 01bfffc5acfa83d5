"""A training run's directory: what produced it, its checkpoints and its TensorBoard events.

Layout::

    runs/<name>/
      config.yaml        the resolved run config (every default filled in)
      metadata.json      versions, git commit, command line, data/simulator/catalogue fingerprints,
                         the simulator's version (``simulator_version``: the generation of its
                         defaults, e.g. logged-v2), the values the env resolved (``resolved``:
                         history_length) and the step of the saved agent (``agent_step``)
      checkpoints/       step_<N>/ {state.safetensors, metadata.json, manifest.json}, latest
      tb/                TensorBoard event files (``tensorboard --logdir runs``)
      agent/             the final agent (``Agent.save``), loadable by evaluate.py
      eval.json          the latest held-out evaluation

This module is the one owner of these files: ``train.py`` writes them through :class:`RunDirectory`
and everything else reads a finished run as one typed, frozen :class:`RunRecord`
(``RunDirectory.open(path).record()`` or :func:`read_run`). Anything missing or corrupt raises
:class:`~recarena.core.errors.CheckpointError` naming the file. Every file is written atomically
(``recarena.io``).
"""

from __future__ import annotations

import copy
import datetime as _dt
import importlib.metadata
import json
import platform
import subprocess
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import yaml

from recarena.core.checkpoint import (
    LATEST_FILE,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
)
from recarena.core.config import (
    OldConfigWarning,
    apply_overrides,
    from_dict,
    migrate_renamed_keys,
    to_dict,
    warn_old_config,
)
from recarena.core.errors import CheckpointError, ConfigError
from recarena.core.io import atomic_write_json, atomic_write_text
from recarena.training.config import RunConfig, run_config_from_dict

if TYPE_CHECKING:
    from recarena.agents.base import Agent

CONFIG_FILE = "config.yaml"
METADATA_FILE = "metadata.json"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tb"
AGENT_DIR = "agent"
AGENT_FILE = "agent.json"  # written by Agent.save into AGENT_DIR
EVAL_FILE = "eval.json"
SIMULATOR_VERSION = "simulator_version"  # metadata.json key: the simulator's pinned version

UNPINNED_VERSIONS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "logged": (("logged-v1", "env -v2", "answers"), ("logged-v2", "env -v3", "leave.model")),
}
"""Simulator name -> ((version, the change it predates, an option that change added), ...), oldest
first. A run without a ``simulator_version`` trained on the first version whose added option its
``config.yaml`` lacks (else on today's); the options it lacks are read with that version's defaults,
not today's."""

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
    """The simulator record (name, config, data fingerprint) plus the catalogue fingerprint where known,
    and what the simulator fitted at construction (``choice_fit``: choice utility weights, response
    penalty, calibrated answers' ``a, b, sd``) where it has it."""
    from recarena.simulators.registry import describe

    record = describe(simulator)
    fit = getattr(simulator, "choice_fit", None)
    if fit:
        record["choice_fit"] = fit
    log = getattr(simulator, "log", None)
    if log is not None:
        record["data_fingerprint"] = log.fingerprint()
        record["item_set_fingerprint"] = log.item_set_fingerprint()
        record["data_name"] = log.name
    return record


class OldSimulatorWarning(OldConfigWarning):
    """A run trained before its simulator's version was pinned was read on the simulator it trained on
    (the options its config.yaml lacks from that version's defaults: :func:`pin_simulator_defaults`)."""


def simulator_version(simulator: Any) -> str:
    """The version of a simulator (built, or its registered name): its class's ``version``, else its name."""
    from recarena.simulators.registry import get

    name = simulator if isinstance(simulator, str) else getattr(simulator, "name", "")
    cls = get(simulator) if isinstance(simulator, str) else type(simulator)
    return getattr(cls, "version", None) or name or cls.__name__


def pin_simulator_defaults(data: dict[str, Any], pinned: Any) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """A saved run config (plain data) read on the simulator version it trained on.

    ``pinned`` is metadata.json's ``simulator_version`` (None for runs written before it was recorded:
    their version is :func:`unpinned_version`'s). Where that version is not today's, the options ``simulator.config``
    lacks take that version's defaults (the simulator registered under the version's name) instead of
    today's. Returns the config, the version (None for an unknown simulator: validation says so) and
    the options filled in that differ from today's defaults (dotted keys within sections: ``leave.model``).
    """
    from recarena.simulators.registry import get

    section = data.get("simulator")
    section = section if isinstance(section, dict) else {}
    name, options = section.get("name", "logged"), section.get("config") or {}
    if not isinstance(name, str) or not isinstance(options, dict):
        return data, None, {}
    try:
        cls = get(name)
    except ConfigError:
        return data, None, {}
    current = simulator_version(name)
    if isinstance(pinned, str):
        version = pinned
    elif pinned is None:
        version = unpinned_version(name, options) or current
    else:
        raise ConfigError(f"{SIMULATOR_VERSION} must be a string, got {pinned!r}")
    if version == current:
        return data, version, {}
    try:
        old = to_dict(get(version).config_class())
    except ConfigError as error:
        raise ConfigError(f"{SIMULATOR_VERSION} is {version!r}, which this recarena cannot rebuild ({error})") from error
    filled = _old_defaults(options, old, to_dict(cls.config_class()))
    if not filled:
        return data, version, {}
    config = copy.deepcopy(options)
    for key, value in filled.items():
        *path, last = key.split(".")
        section_of = config
        for part in path:
            section_of = section_of[part]
        section_of[last] = value
    return {**data, "simulator": {**section, "config": config}}, version, filled


def unpinned_version(name: str, options: dict[str, Any]) -> str | None:
    """The version a run without a pinned ``simulator_version`` trained on (:data:`UNPINNED_VERSIONS`),
    None for today's."""
    for version, _, added in UNPINNED_VERSIONS.get(name, ()):
        section: Any = options
        for part in added.split("."):
            section = section.get(part) if isinstance(section, dict) else None
        if section is None:
            return version
    return None


def _old_defaults(options: dict[str, Any], old: dict[str, Any], today: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{dotted key: old default}`` of the options (nested sections included) that ``options`` lacks
    and whose default in the old version differs from today's."""
    filled: dict[str, Any] = {}
    for key, value in old.items():
        if key not in options:
            if value != today.get(key):
                filled[prefix + key] = value
        elif isinstance(value, dict) and isinstance(options[key], dict) and isinstance(today.get(key), dict):
            filled.update(_old_defaults(options[key], value, today[key], f"{prefix}{key}."))
    return filled


def default_run_name(agent: str, data: str | None, seed: int) -> str:
    """``<agent>_<data>_s<seed>_<UTC timestamp>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    data_name = Path(data).name if data else "synthetic"
    return f"{agent}_{data_name}_s{seed}_{stamp}"


@dataclass(frozen=True)
class SimulatorSpec:
    """The simulator a run trained on, as evaluation rebuilds it without an env.

    ``options`` are the run's validated simulator config (``config.yaml``'s ``simulator.config``,
    every default filled in) with the env's ``reward``, when the run set one, as the simulator's own
    reward: the env scored each step with it. ``max_steps`` is the env's session cap.
    """

    name: str
    options: dict[str, Any]
    max_steps: int
    version: str | None = None
    """The simulator version the run trained on (metadata.json's ``simulator_version``, or inferred for
    older runs: :func:`pin_simulator_defaults`); ``options`` already hold its values."""


@dataclass(frozen=True)
class RunRecord:
    """Everything a finished run directory says about itself, read and checked once."""

    path: Path
    config: RunConfig
    """The validated run config (``config.yaml``)."""
    metadata: dict[str, Any]
    """``metadata.json`` as train.py wrote it."""
    data_source: str | dict[str, Any] | None
    """The data spec the run trained on (``config.data``, as ``recarena.data.data_spec`` takes it: a
    name or path, or a mapping); None for data-free simulators."""
    data_fingerprint: str | None
    """Fingerprint of the simulator's (training) log; None for data-free simulators."""
    item_set_fingerprint: str | None
    """Fingerprint of the item catalogue; None for data-free simulators."""
    simulator: SimulatorSpec
    history_length: int
    """The observation window the agent trained with (as the env resolved it)."""
    final_step: int
    """The training step at which ``agent/`` was saved."""
    agent_dir: Path
    migrated: bool = False
    """Whether ``config.yaml`` was written before the config-vocabulary rename (read with the new names)."""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def split(self) -> str:
        """The split whose training part the run trained on (``data.split``); evaluate.py scores it
        only on that split's held-out events."""
        return self.config.data.split

    @property
    def metadata_file(self) -> Path:
        return self.path / METADATA_FILE

    def load_agent(self, **context: Any) -> Agent:
        """The saved agent (``recarena.agents.registry.load_agent``; ``context``: e.g. ``device``)."""
        from recarena.agents.registry import load_agent

        try:
            with warnings.catch_warnings():
                if self.migrated:  # the run's warning named the keys: agent/agent.json has the same ones
                    warnings.simplefilter("ignore", OldConfigWarning)
                return load_agent(self.agent_dir, **context)
        except CheckpointError:
            raise
        except (ConfigError, OSError, ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(f"{self.agent_dir}: could not load the agent ({error})") from error


@dataclass(frozen=True)
class ResumePoint:
    """A verified checkpoint to continue a run from (:meth:`RunDirectory.resume_point`)."""

    path: Path
    step: int
    tensors: dict[str, Any]
    metadata: dict[str, Any]
    notice: str | None = None
    """Said to the user when the checkpoint is not the one ``checkpoints/latest`` names."""


class RunDirectory:
    """Paths and files of one run directory: the only code that reads or writes them."""

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
        """An existing run directory; says what is missing otherwise."""
        run = cls(path)
        if not run.path.is_dir():
            raise CheckpointError(f"{run.path}: run directory not found")
        missing = [name for name in (CONFIG_FILE, METADATA_FILE) if not (run.path / name).is_file()]
        if missing:
            raise CheckpointError(f"{run.path}: missing {' and '.join(missing)}; not a train.py run directory")
        return run

    # ------------------------------------------------------------------ reading

    def read_config(self) -> dict[str, Any]:
        """``config.yaml`` as plain data (see :meth:`run_config` for the validated config)."""
        path = self.path / CONFIG_FILE
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{path}: not readable ({error})") from error
        except yaml.YAMLError as error:
            raise CheckpointError(f"{path}: not valid YAML ({error})") from error
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: expected a mapping")
        return data

    def config_data(self, overrides: Iterable[str] = ()) -> dict[str, Any]:
        """``config.yaml`` as plain data with ``overrides`` (``train.total_steps=...``) applied, the agent
        keys of a run written before the config-vocabulary rename read as the new ones (one
        :class:`~recarena.core.config.OldConfigWarning` naming the run and the keys), and the simulator
        options it lacks read with the defaults of the simulator version it trained on
        (:func:`pin_simulator_defaults`; one :class:`OldSimulatorWarning` for a run without a pinned version)."""
        return self._resolved_config(overrides)[0]

    def _resolved_config(self, overrides: Iterable[str] = ()) -> tuple[dict[str, Any], bool, str | None]:
        """:meth:`config_data`'s work, once: (the data, whether old agent keys were migrated, the
        simulator version)."""
        data, notes = migrate_run_config(apply_overrides(self.read_config(), overrides))
        warn_old_config(self.path, notes, prefix="agent.config.")
        pinned = self.read_metadata().get(SIMULATOR_VERSION)
        try:
            data, version, filled = pin_simulator_defaults(data, pinned)
        except ConfigError as error:
            raise CheckpointError(f"{self.path / METADATA_FILE}: {error}") from error
        if filled and pinned is None:
            change = {v: c for v, c, _ in UNPINNED_VERSIONS[data["simulator"]["name"]]}[version]  # (unpinned: only these)
            values = ", ".join(f"{key}: {str(value).lower() if isinstance(value, bool) else value}"
                               for key, value in filled.items())
            warnings.warn(f"{self.path}: trained before {change}; its users are simulator {version} ({values})",
                          OldSimulatorWarning, stacklevel=3)
        return data, bool(notes), version

    def simulator_version(self) -> str | None:
        """The simulator version the run trained on: metadata.json's pin, else as :func:`pin_simulator_defaults`
        infers it from ``config.yaml`` (None for an unknown simulator)."""
        pinned = self.read_metadata().get(SIMULATOR_VERSION)
        try:
            return pin_simulator_defaults(self.read_config(), pinned)[1]
        except ConfigError as error:
            raise CheckpointError(f"{self.path / METADATA_FILE}: {error}") from error

    def pin_simulator_version(self) -> None:
        """Record the simulator version in a run written before it was pinned (``train.py --resume``: call
        it before the config is rewritten, which fills the options it lacked)."""
        metadata = self.read_metadata()
        if SIMULATOR_VERSION not in metadata:
            version = self.simulator_version()
            if version is not None:
                self.write_metadata({**metadata, SIMULATOR_VERSION: version})

    def run_config(self) -> RunConfig:
        """``config.yaml`` validated into a :class:`RunConfig` (old agent keys migrated: :meth:`config_data`)."""
        return self._validated(self.config_data())

    def _validated(self, data: dict[str, Any]) -> RunConfig:
        """``data`` (:meth:`config_data`'s) as a :class:`RunConfig`; a CheckpointError naming config.yaml if invalid."""
        try:
            return run_config_from_dict(data)
        except (ConfigError, ValueError, TypeError) as error:
            raise CheckpointError(f"{self.path / CONFIG_FILE}: not a valid run config ({error})") from error

    def read_metadata(self) -> dict[str, Any]:
        return _read_json_object(self.path / METADATA_FILE)

    def read_eval(self) -> dict[str, Any] | None:
        """``eval.json`` (the latest held-out evaluation), or None before the first one."""
        path = self.path / EVAL_FILE
        return _read_json_object(path) if path.is_file() else None

    def record(self) -> RunRecord:
        """The finished run as a :class:`RunRecord`; refuses a run without a saved agent."""
        data, migrated, version = self._resolved_config()
        config = self._validated(data)
        metadata = self.read_metadata()
        simulator_record = metadata.get("simulator", {})
        if not isinstance(simulator_record, dict):
            raise CheckpointError(f"{self.path / METADATA_FILE}: 'simulator' must be a mapping")
        options = dict(config.simulator.config)
        if config.env.reward is not None:
            options["reward"] = config.env.reward
        return RunRecord(
            path=self.path,
            config=config,
            metadata=metadata,
            data_source=config.data.to_value(),
            data_fingerprint=self._fingerprint(simulator_record, "data_fingerprint"),
            item_set_fingerprint=self._fingerprint(simulator_record, "item_set_fingerprint"),
            simulator=SimulatorSpec(config.simulator.name, options, config.env.max_steps, version),
            history_length=self._history_length(config, metadata),
            final_step=self._final_step(metadata),
            agent_dir=self._agent_dir(),
            migrated=migrated,
        )

    def _fingerprint(self, simulator_record: dict[str, Any], key: str) -> str | None:
        value = simulator_record.get(key)
        if value is not None and not isinstance(value, str):
            raise CheckpointError(f"{self.path / METADATA_FILE}: simulator.{key} must be a string, got {value!r}")
        return value

    def _history_length(self, config: RunConfig, metadata: dict[str, Any]) -> int:
        """The window the env resolved at training time (``resolved.history_length``).

        Runs written before train.py recorded it are resolved here with the env's own rule
        (``recarena.envs.common.resolve_history_length``) against the window of the run's simulator config.
        """
        resolved = metadata.get("resolved")
        if isinstance(resolved, dict) and "history_length" in resolved:
            value = resolved["history_length"]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CheckpointError(
                    f"{self.path / METADATA_FILE}: resolved.history_length must be a positive integer, got {value!r}"
                )
            return value
        from recarena.envs.common import parse_options, resolve_history_length
        from recarena.simulators.registry import get

        simulator_config = from_dict(get(config.simulator.name).config_class, config.simulator.config)
        window = getattr(simulator_config, "history_length", None)
        if not isinstance(window, int):
            raise CheckpointError(
                f"{self.path / METADATA_FILE}: records no resolved history_length and the '{config.simulator.name}' "
                f"simulator config has none; retrain the run with this version of train.py"
            )
        try:
            options = parse_options(**config.env.env_kwargs(config.data, config.simulator, "cpu"))
            # The simulator's window is its config's (ComposedSimulator.history_length).
            return resolve_history_length(options, SimpleNamespace(history_length=window))  # type: ignore[arg-type]
        except (ConfigError, ValueError) as error:
            raise CheckpointError(f"{self.path / CONFIG_FILE}: {error}") from error

    def _final_step(self, metadata: dict[str, Any]) -> int:
        """``agent_step`` where train.py recorded it, else the last evaluation's step, else the latest checkpoint's."""
        step = metadata.get("agent_step")
        if isinstance(step, int) and not isinstance(step, bool):
            return step
        evaluation = self.read_eval()
        if evaluation is not None and isinstance(evaluation.get("step"), int):
            return int(evaluation["step"])
        latest = latest_checkpoint(self.checkpoints) if self.checkpoints.is_dir() else None
        if latest is not None and latest.name.startswith("step_") and latest.name[5:].isdigit():
            return int(latest.name[5:])
        return 0

    def _agent_dir(self) -> Path:
        if not (self.agent / AGENT_FILE).is_file():
            raise CheckpointError(
                f"{self.path}: no saved agent ({AGENT_DIR}/{AGENT_FILE}); the run has not finished training "
                f"(continue it with train.py --resume {self.path})"
            )
        return self.agent

    def resume_point(self, checkpoint: str | None = None) -> ResumePoint | None:
        """The checkpoint ``train.py --resume`` continues from, read and verified; None for a run
        that has none yet (killed before its first checkpoint: it starts again from step 0).

        * ``checkpoint`` (``--checkpoint NAME``): that checkpoint (a ``step_<N>`` name or a path).
        * Otherwise the one ``checkpoints/latest`` names. If that one is missing or corrupt this
          refuses, naming the newest earlier checkpoint that verifies (resume from it with
          ``--checkpoint``): a damaged file is worth a look before training goes on.
        * Without ``checkpoints/latest`` (a kill between the first checkpoint and its pointer), the
          newest checkpoint that verifies, with a notice; refused if none verifies, or if the run
          has progress (a saved agent, or an evaluation after step 0) but no checkpoint at all.
        """
        if checkpoint is not None:
            path = Path(checkpoint)
            if len(path.parts) == 1:
                path = self.checkpoints / path
            if not path.is_dir():
                names = [p.name for p in list_checkpoints(self.checkpoints)]
                raise CheckpointError(f"{path}: no such checkpoint (this run has {names or 'none'})")
            tensors, metadata, step = read_checkpoint(path)
            return ResumePoint(path, step, tensors, metadata)
        pointer = self.checkpoints / LATEST_FILE
        if pointer.is_file():
            try:
                path = latest_checkpoint(self.checkpoints) or pointer  # (the pointer is a file: never None)
                tensors, metadata, step = read_checkpoint(path)
            except CheckpointError as error:
                intact = self._newest_intact(before=self._pointer_target(pointer))
                advice = (f"the previous checkpoint {intact.name} is intact: continue from it with "
                          f"--resume {self.path} --checkpoint {intact.name}" if intact is not None
                          else "no earlier checkpoint is intact either; train the run again")
                raise CheckpointError(f"{error}; {advice}") from error
            return ResumePoint(path, step, tensors, metadata)
        problems: list[str] = []
        for path in reversed(list_checkpoints(self.checkpoints)):
            try:
                tensors, metadata, step = read_checkpoint(path)
            except CheckpointError as error:
                problems.append(str(error))
                continue
            skipped = f" (skipped: {'; '.join(problems)})" if problems else ""
            return ResumePoint(path, step, tensors, metadata,
                               notice=f"{pointer} is missing; resuming from the newest intact checkpoint, {path.name}{skipped}")
        if problems:
            raise CheckpointError(f"{self.path}: no checkpoint to resume from verifies: {'; '.join(problems)}")
        evaluation = self.read_eval()
        progressed = (self.agent / AGENT_FILE).is_file() or (
            evaluation is not None and isinstance(evaluation.get("step"), int) and evaluation["step"] > 0)
        if progressed:
            raise CheckpointError(
                f"{self.path}: the run has trained (see {EVAL_FILE} / {AGENT_DIR}/) but has no checkpoint to resume from; "
                f"refusing to start it again over its results (train into a new --run-dir)"
            )
        return None

    def _pointer_target(self, pointer: Path) -> int | None:
        try:
            return checkpoint_step(pointer.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            return None

    def _newest_intact(self, before: int | None) -> Path | None:
        """The newest checkpoint (older than step ``before``, when given) that reads and verifies."""
        for path in reversed(list_checkpoints(self.checkpoints)):
            step = checkpoint_step(path)
            if before is not None and step is not None and step >= before:
                continue
            try:
                read_checkpoint(path)
            except CheckpointError:
                continue
            return path
        return None

    # ------------------------------------------------------------------ writing

    def write_config(self, config: Any) -> None:
        atomic_write_text(self.path / CONFIG_FILE, yaml.safe_dump(to_dict(config), sort_keys=False))

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        atomic_write_json(self.path / METADATA_FILE, metadata)

    def write_eval(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.path / EVAL_FILE, result)

    def save_agent(self, agent: Any, step: int) -> None:
        """Save the final agent into ``agent/`` and record the step it was saved at (``agent_step``)."""
        agent.save(self.agent)
        self.write_metadata({**self.read_metadata(), "agent_step": int(step)})


def migrate_run_config(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A saved run config (plain data) with the old names of its agent section read as the new ones
    (``recarena.core.config.migrate_renamed_keys``; SB3 DQN's ``exploration_fraction`` over the run's
    ``train.total_steps``) and the notes saying which; data without any comes back as it was."""
    agent, train = data.get("agent"), data.get("train")
    if not isinstance(agent, dict) or not isinstance(agent.get("config"), dict) or not isinstance(agent.get("name"), str):
        return data, []
    from recarena.agents.registry import agent_class

    try:
        config_class = agent_class(agent["name"]).config_class
    except ConfigError:
        return data, []  # an unknown agent: validation says so
    total = train.get("total_steps") if isinstance(train, dict) else None
    total = total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else None
    config, notes = migrate_renamed_keys(agent["config"], config_class, total)
    return ({**data, "agent": {**agent, "config": config}}, notes) if notes else (data, [])


def read_run(path: str | Path) -> RunRecord:
    """The :class:`RunRecord` of the finished run directory ``path``."""
    return RunDirectory.open(path).record()


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointError(f"{path}: not readable ({error})") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def run_metadata(simulator: Any, extra: dict[str, Any] | None = None, *, history_length: int | None = None) -> dict[str, Any]:
    """metadata.json content: versions, git commit, command line, time, simulator and data fingerprints,
    the simulator's version (pinned: a later change of its defaults does not alter the run).

    ``history_length``: the observation window the env resolved (recorded as ``resolved``, so
    evaluation reads it instead of re-deriving it).
    """
    metadata = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "simulator": simulator_fingerprints(simulator),
        SIMULATOR_VERSION: simulator_version(simulator),
        **(extra or {}),
    }
    if history_length is not None:
        metadata["resolved"] = {"history_length": int(history_length)}
    return metadata
