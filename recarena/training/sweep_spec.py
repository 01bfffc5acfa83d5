"""The typed spec of a sweep (``recarena sweep SPEC``): a base run config, the keys to vary, the seeds,
the selection metric, the measures tabulated and the resources of each trial.

A spec expands into trials (:func:`expand`): every configuration (the grid's product, or
``samples`` random draws) times every seed, each a complete, validated :class:`RunConfig`. Every
trial's config is validated before any trial runs, so a misspelt varied key fails in one line.

Measures are read from evaluate.py's report (``ranking/<split>/<metric>``, ``simulated/<metric>``)
or from the run's own held-out evaluation (``train_eval/<metric>``). The selection metric never reads
a test event: it is a ``ranking/validation/...`` measure (each user's second-last event) or a
simulated one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from recarena.core.config import config_dataclass, from_dict, load_yaml, to_dict
from recarena.core.errors import ConfigError
from recarena.training.config import RunConfig, load_run_config

RANKING_SPLITS = ("validation", "leave-last-out", "temporal")
SELECTABLE = ("ranking/validation/", "simulated/", "train_eval/")
"""Prefixes of the measures a best configuration may be chosen by (none reads a test event)."""
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


@config_dataclass
class TrialResources:
    """What one trial is given: CPU threads (also its torch threads) and a fraction of a GPU."""

    cpu: Annotated[int, Field(ge=1)] = 1
    gpu: Annotated[float, Field(ge=0)] = 0.0


@config_dataclass
class EarlyStopping:
    """ASHA on the runs' held-out simulated return (``train_eval/episodic_return``), by user-steps."""

    grace_steps: Annotated[int, Field(ge=1)] = 10_000
    """No trial is stopped before it has trained this many user-steps."""
    reduction_factor: Annotated[float, Field(gt=1)] = 2.0
    """ASHA keeps the best 1/reduction_factor of the trials at each rung."""


@config_dataclass
class SweepEvaluation:
    """How each finished trial is scored (evaluate.py's options of the same names)."""

    k: Annotated[int, Field(ge=1)] = 10
    sim_users: Annotated[int, Field(ge=1)] = 1000
    sim_steps: Annotated[int, Field(ge=1)] | None = None
    max_users: Annotated[int, Field(ge=1)] | None = None
    bootstrap: Annotated[int, Field(ge=1)] = 200
    seed: int = 0


@config_dataclass
class SweepSpec:
    """A sweep: ``base`` config with ``set`` applied, varied over ``params``, each configuration run per seed."""

    base: str
    """The run config every trial starts from (a path, relative to the spec file)."""
    set: dict[str, Any] = field(default_factory=dict)
    """Fixed overrides of the base config, ``{dotted.key: value}`` (as train.py --set)."""
    params: dict[str, Any] = field(default_factory=dict)
    """The varied keys: ``{dotted.key: [values]}`` for a grid; for random search also
    ``{dotted.key: {uniform|loguniform|randint: [low, high]}}`` or ``{choice: [values]}``."""
    search: Literal["grid", "random"] = "grid"
    samples: Annotated[int, Field(ge=1)] = 4
    """Random search: configurations drawn."""
    search_seed: int = 0
    """Random search: the seed of the draws (the same spec draws the same configurations)."""
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = field(default_factory=lambda: [0])
    select: str = "ranking/validation/HR@10"
    """The measure the best configuration is chosen by (its mean over seeds)."""
    mode: Literal["max", "min"] = "max"
    measures: list[str] = field(default_factory=lambda: ["ranking/validation/HR@10", "simulated/episodic_return"])
    """What the table shows for every configuration (mean and 95% interval over seeds)."""
    evaluation: SweepEvaluation = field(default_factory=SweepEvaluation)
    resources: TrialResources = field(default_factory=TrialResources)
    max_failures: Annotated[int, Field(ge=0)] = 2
    """Retries of a trial that dies; each resumes from the run's last checkpoint."""
    max_concurrent: Annotated[int, Field(ge=1)] | None = None
    """Trials run at once (default: as many as the resources allow)."""
    early_stopping: EarlyStopping | None = None


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep: configuration ``config_id`` with ``seed``."""

    name: str
    config_id: str
    seed: int
    overrides: dict[str, Any]
    """The varied keys' values of this configuration."""
    config: dict[str, Any]
    """The complete, validated run config (plain data)."""


