"""The formats :func:`~recarena.data.logs.load_logs` reads: a registry of readers.

A reader takes the path it was given (a file or a folder), the :class:`ReadOptions` and the
:class:`~recarena.data.tables.Problems` collector, and returns the :class:`Sources` it found: the
events table, and the item catalogue and user table where there are such files.
``register_format(name, reader)`` adds a format. The MovieLens variants (and RecBole's atomic
files) are rows of one table, :data:`MOVIELENS`, read by one reader; generic CSV and Parquet logs
take a column mapping.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recarena.core.errors import ConfigError, DataFormatError
from recarena.data.interactions import ItemMetadata
from recarena.data.tables import FileSpec, Problems, Table, drop_repeated, read_parquet, read_text

# fmt: off
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
"""The 19 genre flags of ML-100K ``u.item``, in column order (as listed in ``u.genre``)."""

_EVENTS = ("user", "item", "rating", "timestamp")
_USERS = ("user", "age", "gender", "occupation")
MOVIELENS: dict[str, tuple[str, dict[str, FileSpec]]] = {
    # format: (default dataset name, {what the file holds: FileSpec(file, separator, fields, their roles, ...)})
    "ml-100k-raw": ("ml-100k", {
        "events": FileSpec("u.data", "\t", ("user id", "item id", "rating", "timestamp"), _EVENTS),
        "items": FileSpec("u.item", "|", ("movie id", "movie title", "release date", "video release date", "IMDb URL",
                                          *ML100K_GENRES),
                          ("item", "title", "date", None, None, *(f"flag:{genre}" for genre in ML100K_GENRES)),
                          latin1_fallback=True),
        "users": FileSpec("u.user", "|", ("user id", "age", "gender", "occupation", "zip code"), _USERS,
                          optional_file=True),
    }),
    "ml-1m-raw": ("ml-1m", {
        "events": FileSpec("ratings.dat", "::", ("UserID", "MovieID", "Rating", "Timestamp"), _EVENTS),
        "items": FileSpec("movies.dat", "::", ("MovieID", "Title", "Genres"), ("item", "title", "genres"),
                          latin1_fallback=True),
        "users": FileSpec("users.dat", "::", ("UserID", "Gender", "Age", "Occupation", "Zip-code"),
                          ("user", "gender", "age", "occupation"), optional_file=True),
    }),
    # Files with a header line: the fields are the column names to look for.
    "ml-latest": ("ml-latest", {
        "events": FileSpec("ratings.csv", ",", ("userId", "movieId", "rating", "timestamp"), _EVENTS,
                           header=True, quoted=True),
        "items": FileSpec("movies.csv", ",", ("movieId", "title", "genres"), ("item", "title", "genres"),
                          header=True, quoted=True),
    }),
    # NAME.inter, NAME.item, NAME.user; header names like "user_id:token"; the dataset is NAME.
    "recbole": ("", {
        "events": FileSpec("{stem}.inter", "\t", ("user_id", "item_id", "rating", "timestamp"), _EVENTS,
                           header=True, typed_header=True, optional=frozenset({"rating"})),
        "items": FileSpec("{stem}.item", "\t", ("item_id", ("movie_title", "title"), ("release_year", "year"),
                                                ("class", "genre", "genres")),
                          ("item", "title", "year", "genres"), header=True, typed_header=True,
                          optional=frozenset({"title", "year", "genres"}), genre_sep=None, optional_file=True),
        "users": FileSpec("{stem}.user", "\t", ("user_id", "age", "gender", "occupation"), _USERS,
                          header=True, typed_header=True, optional=frozenset(_USERS[1:]), optional_file=True),
    }),
}
"""The files of each MovieLens-style format and how to read each one."""
# fmt: on

EVENT_ROLES = ("user", "item", "timestamp", "rating")
ITEM_ROLES = ("item", "title", "year", "genres", "text")
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class ReadOptions:
    """The reading options of :func:`~recarena.data.logs.load_logs` (see there)."""

    columns: Mapping[str, str] | None = None
    item_file: Path | None = None
    item_columns: Mapping[str, str | Sequence[str]] | None = None
    delimiter: str | None = None
    genre_separator: str = "|"
    encoding: str | None = None
    item_delimiter: str | None = None
    timestamp_format: str | None = None


@dataclass
class Items:
    """The item catalogue from an item file, in file order."""

    path: Path
    raw_id: np.ndarray
    metadata: ItemMetadata


@dataclass
class Sources:
    """What a format reader found: the events, and the optional item catalogue and user table."""

    name: str
    events: Table
    items: Items | None = None
    users: Table | None = None
    default_duplicate_key: str = "user-item"


Reader = Callable[[Path, ReadOptions, Problems], Sources]
READERS: dict[str, Reader] = {}


def register_format(name: str, reader: Reader) -> Reader:
    """Make ``load_logs(..., format=name)`` read with ``reader`` (replacing any reader of that name)."""
    READERS[name] = reader
    return reader


def make_items(table: Table, genre_sep: str | None, problems: Problems) -> Items:
    """The catalogue of an item table; a repeated item id is a bad row.

    Genres come from "flag:<genre>" columns, or a "genres" field split on ``genre_sep`` (None:
    whitespace). A title loses a trailing "(YYYY)", which gives the year when neither a "year"
    field nor a "date" field (ending in the year, as "01-Jan-1995") does; years that do not parse are 0.
    """
    table = drop_repeated(table, "item", problems)
    columns, n = table.columns, len(table)
    if flags := [role for role in columns if role.startswith("flag:")]:
        on = np.stack([columns[flag] != 0 for flag in flags], axis=1)
        genres = [tuple(flag[5:] for flag, is_on in zip(flags, row, strict=True) if is_on) for row in on]
    elif "genres" in columns:
        parts = ([p.strip() for p in value.split(genre_sep)] for value in columns["genres"])
        genres = [tuple(p for p in ps if p and p != "(no genres listed)") for ps in parts]
    else:
        genres = [()] * n
    years = [0] * n
    for role, text in (("year", lambda v: v), ("date", lambda v: v[-4:])):
        if role in columns:
            years = [_year(text(value)) for value in columns[role]]
    titles = []
    for row, title in enumerate(columns.get("title", np.asarray(columns["item"], dtype=object))):
        if match := _TITLE_YEAR.match(title):
            title, years[row] = match.group(1), years[row] or int(match.group(2))
        titles.append(title.strip())
    parts = [columns[role] for role in columns if role == "text" or role.startswith("text:")]
    text = [
        ". ".join(dict.fromkeys(p.strip() for p in row if p.strip() and p.strip() != title))
        for title, *row in zip(titles, *parts, strict=True)
    ] if parts else [""] * n
    metadata = ItemMetadata(titles, np.array(years, dtype=np.int32), genres, text)
    return Items(table.path, np.asarray(columns["item"], dtype=object), metadata)


def _year(value: str) -> int:
    try:
        return int(float(value))
    except (ValueError, OverflowError):
        return 0


def _read_movielens(format: str) -> Reader:
    """The reader of a :data:`MOVIELENS` format: ``path`` is its folder or its events file."""
    default_name, specs = MOVIELENS[format]

    def reader(path: Path, options: ReadOptions, problems: Problems) -> Sources:
        if format == "ml-latest" and options.columns is not None:  # ratings.csv as a generic CSV log
            return READERS["csv"](path if path.is_file() else path / "ratings.csv", options, problems)
        folder = path if path.is_dir() else path.parent
        stem, name = "", folder.name or default_name
        if "{stem}" in specs["events"].file:  # one NAME.inter names the other files and the dataset
            inters = [path] if path.is_file() else sorted(folder.glob(specs["events"].file.format(stem="*")))
            if len(inters) != 1:
                raise DataFormatError(
                    folder, f"expected exactly one RecBole .inter file, found {len(inters)}"
                )
            stem = name = inters[0].stem
        found: dict[str, Table | Items] = {}
        for kind, spec in specs.items():
            file = folder / spec.file.format(stem=stem)
            if not spec.optional_file or file.exists():
                timestamps = options.timestamp_format if kind == "events" else None
                table = read_text(file, spec, problems, options.encoding, timestamps)
                found[kind] = make_items(table, spec.genre_sep, problems) if kind == "items" else table
        return Sources(name, found["events"], found.get("items"), found.get("users"))

    return reader


def _check_mapping(
    name: str, mapping: Mapping[str, str | Sequence[str]], valid: tuple[str, ...], required: tuple[str, ...],
    lists: tuple[str, ...] = (),
) -> None:
    if unknown := sorted(set(mapping) - set(valid)):
        raise ConfigError(f"{name} has unknown key(s) {unknown}; valid keys are {list(valid)}")
    if missing := [key for key in required if key not in mapping]:
        raise ConfigError(f"{name} is missing the key(s) {missing}; it maps {list(valid)} to column names")
    for key, value in mapping.items():
        several = key in lists and isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)
        if not isinstance(value, str) and not several:
            kind = "a column name or a list of column names" if key in lists else "a column name"
            raise ConfigError(f"{name}.{key}: expected {kind}, got {value!r}")


def _roles(mapping: Mapping[str, str | Sequence[str]]) -> dict[str, str]:
    """role -> column; a list of columns for one role (the item text) becomes ``role``, ``role:1``, ..."""
    roles: dict[str, str] = {}
    for role, value in mapping.items():
        for k, column in enumerate([value] if isinstance(value, str) else value):
            roles[role if k == 0 else f"{role}:{k}"] = column
    return roles


def _read_mapped(
    path: Path, parquet: bool, roles: Mapping[str, str], delimiter: str | None, options: ReadOptions,
    problems: Problems, timestamp_format: str | None = None,
):
    """A CSV/TSV or Parquet file whose columns ``roles`` maps; every mapped column must exist."""
    if parquet:
        return read_parquet(path, roles, problems, timestamp_format)
    spec = FileSpec(path.name, _separator(path, delimiter), tuple(roles.values()), tuple(roles), header=True, quoted=True)
    return read_text(path, spec, problems, options.encoding, timestamp_format)


def _separator(path: Path, delimiter: str | None) -> str:
    return delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")


def _header(path: Path, delimiter: str | None, encoding: str | None) -> list[str]:
    """The column names of a CSV/TSV file's first line, or of a Parquet file's schema ([] if unreadable)."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return list(pq.read_schema(path).names)
        with path.open(encoding=encoding or "utf-8-sig", newline="") as file:
            return [name.strip() for name in next(csv.reader(file, delimiter=_separator(path, delimiter)), [])]
    except (OSError, UnicodeDecodeError, ValueError, csv.Error):
        return []


