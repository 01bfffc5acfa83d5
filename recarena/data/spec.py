"""A data spec: everything :func:`~recarena.data.logs.load_logs` needs to read one log, as one typed value.

The same spec is accepted everywhere a log is named: the ``data:`` section of a run config,
``train.py --data``, ``evaluate.py --data``, ``recarena fidelity --data`` and
``gymnasium.make(..., data=...)``. It is given as

* a string: a bundled name (``"ml-100k"``, ``"ml-1m"``), a path to a log file or folder whose
  format is told from its name (MovieLens, RecBole), or the path of a YAML or JSON *spec file*
  (``.yaml``, ``.yml``, ``.json``) holding the mapping below, whose relative paths are relative to
  the spec file's folder;
* a mapping of :class:`DataSpec`'s fields, e.g.::

      {"path": "events.csv", "columns": {"user": "uid", "item": "sku", "timestamp": "ts"},
       "item_file": "items.csv", "item_columns": {"item": "sku", "text": ["name", "description"]}}

  (``source`` is accepted for ``path``: the key run configs used before);
* a :class:`DataSpec`.

:func:`data_spec` validates any of these into a :class:`DataSpec` (unknown keys are listed with the
valid ones, each problem names its key); :meth:`DataSpec.load` reads the log with ``load_logs``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from recarena.core.config import config_dataclass, from_dict, to_dict
from recarena.core.errors import ConfigError
from recarena.data.interactions import InteractionLog, LogSplit
from recarena.data.logs import BUNDLED, check_rating_scale, check_timestamp_format, load_logs
from recarena.data.splits import split_log

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
"""A string path with one of these suffixes names a spec file, not a log."""


@config_dataclass
class DataSpec:
    """One log and how to read it (the keyword arguments of :func:`recarena.data.load_logs`)."""

    path: str | None = None
    """A bundled name (``ml-100k``, ``ml-1m``) or a log file or folder; None: no data (the
    ``synthetic`` simulator)."""
    format: str | None = None
    """A registered format (``csv``, ``parquet``, ``ml-100k-raw``, ``ml-1m-raw``, ``ml-latest``,
    ``recbole``, ...); None: told from the file names."""
    columns: dict[str, str] | None = None
    """CSV/Parquet: the events' columns, ``{user, item, timestamp[, rating]}`` -> column name;
    without ``rating`` the log is implicit feedback (every event a click)."""
    rating_scale: tuple[float, float] | Literal["none"] | None = None
    """None: ratings as they are (1-5); ``[low, high]``: mapped linearly onto 1-5; ``none``: the
    rating column is ignored (implicit feedback)."""
    timestamp_format: str | None = None
    """None: detected (numbers are seconds since the epoch, text ISO 8601 dates); ``seconds``,
    ``milliseconds``, ``iso`` or a strptime pattern such as ``%d/%m/%Y %H:%M``."""
    item_file: str | None = None
    """CSV/Parquet: an item file (the catalogue and the item text)."""
    item_columns: dict[str, str | list[str]] | None = None
    """Its columns, ``{item, title, year, genres, text}`` -> column name (``text``: one or a list
    of columns); default: the events' item column and a ``title`` or ``name`` column."""
    delimiter: str | None = None
    """The events file's separator (default ',' or a tab for .tsv)."""
    item_delimiter: str | None = None
    """The item file's separator (default ',' or a tab for .tsv)."""
    genre_separator: str = "|"
    encoding: str | None = None
    on_bad_rows: Literal["error", "skip"] = "error"
    deduplicate: Literal["error", "keep-first", "keep-last"] = "error"
    duplicate_key: Literal["user-item", "user-item-time"] | None = None
    min_user_interactions: Annotated[int, Field(ge=0)] = 0
    min_item_interactions: Annotated[int, Field(ge=0)] = 0
    split: Literal["leave-last-out", "temporal"] = "leave-last-out"
    """Which split's training part the logged users (and the models fitted for them) come from:
    ``leave-last-out`` (each user's last event is test, the second-last validation) or ``temporal``
    (one global time cut-off: the last 10% of events test, the 10% before validation). A run trained
    on one is scored by evaluate.py only on that split's held-out events (docs/evaluation.md)."""

    @model_validator(mode="before")
    @classmethod
    def _source_is_path(cls, data: Any) -> Any:
        """``source`` (the key run configs used before) is accepted for ``path``."""
        if isinstance(data, Mapping) and "source" in data:
            data = dict(data)
            if "path" in data and data["path"] != data["source"]:
                raise ValueError(
                    f"path {data['path']!r} and source {data['source']!r} both name the log; 'source' is the older "
                    "name of 'path': give one (e.g. --set data.path=...)"
                )
            data.pop("path", None)
            data["path"] = data.pop("source")
        return data

    @field_validator("rating_scale", mode="before")
    @classmethod
    def _rating_scale(cls, value: Any) -> Any:
        return check_rating_scale(value)

    @field_validator("timestamp_format")
    @classmethod
    def _timestamp_format(cls, value: str | None) -> str | None:
        return check_timestamp_format(value)

    @property
    def name(self) -> str:
        """A short name for the data (cache folders, run names): the bundled name or the file's stem."""
        if self.path is None:
            return "synthetic"
        return self.path if self.path in BUNDLED else (Path(self.path).stem or "data")

    def is_plain(self) -> bool:
        """Whether the spec is only a path (every other field at its default)."""
        return all(getattr(self, f.name) == f.default for f in fields(self) if f.name != "path")

    def to_value(self) -> str | dict[str, Any] | None:
        """Plain data that :func:`data_spec` turns back into this spec: the path alone when nothing else
        is set (``"ml-1m"``), else the mapping of the fields that differ from their defaults."""
        if self.is_plain():
            return self.path
        return {f.name: to_dict(getattr(self, f.name)) for f in fields(self)
                if f.name == "path" or getattr(self, f.name) != f.default}

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of ``load_logs(self.path, **options)``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("path", "split")}

    def load(self, return_report: bool = False) -> InteractionLog | Any:
        """The log, read by :func:`recarena.data.load_logs`."""
        if self.path is None:
            raise ConfigError("the data spec names no log (path is null); give a bundled name or a file")
        return load_logs(self.path, return_report=return_report, **self.load_options())

    def load_split(self) -> LogSplit:
        """The log split by :attr:`split` (``recarena.data.splits.split_log``)."""
        return split_log(self.load(), self.split)

    def files(self) -> list[Path]:
        """The files the log is read from (for change detection): the log's files and the item file."""
        found: list[Path] = []
        for entry in (self.path, self.item_file):
            if entry is None or entry in BUNDLED:
                continue
            path = Path(entry).expanduser()
            if path.is_dir():
                found += sorted(p for p in path.rglob("*") if p.is_file())
            elif path.exists():
                found.append(path)
        return found

    def key(self) -> str:
        """A string that changes when the spec or the content of its files (size, mtime) does."""
        files = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files()]
        value = self.to_value()
        if isinstance(value, str) and value not in BUNDLED:
            value = str(Path(value).expanduser().resolve())
        return json.dumps([value, files], sort_keys=True, default=str)


