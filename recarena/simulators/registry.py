"""The simulator plug-in registry: simulators by name, each with a typed config.

``@register("name")`` records a :class:`~recarena.simulators.base.Simulator` subclass whose ``config_class``
is a dataclass; :func:`make` validates keyword options into that dataclass
(:func:`recarena.config.from_dict`: unknown keys are errors listing the valid ones) and builds the
simulator as ``cls(config, data=data, device=device, **components)``. Built-in simulators are
imported on first use; third-party ones are found through the entry-point group
``recarena.simulators`` (``name = "package.module:SimulatorClass"``), loaded lazily with
``EntryPoint.load`` - never ``eval``. :func:`describe` records which simulator and config (and data)
produced a run.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from recarena.core.config import from_dict, to_dict
from recarena.core.errors import ConfigError
from recarena.simulators.base import Simulator

ENTRY_POINT_GROUP = "recarena.simulators"

_BUILTIN = {
    "logged": "recarena.simulators.logged",
    "logged-rating": "recarena.simulators.logged",
    "logged-v2": "recarena.simulators.logged",
    "logged-v1": "recarena.simulators.logged",
    "synthetic": "recarena.simulators.synthetic",
}
"""Built-in simulators and the module that registers each (imported on first use)."""

LOGGED_USERS = ("logged", "logged-v2", "logged-v1")
"""The logged-user simulator and its earlier versions (env ``-v3``, ``-v2``, ``-v1``): what simulated
return, the greedy baseline and the on-disk model cache of named data work with."""

_REGISTRY: dict[str, type[Simulator]] = {}

S = TypeVar("S", bound=type)


def _check_class(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Simulator)):
        raise ConfigError(f"simulator '{name}': {cls!r} is not a subclass of simulators.Simulator")
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise ConfigError(f"simulator '{name}': {cls.__name__}.config_class must be a dataclass")


def register(name: str) -> Callable[[S], S]:
    """Class decorator: register a Simulator subclass (with a dataclass ``config_class``) as ``name``."""
    if not name or not isinstance(name, str):
        raise ValueError("a simulator name must be a non-empty string")

    def decorate(cls: S) -> S:
        _check_class(name, cls)
        existing = _REGISTRY.get(name)
        same_definition = existing is not None and (existing.__module__, existing.__qualname__) == (
            cls.__module__,
            cls.__qualname__,
        )  # the same class re-defined (module re-run, notebook cell): replace it
        if existing is not None and existing is not cls and not same_definition:
            raise ConfigError(f"simulator name '{name}' is already registered by {existing.__module__}.{existing.__qualname__}")
        _REGISTRY[name] = cls
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Sorted names of every simulator: registered, built-in and entry-point plug-ins (not loaded)."""
    return sorted(set(_REGISTRY) | set(_BUILTIN) | set(_entry_points()))


def get(name: str) -> type[Simulator]:
    """The simulator class registered as ``name``, importing a built-in or plug-in on first use."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
        return _REGISTRY[name]
    entry_point = _entry_points().get(name)
    if entry_point is None:
        raise ConfigError(f"unknown simulator '{name}'; available simulators are: {available()}")
    try:
        cls = entry_point.load()
    except Exception as error:  # a broken plug-in: say which one
        raise ConfigError(
            f"simulator plug-in '{name}' ({entry_point.value}, group {ENTRY_POINT_GROUP}) failed to load: {error}"
        ) from error
    _check_class(name, cls)
    if _REGISTRY.get(name) is not cls:
        register(name)(cls)
    return cls


def make(
    name: str,
    data: Any = None,
    *,
    device: str | torch.device = "cpu",
    components: Mapping[str, Any] | None = None,
    **config: Any,
) -> Simulator:
    """Build simulator ``name`` on ``device`` with keyword options validated into its config class.

    ``data`` is what the simulator is built from (for "logged": an ``InteractionLog`` or
    ``LogSplit``); ``components`` passes ready-made objects to the constructor (for "logged":
    ``preference_model``, ``item_embeddings``). Nested options take mappings, e.g.
    ``make("synthetic", choice={"temperature": 0.5})``.
    """
    from recarena.core.seeding import default_torch_threads

    default_torch_threads()  # recarena's torch thread default, unless the caller configured it
    cls = get(name)
    typed = from_dict(cls.config_class, config, prefix="")
    if isinstance(device, str):
        from recarena.core.seeding import resolve_device

        device = resolve_device(device)
    return cls(typed, data=data, device=device, **dict(components or {}))


def describe(simulator: Simulator | str) -> dict[str, Any]:
    """Plain-data record of a simulator for run directories: name, class, config and data fingerprint.

    Given a name instead of a built simulator, the record holds that simulator's default config.
    """
    if isinstance(simulator, str):
        cls = get(simulator)
        return {"name": simulator, "class": f"{cls.__module__}:{cls.__qualname__}", "config": to_dict(cls.config_class())}
    cls = type(simulator)
    record: dict[str, Any] = {
        "name": getattr(simulator, "name", "") or cls.__name__,
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "config": to_dict(getattr(simulator, "config", None)),
        "n_items": int(simulator.n_items),
    }
    fingerprint = getattr(simulator, "data_fingerprint", None)
    if fingerprint:
        record["data_fingerprint"] = fingerprint
    return record


def config_from_record(record: Mapping[str, Any]) -> Any:
    """The typed config of a :func:`describe` record (to rebuild the same simulator)."""
    cls = get(record["name"])
    return from_dict(cls.config_class, record.get("config") or {})