def load_sweep_spec(path: str | Path) -> tuple[SweepSpec, Path]:
    """The spec in the YAML file ``path``, validated, and the base config's path (resolved against the spec's folder)."""
    path = Path(path)
    data = load_yaml(path)
    try:
        spec = from_dict(SweepSpec, data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
    base = Path(spec.base).expanduser()
    base = base if base.is_absolute() else path.parent / base
    if not base.is_file():
        raise ConfigError(f"{path}: base: run config not found: {base} (a relative path is relative to the spec's folder)")
    return spec, base


def check_measures(spec: SweepSpec, where: str = "spec") -> None:
    """Refuse measures evaluate.py does not report, and a selection metric that reads a test event."""
    k = spec.evaluation.k
    ranking_metrics = (f"HR@{k}", f"NDCG@{k}", "MRR")
    for name in [*spec.measures, spec.select]:
        parts = name.split("/")
        if parts[0] == "ranking":
            if len(parts) != 3 or parts[1] not in RANKING_SPLITS or parts[2] not in ranking_metrics:
                raise ConfigError(f"{where}: measure {name!r}: expected ranking/<split>/<metric> with split one of "
                                  f"{list(RANKING_SPLITS)} and metric one of {list(ranking_metrics)} (evaluation.k = {k})")
        elif parts[0] not in ("simulated", "train_eval") or len(parts) != 2 or not parts[1]:
            raise ConfigError(f"{where}: measure {name!r}: expected ranking/<split>/<metric>, simulated/<metric> "
                              f"(episodic_return, ctr, session_length) or train_eval/<metric> (episodic_return)")
    if not spec.select.startswith(SELECTABLE):
        raise ConfigError(f"{where}: select {spec.select!r} reads the test event; choose the best configuration by "
                          f"ranking/validation/<metric> (each user's second-last event) or a simulated/ or train_eval/ measure")


def sample_configurations(spec: SweepSpec, where: str = "spec") -> list[dict[str, Any]]:
    """The varied keys' values of every configuration: the grid's product, or ``samples`` random draws."""
    if not spec.params:
        return [{}]
    for key, values in spec.params.items():
        if spec.search == "grid" and not (isinstance(values, list) and values):
            raise ConfigError(f"{where}: params.{key}: a grid search takes a non-empty list of values, got {values!r}")
        if spec.search == "random" and not (isinstance(values, list) and values) and not _distribution(values):
            raise ConfigError(f"{where}: params.{key}: expected a list of values or one of "
                              f"{{uniform|loguniform|randint: [low, high]}} or {{choice: [values]}}, got {values!r}")
    if spec.search == "grid":
        keys = list(spec.params)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*spec.params.values())]
    rng = np.random.default_rng(spec.search_seed)
    return [{key: _draw(values, rng) for key, values in spec.params.items()} for _ in range(spec.samples)]


def _distribution(values: Any) -> bool:
    if not (isinstance(values, dict) and len(values) == 1 and next(iter(values)) in DISTRIBUTIONS):
        return False
    kind, arguments = next(iter(values.items()))
    if kind == "choice":
        return isinstance(arguments, list) and bool(arguments)
    numbers = isinstance(arguments, list) and len(arguments) == 2 and all(
        isinstance(a, (int, float)) and not isinstance(a, bool) for a in arguments)
    return numbers and arguments[0] < arguments[1] and (kind != "loguniform" or arguments[0] > 0)


def _draw(values: Any, rng: np.random.Generator) -> Any:
    if isinstance(values, list):
        return values[int(rng.integers(len(values)))]
    kind, arguments = next(iter(values.items()))
    if kind == "choice":
        return arguments[int(rng.integers(len(arguments)))]
    low, high = arguments
    if kind == "randint":
        return int(rng.integers(low, high + 1))
    if kind == "uniform":
        return float(rng.uniform(low, high))
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _override(key: str, value: Any) -> str:
    """``key=value`` for :func:`recarena.core.config.apply_overrides` (the value as YAML flow text)."""
    import yaml

    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def expand(spec: SweepSpec, base: Path, where: str = "spec") -> list[Trial]:
    """Every trial of the sweep, each config validated (a bad key or value fails here, in one line)."""
    check_measures(spec, where)
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError(f"{where}: seeds: expected a non-empty list of distinct seeds, got {spec.seeds}")
    fixed = [_override(key, value) for key, value in spec.set.items()]
    configurations = sample_configurations(spec, where)
    width = len(str(len(configurations) - 1))
    trials = []
    for index, values in enumerate(configurations):
        config_id = f"c{index:0{width}d}"
        varied = [_override(key, value) for key, value in values.items()]
        for seed in spec.seeds:
            overrides = [*fixed, *varied, f"train.seed={seed}", f"train.torch_threads={spec.resources.cpu}"]
            if spec.resources.gpu == 0:
                overrides.append("train.device=cpu")
            try:
                config = load_run_config(base, overrides)
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from error
            _check_values(values, config, where)
            trials.append(Trial(f"{config_id}_s{seed}", config_id, seed, dict(values), to_dict(config)))
    return trials


def _check_values(values: dict[str, Any], config: RunConfig, where: str) -> None:
    """Refuse a varied key that lands nowhere in the validated config (e.g. a key of a free-form section
    that the agent's or simulator's config class would have refused, had it not been overwritten)."""
    data = to_dict(config)
    for key in values:
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{where}: params.{key}: not a key of the run config")
            node = node[part]