def _read_spec_file(path: Path, prefix: str) -> dict[str, Any]:
    """The mapping of a YAML/JSON spec file, its relative paths made relative to its folder."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"{prefix.rstrip('.') or 'data'}: cannot read the data spec file {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a data spec file holds a mapping (path, columns, item_file, ...); got {data!r}")
    data = dict(data)
    for key in ("path", "source", "item_file"):
        value = data.get(key)
        if isinstance(value, str) and value not in BUNDLED and not Path(value).expanduser().is_absolute():
            data[key] = os.path.normpath(path.parent / value)
    return data


def is_spec_file(value: str) -> bool:
    """Whether the string names a YAML/JSON data spec file (by its suffix)."""
    return value not in BUNDLED and Path(value).suffix.lower() in SPEC_SUFFIXES


def data_spec(value: Any, prefix: str = "data.") -> DataSpec:
    """Validate a data spec given as a string, a mapping or a :class:`DataSpec` (see the module docstring).

    Errors are :class:`ConfigError` naming each bad key after ``prefix`` (``"data."`` for a run
    config, ``"--data "`` for a command line)."""
    if isinstance(value, DataSpec):
        return value
    if value is None:
        return DataSpec()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        if is_spec_file(value):
            path = Path(value).expanduser()
            if not path.is_file():
                raise ConfigError(f"{prefix.rstrip('.') or 'data'}: data spec file not found: {value}")
            try:
                return from_dict(DataSpec, _read_spec_file(path, prefix))
            except ConfigError as error:
                raise ConfigError(f"{value}: {error}") from None
        return DataSpec(path=value)
    if isinstance(value, Mapping):
        return from_dict(DataSpec, dict(value), prefix=prefix)
    raise ConfigError(
        f"{prefix.rstrip('.') or 'data'}: expected a bundled name, a path, a spec file or a mapping "
        f"(path, columns, ...), got {type(value).__name__}"
    )


def data_argument(text: str) -> str | dict[str, Any]:
    """A command line's ``--data`` value: a name, path or spec file as it is, or an inline YAML/JSON
    mapping (``'{path: events.csv, columns: {user: uid, item: sku, timestamp: ts}}'``)."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--data: not a valid YAML/JSON mapping: {error}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--data: expected a mapping, got {value!r}")
    return value


def load_data(value: Any, return_report: bool = False) -> InteractionLog | Any:
    """``data_spec(value).load()``: the log a data spec (string, mapping or :class:`DataSpec`) names."""
    return data_spec(value).load(return_report=return_report)
