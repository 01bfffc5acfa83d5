"""What evaluate.py scores: data sets, item encodings, baselines built on the fly, and trained runs.

A run directory (written by train.py) is expected to hold

* ``metadata.json`` - at least the data it was trained on: ``item_set_fingerprint`` (required) and
  optionally ``data_fingerprint`` and ``data`` (a ``load_logs`` source), at the top level or under a
  ``data`` mapping;
* ``config.yaml`` or ``config.json`` - the run's config (read for ``history_length`` and, for
  simulated return, the ``simulator`` section, ``env.reward`` and ``env.max_steps``: a run is
  evaluated on the simulator it was trained on);
* the saved agent: a directory with ``agent.json`` (``Agent.save``), looked for at ``agent/``,
  ``final/``, ``model/``, the run directory itself, then any sub-directory;
* TensorBoard event files (``events.out.tfevents*``) anywhere below it, for learning curves.

Missing or corrupt pieces raise :class:`recarena.errors.CheckpointError`; a run trained on another
catalogue (or other data) than the evaluation data is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recarena.agents.base import Agent
from recarena.core.config import apply_overrides, load_yaml
from recarena.core.errors import CheckpointError, ConfigError
from recarena.data.interactions import InteractionLog, LogSplit

BASELINES = {
    "random": "random",
    "most_popular": "most_popular",
    "popular": "most_popular",
    "greedy": "greedy",
    "sasrec": "sasrec",
    "sequence": "sasrec",
}
"""Baseline names accepted by ``--baseline`` and the agent each builds."""

AGENT_DIR_CANDIDATES = ("agent", "final", "model", ".")


@dataclass
class Candidate:
    """One policy to evaluate: a label, the agent, where it came from and its history length."""

    label: str
    agent: Agent
    history_length: int = 50
    run_dir: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def item_embeddings_for(log: InteractionLog, encoder: str = "minilm", cache_dir: str | None = None) -> torch.Tensor:
    """Float32 [n_items, d] item encodings: the cached LLM encodings (``minilm``) or L2-normalised genres.

    ``genres`` needs no model (used in quick tests); runs trained on LLM states need ``minilm``.
    """
    if encoder == "genres":
        matrix = torch.as_tensor(log.items.genre_matrix())
        return torch.nn.functional.normalize(matrix + 1e-3, dim=1)
    if encoder != "minilm":
        raise ConfigError(f"unknown item encoder '{encoder}'; choose 'minilm' or 'genres'")
    from recarena.llm.encoder import encode_items

    return encode_items(log.items, cache_dir=cache_dir)


def fit_preference(split: LogSplit, item_embeddings: torch.Tensor, overrides: dict[str, Any] | None = None) -> Any:
    """The LLM-derived preference model fitted on the training log (validated on the validation log)."""
    from recarena.core.config import from_dict
    from recarena.simulators.preference import PreferenceConfig, fit_preference_model

    config = from_dict(PreferenceConfig, overrides or {}, prefix="preference.")
    valid = split.valid if split.valid.n_events else None
    return fit_preference_model(split.train, item_embeddings, config, valid=valid, progress=False)


def build_baseline(
    name: str,
    split: LogSplit,
    item_embeddings: torch.Tensor,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    preference_model: Any = None,
) -> Agent:
    """Build and fit baseline ``name`` on ``split.train`` (``options``: its config keys)."""
    from recarena.agents.registry import make_agent

    if name not in BASELINES:
        raise ConfigError(f"unknown baseline '{name}'; choose from {sorted(BASELINES)}")
    agent_name = BASELINES[name]
    n_items = split.full.n_items
    config = dict(options or {})
    if agent_name == "random":
        config.setdefault("seed", seed)
        return make_agent("random", n_items, config)
    if agent_name == "most_popular":
        return make_agent("most_popular", n_items, config).fit(split.train)
    if agent_name == "greedy":
        if preference_model is None:
            preference_model = fit_preference(split, item_embeddings)
        return make_agent("greedy", n_items, config, preference_model=preference_model)
    config.setdefault("seed", seed)
    return make_agent("sasrec", n_items, config).fit(split.train, item_embeddings)


def baseline_options(overrides: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME.key=value`` strings -> {NAME: {key: value}} (e.g. ``sasrec.epochs=5``)."""
    options = apply_overrides({}, overrides)
    for name, value in options.items():
        if name not in BASELINES and name != "preference":
            raise ConfigError(f"--set {name}.*: '{name}' is not a baseline; choose from {sorted(BASELINES)} or 'preference'")
        if not isinstance(value, dict):
            raise ConfigError(f"--set {name}=...: give keys as {name}.KEY=VALUE")
    return options


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not readable JSON ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _lookup(metadata: dict[str, Any], key: str) -> Any:
    """``metadata[key]``, else the key in its ``data`` or ``simulator`` section (None when absent)."""
    if key in metadata:
        return metadata[key]
    for section in ("data", "simulator"):
        value = metadata.get(section)
        if isinstance(value, dict) and key in value:
            return value[key]
    return None


