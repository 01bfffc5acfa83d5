"""The agent registry: a name maps to an agent class and its typed config dataclass.

Entries are lazy ``"module:Class"`` strings resolved with :mod:`importlib` (never ``eval``), so
listing agents does not import Stable-Baselines3 or torch models that are not used. Every agent
class has a ``config_class`` dataclass; :func:`make_agent` validates plain config data into it with
``recarena.config.from_dict`` (unknown keys and bad values name the key and the valid choices).

Constructors take ``(n_items, config, **context)`` where the context is what that agent needs
besides its config (``item_embeddings`` for the bilinear linear Q, ``preference_model`` for the
greedy baseline, ``env`` for SB3 agents); :func:`make_agent` passes context through unchanged.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Any

from recarena.agents.base import Agent
from recarena.agents.serialization import read_agent_metadata
from recarena.core.config import from_dict
from recarena.core.errors import ConfigError

_REGISTRY: dict[str, str] = {
    "random": "recarena.agents.baselines:RandomAgent",
    "most_popular": "recarena.agents.baselines:MostPopularAgent",
    "greedy": "recarena.agents.baselines:GreedyAgent",
    "sasrec": "recarena.agents.baselines:SequenceModelAgent",
    "gru4rec": "recarena.agents.baselines:GRU4RecAgent",
    "tabular_q": "recarena.agents.qlearning:TabularQAgent",
    "linear_q": "recarena.agents.qlearning:LinearQAgent",
    "dqn": "recarena.agents.sb3_agents:DQNAgent",
    "ppo": "recarena.agents.sb3_agents:PPOAgent",
    "maskable_ppo": "recarena.agents.sb3_agents:MaskablePPOAgent",
    "native_dqn": "recarena.agents.native_dqn:NativeDQNAgent",
    "native_ppo": "recarena.agents.native_ppo:NativePPOAgent",
}


def register_agent(name: str, target: str, overwrite: bool = False) -> None:
    """Register ``target`` (``"package.module:ClassName"``) under ``name``."""
    module, _, attribute = target.partition(":")
    if not module or not attribute:
        raise ValueError(f"agent target must look like 'package.module:ClassName', got {target!r}")
    if name in _REGISTRY and _REGISTRY[name] != target and not overwrite:
        raise ValueError(f"agent '{name}' is already registered as {_REGISTRY[name]!r}")
    _REGISTRY[name] = target


def available_agents() -> list[str]:
    """Sorted names of every registered agent."""
    return sorted(_REGISTRY)


def agent_class(name: str) -> type[Agent]:
    """The agent class registered under ``name``; unknown names list the valid ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown agent '{name}'; available agents: {available_agents()}")
    module_name, _, attribute = _REGISTRY[name].partition(":")
    cls = getattr(importlib.import_module(module_name), attribute)
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(f"{_REGISTRY[name]} is not an Agent subclass")
    return cls


def agent_config(name: str, data: dict[str, Any] | Any | None = None, prefix: str | None = None) -> Any:
    """The validated config dataclass of agent ``name`` built from plain ``data`` (or defaults).

    Errors name each key after ``prefix`` (default ``agent[<name>].``; train.py's run config passes
    ``agent.config.``, the path the user wrote)."""
    config_class = agent_class(name).config_class
    if dataclasses.is_dataclass(data) and isinstance(data, config_class):
        return data
    return from_dict(config_class, data, prefix=f"agent[{name}]." if prefix is None else prefix)


def make_agent(name: str, n_items: int, config: dict[str, Any] | Any | None = None, **context: Any) -> Agent:
    """Build agent ``name`` for a catalogue of ``n_items`` with a validated config and ``context``."""
    cls = agent_class(name)
    return cls(n_items, agent_config(name, config), **context)


def load_agent(directory: str | Path, **context: Any) -> Agent:
    """Load any saved agent, dispatching on the name recorded in its ``agent.json``.

    ``context`` is what a caller can offer (``device``, ``preference_model``, ...); each agent class
    receives the keys its ``load`` takes, so one call loads any kind of agent.
    """
    cls = agent_class(read_agent_metadata(directory)["agent"])
    parameters = inspect.signature(cls.load).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        context = {key: value for key, value in context.items() if key in parameters}
    return cls.load(directory, **context)
