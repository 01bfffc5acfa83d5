"""The typed top-level run config of ``train.py``: data, simulator, env, agent and train sections.

A YAML file (``configs/<agent>_<data>.yaml``) plus ``--set key=value`` overrides is validated into
:class:`RunConfig` with ``recarena.config.from_dict``: unknown keys name the valid ones, ill-typed
values name the dotted key. The agent's own options (``agent.config``) are validated against the
config class registered for ``agent.name`` (``recarena.agents.registry``), and the simulator's options
(``simulator.config``) against the simulator's config class, so a typo anywhere fails before any
data is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator

from recarena.core.config import apply_overrides, config_dataclass, from_dict, load_yaml, to_dict
from recarena.data.spec import DataSpec, data_spec

DataConfig = DataSpec
"""Where the logged interactions come from: a data spec (``recarena.data.DataSpec``): ``path`` (a
bundled name such as ``ml-100k``, a log file or folder; None for simulators that need no data, such
as ``synthetic``), ``format``, ``columns``, ``rating_scale``, ``timestamp_format``, ``item_file``,
``item_columns``, delimiters and loading options. The run config's ``data:`` may also be a string:
a bundled name, a path or a YAML/JSON spec file (``source:`` is accepted for ``path``)."""


@config_dataclass
class SimulatorConfig:
    """Which registered user simulator, and its options (validated by the simulator's config class)."""

    name: str = "logged"
    config: dict[str, Any] = field(default_factory=dict)


@config_dataclass
class EnvConfig:
    """The batched env the agent trains in (``recarena.envs.RecommendationVectorEnv`` options)."""

    num_envs: Annotated[int, Field(ge=1)] = 64
    """Simulated users stepped together."""
    slate_size: int = 1
    max_steps: int = 50
    """Session cap (truncation)."""
    reward: str | None = None
    """None = the simulator's configured reward; else one of click, like, rating, dwell."""
    history_length: int | None = None
    observation_keys: list[str] = field(default_factory=lambda: ["history", "responses", "llm_state"])
    mask_consumed: bool = True

    def env_kwargs(self, data: DataSpec, simulator: SimulatorConfig, device: str) -> dict[str, Any]:
        """Keyword arguments for ``RecommendationVectorEnv``."""
        return {
            "simulator": simulator.name,
            "data": data.to_value(),
            "simulator_config": dict(simulator.config),
            "slate_size": self.slate_size,
            "max_steps": self.max_steps,
            "reward": self.reward,
            "history_length": self.history_length,
            "observation_keys": list(self.observation_keys),
            "mask_consumed": self.mask_consumed,
            "device": device,
        }


@config_dataclass
class AgentSection:
    """Which registered agent (``dqn``, ``ppo``, ``maskable_ppo``, ``tabular_q``, ``linear_q``...) and its options."""

    name: str = "dqn"
    config: dict[str, Any] = field(default_factory=dict)


@config_dataclass
class TrainConfig:
    """The training loop: length, seeding, device, checkpoints, evaluation and logging cadence."""

    total_steps: Annotated[int, Field(ge=1)] = 50_000
    """User-steps to train for (a vector-env step of N users is N user-steps)."""
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    device: str = "auto"
    """auto | cpu | cuda[:N]."""
    checkpoint_every: Annotated[int, Field(ge=1)] = 10_000
    """User-steps between checkpoints (training runs in chunks of this size)."""
    keep_checkpoints: Annotated[int, Field(ge=1)] = 2
    eval_every: Annotated[int, Field(ge=0)] = 10_000
    """User-steps between held-out evaluations (rounded to whole chunks); 0 = only at the end."""
    eval_sessions: Annotated[int, Field(ge=1)] = 256
    """Simulated sessions per evaluation (drawn with a fixed seed, separate from training's)."""
    log_every: Annotated[int, Field(ge=1)] = 1_000
    """User-steps between charts/ and sim/ log points."""
    runs_root: str = "runs"
    """Parent of auto-named run directories."""
    torch_threads: Annotated[int, Field(ge=1)] = 1

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device != "auto" and device != "cpu" and not device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
        return device


@config_dataclass
class RunConfig:
    """Everything a training run is made of; saved resolved as ``config.yaml`` in the run directory."""

    data: DataSpec = field(default_factory=DataSpec)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentSection = field(default_factory=AgentSection)
    train: TrainConfig = field(default_factory=TrainConfig)

    @field_validator("data", mode="before")
    @classmethod
    def _data_string(cls, data: Any) -> Any:
        """``data: ml-1m``, ``data: path/to/log`` or ``data: spec.yaml``: the spec it names."""
        if isinstance(data, str):
            return to_dict(data_spec(data))
        return data


def validate_sections(config: RunConfig) -> RunConfig:
    """Validate the agent's and simulator's own options against their registered config classes.

    Returns a copy whose ``agent.config`` and ``simulator.config`` are complete (defaults filled in),
    so the saved ``config.yaml`` records every value the run used.
    """
    from recarena.agents.registry import agent_class, agent_config
    from recarena.simulators.registry import get as simulator_class

    agent_data = dict(config.agent.config)
    agent_fields = {f.name for f in dataclasses.fields(agent_class(config.agent.name).config_class)}
    if "seed" in agent_fields and "seed" not in agent_data:
        agent_data["seed"] = config.train.seed  # train.seed is the one seed of a run
    agent = agent_config(config.agent.name, agent_data, prefix="agent.config.")
    sim_cls = simulator_class(config.simulator.name)  # unknown names list the available ones
    sim_data = dict(config.simulator.config)
    sim_fields = {f.name for f in dataclasses.fields(sim_cls.config_class)}
    if config.env.history_length is not None and "history_length" in sim_fields and "history_length" not in sim_data:
        # The env's window, as the env itself does (recarena.envs.common.simulator_config): filling in
        # the simulator's default (20) here would make `env.history_length: 50` alone an error.
        sim_data["history_length"] = config.env.history_length
    sim_config = from_dict(sim_cls.config_class, sim_data, prefix="simulator.config.")
    return RunConfig(
        data=config.data,
        simulator=SimulatorConfig(config.simulator.name, to_dict(sim_config)),
        env=config.env,
        agent=AgentSection(config.agent.name, to_dict(agent)),
        train=config.train,
    )


def load_run_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), data: Any = None
) -> RunConfig:
    """Read a YAML run config (or the defaults), apply ``key=value`` overrides and validate everything.

    ``data`` (``train.py --data``: a name, path, spec file or mapping) replaces the config's
    ``data`` section before the overrides apply."""
    raw = load_yaml(path) if path is not None else {}
    if data is not None:
        raw["data"] = data
    if isinstance(raw.get("data"), str):  # `data: ml-1m`: its mapping, so that data.* overrides (data.split=...) apply
        raw["data"] = to_dict(data_spec(raw["data"]))
    raw = apply_overrides(raw, overrides)
    return validate_sections(from_dict(RunConfig, raw))


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate plain data (e.g. a run directory's saved config) into a :class:`RunConfig`."""
    return validate_sections(from_dict(RunConfig, data))