def run_data_source(metadata: dict[str, Any]) -> str | None:
    """The ``load_logs`` source a run was trained on, where its metadata records one."""
    data = metadata.get("data")
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        for key in ("source", "name", "path"):
            if isinstance(data.get(key), str):
                return data[key]
    return None


def _find_agent_dir(run_dir: Path) -> Path:
    for name in AGENT_DIR_CANDIDATES:
        if (run_dir / name / "agent.json").is_file():
            return run_dir / name
    found = sorted(path.parent for path in run_dir.rglob("agent.json"))
    if not found:
        raise CheckpointError(f"{run_dir}: no saved agent (a directory with agent.json) in the run directory")
    return found[-1]


def _run_config(run_dir: Path) -> dict[str, Any]:
    if (run_dir / "config.yaml").is_file():
        try:
            return load_yaml(run_dir / "config.yaml")
        except ConfigError as error:
            raise CheckpointError(f"{run_dir}: corrupt config.yaml ({error})") from error
    if (run_dir / "config.json").is_file():
        return _read_json(run_dir / "config.json")
    return {}


@dataclass
class SimulatorSpec:
    """The simulator a run was trained on, as its config records it: registry name, options, session cap."""

    name: str
    options: dict[str, Any]
    max_steps: int | None = None


def run_simulator_spec(config: dict[str, Any]) -> SimulatorSpec | None:
    """The run's simulator from its config (None when the config has no ``simulator`` section).

    The env's ``reward`` (when set) overrides the simulator's, as it does in training, and the
    env's ``history_length`` fills the simulator's when the simulator leaves it out.
    """
    section = config.get("simulator")
    if not isinstance(section, dict):
        return None
    options = dict(section.get("config") or {})
    env = config.get("env") if isinstance(config.get("env"), dict) else {}
    if isinstance(env.get("reward"), str):
        options["reward"] = env["reward"]
    if isinstance(env.get("history_length"), int) and "history_length" not in options:
        options["history_length"] = env["history_length"]
    max_steps = env.get("max_steps") if isinstance(env.get("max_steps"), int) else None
    return SimulatorSpec(str(section.get("name", "logged")), options, max_steps)


def common_simulator_spec(specs: dict[str, SimulatorSpec | None]) -> SimulatorSpec | None:
    """The one simulator every run (label -> spec) was trained on; runs without a spec accept any.

    Runs trained on different simulators cannot share one simulated-return table: refused.
    """
    known = [(label, spec) for label, spec in specs.items() if spec is not None]
    if not known:
        return None
    first_label, first = known[0]
    for label, spec in known[1:]:
        if spec.name != first.name or spec.options != first.options:
            raise ConfigError(
                f"runs '{first_label}' and '{label}' were trained on different simulators; evaluate them "
                f"separately (or with --protocols without 'simulated')"
            )
    return first


def simulator_preference_model(spec: SimulatorSpec, data_source: str, split: LogSplit, item_embeddings: torch.Tensor,
                               item_encoder: str = "minilm", overrides: dict[str, Any] | None = None) -> Any:
    """The preference model a run's logged simulator answers with.

    ``preference_path`` in the run's config: that model. Named data with the MiniLM encodings: the
    model training fitted and cached for this simulator config (``envs.preference_cache``; fitted
    now with the same config when absent). Otherwise one fitted with the run's ``preference`` config.
    """
    from recarena.simulators.preference import PreferenceModel

    path = spec.options.get("preference_path")
    if isinstance(path, str):
        return PreferenceModel.load(path, log=split.train)
    if item_encoder == "minilm":
        from recarena.simulators.preference_store import ensure_preference_model

        return PreferenceModel.load(ensure_preference_model(data_source, spec.options), log=split.train)
    preference = spec.options.get("preference") if isinstance(spec.options.get("preference"), dict) else {}
    return fit_preference(split, item_embeddings, {**preference, **(overrides or {})})


