"""What evaluate.py scores: data sets, item encodings, baselines built on the fly, and trained runs.

Trained runs are read through their one owner, :mod:`recarena.training.run`: :func:`load_run` turns a
run directory's :class:`~recarena.training.run.RunRecord` (validated config, metadata, data source,
fingerprints, simulator, history length, final step, agent directory) and its loaded agent into a
:class:`Candidate`. Missing or corrupt pieces raise :class:`recarena.core.errors.CheckpointError`
naming the file; :func:`check_run_matches` refuses a run trained on another catalogue (or other data)
than the evaluation data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recarena.agents.base import Agent
from recarena.core.config import apply_overrides
from recarena.core.errors import CheckpointError, ConfigError
from recarena.data.interactions import InteractionLog, LogSplit
from recarena.training.run import RunRecord, SimulatorSpec, read_run

BASELINES = {
    "random": "random",
    "most_popular": "most_popular",
    "popular": "most_popular",
    "greedy": "greedy",
    "sasrec": "sasrec",
    "sequence": "sasrec",
    "gru4rec": "gru4rec",
}
"""Baseline names accepted by ``--baseline`` and the agent each builds."""


@dataclass(frozen=True)
class Candidate:
    """One policy to evaluate: a label, the agent, its history length and, for a trained run, its record.

    A baseline has no agent here: evaluate.py fits it per split, on that split's training part
    (:class:`recarena.evaluation.split_fits.SplitFits`)."""

    label: str
    agent: Agent | None
    history_length: int
    run: RunRecord | None = None


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
    return make_agent(agent_name, n_items, config).fit(split.train, item_embeddings)


def baseline_options(overrides: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME.key=value`` strings -> {NAME: {key: value}} (e.g. ``sasrec.epochs=5``)."""
    options = apply_overrides({}, overrides)
    for name, value in options.items():
        if name not in BASELINES and name != "preference":
            raise ConfigError(f"--set {name}.*: '{name}' is not a baseline; choose from {sorted(BASELINES)} or 'preference'")
        if not isinstance(value, dict):
            raise ConfigError(f"--set {name}=...: give keys as {name}.KEY=VALUE")
    return options


def common_simulator_spec(specs: dict[str, SimulatorSpec]) -> SimulatorSpec | None:
    """The one simulator every run (label -> spec) was trained on; None without runs.

    Runs trained on different simulators cannot share one simulated-return table: refused.
    """
    if not specs:
        return None
    (first_label, first), *others = specs.items()
    for label, spec in others:
        if spec.name != first.name or spec.options != first.options:
            raise ConfigError(
                f"runs '{first_label}' and '{label}' were trained on different simulators; evaluate them "
                f"separately (or with --protocols without 'simulated')"
            )
    return first


def simulator_preference_model(spec: SimulatorSpec, data_source: Any, split: LogSplit, item_embeddings: torch.Tensor,
                               item_encoder: str = "minilm", overrides: dict[str, Any] | None = None) -> Any:
    """The preference model a run's logged simulator answers with.

    ``preference_path`` in the run's config: that model. Named data with the MiniLM encodings: the
    model training fitted and cached for this simulator config (``recarena.simulators.preference_store``; fitted
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


def simulator_uses_ratings(options: dict[str, Any], log: InteractionLog) -> bool:
    """Whether the logged simulator with ``options`` answers with a preference model on ``log``: not
    with the learned choice on a log without ratings (``choice.rating: auto``) or with ``choice.rating: off``."""
    choice = options.get("choice") if isinstance(options.get("choice"), dict) else {}
    model, rating = choice.get("model", "learned"), choice.get("rating", "auto")
    return model != "learned" or rating == "on" or (rating == "auto" and log.has_ratings)


def with_cached_choice_model(options: dict[str, Any], data_source: Any, item_encoder: str = "minilm") -> dict[str, Any]:
    """``options`` of a run's logged simulator with ``choice_path`` set to the next-item model training
    fitted and cached for this data and config (``recarena.simulators.preference_store``), so that the
    simulated users of the evaluation are those of training without a refit. Unchanged for the
    rating-only choice, a given ``choice_path`` or encodings other than the cached MiniLM ones."""
    choice = options.get("choice") if isinstance(options.get("choice"), dict) else {}
    if item_encoder != "minilm" or choice.get("model", "learned") != "learned" or options.get("choice_path"):
        return options
    from recarena.simulators.preference_store import ensure_choice_model

    return {**options, "choice_path": str(ensure_choice_model(data_source, options))}


def load_run(run_dir: str | Path, **context: Any) -> Candidate:
    """A trained run directory as a candidate labelled by its name (``context``: for loading the agent, e.g. ``device``)."""
    record = read_run(run_dir)
    if record.item_set_fingerprint is None:
        raise CheckpointError(
            f"{record.metadata_file}: records no item_set_fingerprint (the '{record.simulator.name}' simulator has "
            f"no logged data); cannot check the run matches the evaluation data"
        )
    return Candidate(record.name, record.load_agent(**context), record.history_length, record)


def check_run_matches(run: RunRecord, log: InteractionLog, split: LogSplit) -> None:
    """Refuse a run trained on another item catalogue (or other data) than ``log``, or on more than
    the training part of ``split`` (the split it trained on, ``run.split``): it would be scored on
    events it learned from."""
    found = log.item_set_fingerprint()
    if run.item_set_fingerprint != found:
        raise CheckpointError(
            f"{run.path}: trained on a different item set (fingerprint {run.item_set_fingerprint}) than the evaluation "
            f"data '{log.name}' ({found}); evaluate it on the data it was trained on"
        )
    if run.data_fingerprint and run.data_fingerprint == log.fingerprint() != split.train.fingerprint():
        raise CheckpointError(
            f"{run.path}: trained on every event of '{log.name}' (fingerprint {run.data_fingerprint}), the held-out "
            f"ones included; evaluate.py scores only runs trained on a split's training part (data.split)"
        )
    if run.data_fingerprint and run.data_fingerprint != split.train.fingerprint():
        raise CheckpointError(
            f"{run.path}: trained on different data (fingerprint {run.data_fingerprint}) than the training part of "
            f"the {run.split} split of the evaluation data '{log.name}' ({split.train.fingerprint()})"
        )


def scores_split(trained_on: str, split: str) -> bool:
    """Whether a run trained on split ``trained_on`` may be scored on ``split``'s held-out events: its
    own split, and for leave-last-out also its validation events (in neither run's training part)."""
    return split == trained_on or (trained_on == "leave-last-out" and split == "validation")


def common_split(splits: dict[str, str]) -> str:
    """The one split every run (label -> split) trained on, whose simulator scores simulated return;
    leave-last-out without runs. Runs trained on different splits are refused (no common simulator)."""
    found = sorted(set(splits.values()))
    if len(found) > 1:
        raise ConfigError(
            f"the runs were trained on different splits ({splits}); their simulated users differ: evaluate them "
            f"separately, or with --protocols without 'simulated'"
        )
    return found[0] if found else "leave-last-out"


def subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` rows, chosen with a seeded generator."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