TITLE_COLUMNS = ("title", "name")
"""Item-file columns taken as the title when ``item_columns`` names none."""


def item_file_columns(
    path: Path, given: Mapping[str, str | Sequence[str]] | None, item_column: str, delimiter: str | None,
    encoding: str | None,
) -> dict[str, str | Sequence[str]]:
    """The item file's mapping: ``given`` (default: the events' item column), plus, where it names no
    title, the first column called "title" or "name" (any case) as the title, so that the item's
    text says what the item is rather than its id."""
    columns = dict(given) if given is not None else {"item": item_column}
    if "title" not in columns:
        lower = {name.lower(): name for name in reversed(_header(path, delimiter, encoding))}
        found = [lower[name] for name in TITLE_COLUMNS if name in lower and lower[name] != columns["item"]]
        if found:
            columns["title"] = found[0]
    return columns


def _read_tabular(format: str) -> Reader:
    """The reader of a CSV/TSV or Parquet log with a column mapping, and an optional item file."""

    def reader(path: Path, options: ReadOptions, problems: Problems) -> Sources:
        if options.columns is None:
            raise ConfigError(
                f"format {format!r} needs columns={{'user': ..., 'item': ..., 'timestamp': ..., 'rating': ...}}"
            )
        _check_mapping("columns", options.columns, EVENT_ROLES, ("user", "item", "timestamp"))
        if options.item_columns is not None:
            _check_mapping("item_columns", options.item_columns, ITEM_ROLES, ("item",), lists=("text",))
        events = _read_mapped(
            path, format == "parquet", options.columns, options.delimiter, options, problems, options.timestamp_format
        )
        items = None
        if options.item_file is not None:
            item_columns = item_file_columns(
                options.item_file, options.item_columns, options.columns["item"], options.item_delimiter,
                options.encoding,
            )
            parquet = options.item_file.suffix.lower() in (".parquet", ".pq")
            table = _read_mapped(options.item_file, parquet, _roles(item_columns), options.item_delimiter, options, problems)
            items = make_items(table, options.genre_separator, problems)
        return Sources(path.stem, events, items, None, "user-item-time")

    return reader


for _format in MOVIELENS:
    register_format(_format, _read_movielens(_format))
register_format("csv", _read_tabular("csv"))
register_format("parquet", _read_tabular("parquet"))