def _history_length(config: dict[str, Any], default: int) -> int:
    """The observation window a run trained with: ``env.history_length`` where set, else its
    simulator's ``history_length`` (the rule of ``envs.common.resolve_history_length``; train.py
    writes the resolved simulator options under ``simulator.config``), else ``default``."""
    env = config.get("env") if isinstance(config.get("env"), dict) else {}
    if isinstance(env.get("history_length"), int):
        return int(env["history_length"])
    spec = run_simulator_spec(config)
    if spec is not None and isinstance(spec.options.get("history_length"), int):
        return int(spec.options["history_length"])
    return default


def _final_step(run_dir: Path) -> int:
    """The training step of a run's final agent: from ``eval.json``, else from the latest checkpoint."""
    from recarena.core.checkpoint import latest_checkpoint
    from recarena.training.run import EVAL_FILE

    if (run_dir / EVAL_FILE).is_file():
        step = _read_json(run_dir / EVAL_FILE).get("step")
        if isinstance(step, int):
            return step
    latest = latest_checkpoint(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else None
    if latest is not None and latest.name.startswith("step_") and latest.name[5:].isdigit():
        return int(latest.name[5:])
    return 0


def load_run(run_dir: str | Path, default_history_length: int = 50, **context: Any) -> tuple[Agent, dict[str, Any]]:
    """(agent, metadata) of a trained run directory; see the module docstring for the layout."""
    from recarena.agents.registry import load_agent

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    metadata_path = run_dir / "metadata.json"
    if not metadata_path.is_file():
        raise CheckpointError(f"{run_dir}: missing metadata.json; is this a train.py run directory?")
    metadata = _read_json(metadata_path)
    if not _lookup(metadata, "item_set_fingerprint"):
        raise CheckpointError(f"{metadata_path}: no item_set_fingerprint; cannot check the run matches the data")
    config = _run_config(run_dir)
    agent_dir = _find_agent_dir(run_dir)
    try:
        agent = load_agent(agent_dir, **context)
    except CheckpointError:
        raise
    except (ConfigError, OSError, ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{agent_dir}: could not load the agent ({error})") from error
    metadata = dict(metadata)
    source = (config.get("data") or {}).get("source") if isinstance(config.get("data"), dict) else None
    if "data" not in metadata and isinstance(source, str):
        metadata["data"] = {"source": source}  # train.py records the data source in config.yaml
    if "global_step" not in metadata:  # the step the final agent was saved at, for TensorBoard write-back
        metadata["global_step"] = _final_step(run_dir)
    metadata["_history_length"] = _history_length(config, default_history_length)
    metadata["_simulator"] = run_simulator_spec(config)
    metadata["_agent_dir"] = str(agent_dir)
    return agent, metadata


def check_run_matches(run_dir: str | Path, metadata: dict[str, Any], log: InteractionLog, split: LogSplit) -> None:
    """Refuse a run trained on another item catalogue (or other data) than ``log``."""
    expected = _lookup(metadata, "item_set_fingerprint")
    found = log.item_set_fingerprint()
    if expected != found:
        raise CheckpointError(
            f"{run_dir}: trained on a different item set (fingerprint {expected}) than the evaluation data "
            f"'{log.name}' ({found}); evaluate it on the data it was trained on"
        )
    data_fingerprint = _lookup(metadata, "data_fingerprint")
    accepted = {log.fingerprint(), split.train.fingerprint()}
    if data_fingerprint and data_fingerprint not in accepted:
        raise CheckpointError(
            f"{run_dir}: trained on different data (fingerprint {data_fingerprint}) than the evaluation data "
            f"'{log.name}' (full {log.fingerprint()}, train {split.train.fingerprint()})"
        )


def subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` rows, chosen with a seeded generator."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
