"""Typed, validated configuration: pydantic dataclasses (:func:`config_dataclass`) built from plain data.

Fields carry their ranges (``Annotated[int, Field(ge=1)]``); :func:`from_dict` validates YAML/JSON data
with pydantic and reports each problem as a :class:`ConfigError` naming the dotted key (unknown keys
list the valid ones). Scalars are strict (``"10"`` is no integer), but an int is a fine float and a
whole float (``1e5``) a fine int. :func:`to_dict` gives plain data back; :func:`apply_overrides`
applies ``--set agent.lr=3e-4`` strings.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
import warnings
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import pydantic.dataclasses
import yaml
from pydantic_core import SchemaValidator, core_schema

from recarena.core.errors import ConfigError

T = TypeVar("T")

INT64_MAX = 2**63 - 1
"""The largest integer a config accepts where a field sets no bound of its own (torch and NumPy hold 64 bits)."""

CONFIG = pydantic.ConfigDict(extra="forbid")
"""Settings of every config class: lax, so that a section takes a mapping (:func:`_tighten` does the rest)."""


def _tighten(schema: Any) -> Any:
    """A pydantic core schema with strict scalars, whole floats taken as ints and no unknown keys."""
    if isinstance(schema, list):
        return [_tighten(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {k: v if k in ("metadata", "serialization", "default") else _tighten(v) for k, v in schema.items()}
    kind = schema.get("type")
    if kind == "int" and not schema.get("strict"):
        whole = lambda v: int(v) if isinstance(v, float) and v.is_integer() else v  # noqa: E731
        bounded = {**schema, "strict": True}
        # Every integer is a 64-bit one downstream (torch, NumPy): one past it is refused here, as given.
        if "le" not in schema and "lt" not in schema:
            bounded["lt"] = INT64_MAX + 1
        if "ge" not in schema and "gt" not in schema:
            bounded["ge"] = -INT64_MAX - 1
        return core_schema.no_info_before_validator_function(whole, bounded)
    if kind in ("float", "bool", "str"):
        schema["strict"] = True
    if kind == "dataclass-args":
        schema["extra_behavior"] = "forbid"  # plain dataclasses too (plug-ins' configs)
    return schema


def config_dataclass(cls: type[T]) -> type[T]:
    """Class decorator: a pydantic dataclass with :data:`CONFIG` and strict scalars, whose
    constructor (and ``dataclasses.replace``) raises :class:`ConfigError`."""
    cls.__get_pydantic_core_schema__ = classmethod(lambda _, source, handler: _tighten(handler(source)))  # type: ignore[attr-defined]
    cls = pydantic.dataclasses.dataclass(cls, config=CONFIG)
    validated_init = cls.__init__

    @functools.wraps(validated_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validated_init(self, *args, **kwargs)
        except pydantic.ValidationError as error:
            raise _config_error(error, type(self), "") from error

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


@functools.cache
def _validator(cls: type) -> SchemaValidator:
    return SchemaValidator(_tighten(pydantic.TypeAdapter(cls).core_schema))


def _key(prefix: str, loc: tuple[Any, ...]) -> str:
    for part in loc:
        prefix += f"[{part}]" if isinstance(part, int) else f"{'.' if prefix[-1:] not in ('', '.') else ''}{part}"
    return prefix


def _valid_keys(cls: Any, path: tuple[Any, ...]) -> list[str] | None:
    """The fields of the dataclass section at ``path`` under ``cls``."""
    for part in path:
        hint = typing.get_type_hints(cls).get(part) if dataclasses.is_dataclass(cls) else None
        cls = next((t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)), None)
    return [f.name for f in dataclasses.fields(cls)] if cls is not None else None


RENAMED_KEYS: dict[str, tuple[str, str]] = {
    "num_steps": ("n_steps", ""),
    "update_epochs": ("n_epochs", ""),
    "clip_coef": ("clip_range", ""),
    "normalize_advantages": ("normalize_advantage", ""),
    "exploration_initial": ("exploration_initial_eps", ""),
    "exploration_final": ("exploration_final_eps", ""),
    "epsilon_start": ("exploration_initial_eps", ""),
    "epsilon_end": ("exploration_final_eps", ""),
    "epsilon_decay_steps": ("exploration_steps", ""),
    "exploration_fraction": ("exploration_steps", "env steps, no longer a fraction of the run's total_steps"),
    "mask_consumed": ("mask", "true -> env, false -> none"),
    "mask_actions": ("mask", "true -> env, false -> none"),
    "log_interval": ("log_every", "set train.log_every (outside train.py, the agent's log_every argument)"),
}
"""Config keys renamed when the agent families took one vocabulary (docs/agents.md, "Config
vocabulary"): old key -> (new key, how the value changes). An unknown old key is reported with its
new name instead of the list of valid keys, where the new name is valid in that section (or, like
``log_interval``, now lives outside it: the hint says where)."""

_MOVED_OUT = {"log_interval"}
"""Renamed keys whose new home is outside the section (the hint says where)."""


class OldConfigWarning(UserWarning):
    """A saved run or agent was written with config names from before the rename (:data:`RENAMED_KEYS`);
    it was read with the new names (:func:`migrate_renamed_keys`)."""


def migrate_renamed_keys(config: dict[str, Any], config_class: type,
                         total_steps: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """A saved agent config section (``config.yaml``'s ``agent.config``, ``agent.json``'s ``config``)
    written before the rename, with each old key of :data:`RENAMED_KEYS` read as its new one, and a
    note per key ("num_steps as n_steps"). Only for artefacts an older recarena wrote: a new config
    file with an old name is still refused (:func:`from_dict`).

    ``config_class`` is the agent's config dataclass: an old key is migrated only where it is none of
    its fields and its new name is one (or, ``log_interval``, has moved out: it is dropped). Values follow the hints:
    ``mask_consumed``/``mask_actions`` true -> ``env``, false -> ``none``; SB3 DQN's
    ``exploration_fraction`` -> ``exploration_steps`` = round(fraction x ``total_steps``), which gives
    SB3 the same fraction back whenever that product is whole (without ``total_steps`` it is dropped:
    only training reads it). A key whose new name is also present is left for validation to refuse."""
    migrated, notes = dict(config), []
    valid = {f.name for f in dataclasses.fields(config_class)}
    for old, (new, _) in RENAMED_KEYS.items():
        if old not in migrated or old in valid or (new in migrated and old not in _MOVED_OUT):
            continue
        value = migrated.pop(old)
        if old in _MOVED_OUT:
            notes.append(f"{old} dropped (the cadence is train.log_every)")
        elif old in ("mask_consumed", "mask_actions") and new in valid and isinstance(value, bool):
            migrated[new] = "env" if value else "none"
            notes.append(f"{old}: {str(value).lower()} as {new}: {migrated[new]}")
        elif old == "exploration_fraction" and new in valid and isinstance(value, (int, float)):
            if total_steps is None:
                notes.append(f"{old} dropped ({new} takes its default: the run's total steps are not known here, "
                             f"and only training reads it)")
            else:
                migrated[new] = max(1, round(value * total_steps))
                notes.append(f"{old} {value} as {new} {migrated[new]} ({value} x total_steps {total_steps})")
        elif new in valid:
            migrated[new] = value
            notes.append(f"{old} as {new}")
        else:
            migrated[old] = value  # not a rename in this section: validation reports it
    return migrated, notes


def warn_old_config(where: str | Path, notes: list[str], prefix: str = "") -> None:
    """The one :class:`OldConfigWarning` for a saved run or agent whose old keys were read as new ones."""
    if notes:
        warnings.warn(f"{where}: config written by an older recarena; read {', '.join(prefix + n for n in notes)} "
                      f"(new config files must use the new names: docs/agents.md, 'Config vocabulary')",
                      OldConfigWarning, stacklevel=3)


def _renamed(key: str, old: str, valid: list[str] | None) -> str | None:
    """The one-line error for the old name ``old`` (at dotted ``key``), or None if it is not one here."""
    if old not in RENAMED_KEYS:
        return None
    new, hint = RENAMED_KEYS[old]
    if old in _MOVED_OUT:
        return f"{key} was renamed {new}: {hint}"
    if valid is None or new not in valid:
        return None
    return f"{key} was renamed {new}" + (f" ({hint})" if hint else "")


_EXPECTED = {"int": "an integer", "bool": "true or false", "float": "a number", "string": "a string",
             "list": "a list", "tuple": "a list", "dict": "a mapping", "dataclass": "a mapping"}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _config_error(error: pydantic.ValidationError, cls: type, prefix: str) -> ConfigError:
    """One :class:`ConfigError` for every problem pydantic found, each naming its dotted key."""
    unknown: dict[tuple[Any, ...], list[str]] = {}
    messages: list[str] = []
    for problem in error.errors(include_url=False):
        loc, kind, value, ctx = problem["loc"], problem["type"], problem.get("input"), problem.get("ctx", {})
        key, base = _key(prefix, loc), kind.split("_")[0]
        if kind in ("unexpected_keyword_argument", "extra_forbidden"):
            renamed = _renamed(key, str(loc[-1]), _valid_keys(cls, loc[:-1]))
            if renamed is not None:
                messages.append(renamed)
            else:
                unknown.setdefault(loc[:-1], []).append(key)
        elif kind in ("missing", "missing_argument"):
            messages.append(f"missing required config key '{key}'")
        elif kind == "literal_error":
            messages.append(f"{key}: expected one of [{ctx['expected'].replace(' or ', ', ')}], got {value!r}")
        elif kind in _BOUNDS:
            messages.append(f"{key}: must be {_BOUNDS[kind]} {next(iter(ctx.values()))}, got {value!r}")
        elif base in _EXPECTED and kind.endswith(("_type", "_parsing", "_from_float")):
            keys = f" of {_valid_keys(cls, loc)}" if base == "dataclass" else ""
            messages.append(f"{key}: expected {_EXPECTED[base]}{keys}, got {value!r}")
        else:  # a validator's own ValueError (a check across fields names their section)
            messages.append(f"{key.rstrip('.') or 'config'}: {ctx.get('error', problem['msg'])}")
    listed = [f"unknown config key(s) {keys}; valid keys under '{_key(prefix, path).rstrip('.') or '<top>'}' "
              f"are: {_valid_keys(cls, path)}" for path, keys in unknown.items()]
    return ConfigError("; ".join(listed + messages))


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build the dataclass ``cls`` (nested sections from nested mappings) from ``data`` with pydantic;
    a :class:`ConfigError` names each bad key after ``prefix`` (e.g. ``"env."``) and lists valid keys."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    try:
        return _validator(cls).validate_python({} if data is None else data)
    except pydantic.ValidationError as error:
        raise _config_error(error, cls, prefix) from error


def to_dict(config: Any) -> Any:
    """Plain data (dicts, lists, scalars) for a config dataclass, ready for JSON or YAML."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if data is None:
        raise ConfigError(f"{path}: the config file is empty (expected a mapping with data, simulator, env, agent "
                          f"and train sections; see configs/)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], value), parsing value as YAML (``3e-4`` -> float)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (e.g. agent.lr=3e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 3e-4 as a string (no dot); accept it as the float it obviously is.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key=value`` override applied (nested by dots)."""
    result = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return result
