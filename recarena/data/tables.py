"""Read one delimited text file or one Parquet file into a checked :class:`Table`.

pyarrow's CSV reader parses a text file in one pass (every value as text, ids dictionary-encoded);
the columns are then checked vectorised: numbers by a cast, ids for emptiness per distinct value.
A row's 1-based line is its record number when the file has no blank lines and no line breaks in
quoted values, else it comes from a map of the file's lines; rows with the wrong number of fields,
which pyarrow hands over by record number, are placed the same way. So every problem names the
file, the line and what was expected, without a second, line-by-line parser.
"""

from __future__ import annotations

import codecs
import csv
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from recarena.core.errors import ConfigError, DataFormatError

ID_ROLES = ("user", "item")  # text that must not be empty
NUMBER_ROLES = ("rating", "age")  # finite numbers, as are "timestamp" (int64 seconds) and "flag:..." roles
SEPARATOR_NAMES = {"\t": "a tab", "::": "'::'", ",": "','", "|": "'|'", ";": "';'"}
_NON_SPACE = re.compile(rb"\S")
_LONE_CR = re.compile(rb"\r(?!\n)")


@dataclass(frozen=True)
class FileSpec:
    """How to read one delimited text file.

    ``fields`` names the file's fields in order or, with ``header``, the columns to find by name
    in its first line (a tuple of alternative names where they vary); ``roles`` gives each its role
    ("user", "item", "rating", "timestamp", "title", "year", "date", "genres", "text", "age",
    "gender", "occupation" or "flag:<genre>"; None: not read). A header must name every column
    whose role is not ``optional``.
    """

    file: str
    sep: str
    fields: tuple[str | tuple[str, ...], ...]
    roles: tuple[str | None, ...]
    header: bool = False
    quoted: bool = False  # CSV quoting
    typed_header: bool = False  # RecBole header names: "name:type"
    optional: frozenset[str] = frozenset()
    latin1_fallback: bool = False  # read as latin-1 when the file is not UTF-8
    genre_sep: str | None = "|"  # separator of the "genres" field; None: whitespace
    optional_file: bool = False

    @property
    def what(self) -> str:
        names = ", ".join(name if isinstance(name, str) else "/".join(name) for name in self.fields)
        layout = "a header with the columns" if self.header else f"{len(self.fields)} fields"
        return f"{layout} ({names}) separated by {SEPARATOR_NAMES.get(self.sep, repr(self.sep))}"


@dataclass
class Table:
    """Checked rows of one file: a column per role, and the 1-based line (or row) of each row.

    Ids are ``pd.Categorical`` (cheap for a million repeated ids), numbers float64, timestamps
    int64 seconds, other text object arrays of str.
    """

    path: Path
    columns: dict[str, np.ndarray | pd.Categorical]
    line: np.ndarray
    unit: str = "line"

    def __len__(self) -> int:
        return len(self.line)

    def take(self, keep: np.ndarray) -> Table:
        if keep.all():
            return self
        return Table(self.path, {k: v[keep] for k, v in self.columns.items()}, self.line[keep], self.unit)


# ----------------------------------------------------------------------------- bad rows


def error_at(path: Path, line: int, message: str, unit: str = "line") -> DataFormatError:
    """The error for one row: text files name the line, Parquet files the row."""
    if unit == "line":
        return DataFormatError(path, message, line)
    return DataFormatError(path, f"{unit} {line}: {message}")


Issue = tuple[np.ndarray, str, Callable[[int], str]]
"""Bad rows of one kind: their lines (ascending), the reason, and the message of the k-th."""


class Problems:
    """Raises at the first bad row (``skip=False``) or counts bad rows per file and reason."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.skipped: dict[str, int] = {}  # "file: reason" -> rows
        self.examples: list[str] = []  # the first few messages
        self.skipped_by_path: dict[str, int] = {}

    def flag(self, path: Path, issues: list[Issue], unit: str = "line") -> None:
        """Raise at the earliest bad row of ``issues``, or count them all (and keep a few examples)."""
        issues = sorted((issue for issue in issues if len(issue[0])), key=lambda issue: int(issue[0][0]))
        earliest = sorted(
            (int(ls[k]), n, k) for n, (ls, _, _) in enumerate(issues) for k in range(min(10, len(ls)))
        )
        if earliest and not self.skip:
            line, n, k = earliest[0]
            raise error_at(path, line, issues[n][2](k), unit)
        for lines, reason, _ in issues:
            key = f"{path.name}: {reason}"
            self.skipped[key] = self.skipped.get(key, 0) + len(lines)
            self.skipped_by_path[str(path)] = self.skipped_by_path.get(str(path), 0) + len(lines)
        for line, n, k in earliest[: max(0, 10 - len(self.examples))]:
            self.examples.append(f"{path}, {unit} {line}: {issues[n][2](k)}")

    def rows(self, table: Table, bad: np.ndarray, reason: str, describe: Callable[[int], str]) -> np.ndarray:
        """Flag the rows of ``table`` where ``bad`` (``describe`` takes a row index); the mask to keep."""
        where = np.flatnonzero(bad)
        self.flag(table.path, [(table.line[where], reason, lambda k: describe(int(where[k])))], table.unit)
        return ~np.asarray(bad, dtype=bool)


def drop_repeated(table: Table, role: str, problems: Problems) -> Table:
    """``table`` without the rows whose ``role`` id an earlier row has (bad rows)."""
    raw = np.asarray(table.columns[role], dtype=object)
    first = dict(zip(raw[::-1], table.line[::-1], strict=True))  # id -> its first line
    message = "{} id {!r} is already listed on line {}; expected each {} once"
    describe = lambda i: message.format(role, raw[i], first[raw[i]], role)  # noqa: E731
    return table.take(
        problems.rows(table, pd.Series(raw).duplicated().to_numpy(), f"duplicate {role} id", describe)
    )


# ----------------------------------------------------------------------------- checking values


def _ids(column: pa.ChunkedArray) -> tuple[pd.Categorical, np.ndarray]:
    """Ids as a Categorical with object categories, and where they are missing or blank."""
    if pa.types.is_dictionary(column.type):
        values = column.to_pandas().array
    else:  # Parquet: any type; whole-number floats are integer ids ("7", not "7.0")
        series = column.to_pandas()
        if pd.api.types.is_float_dtype(series) and series.dropna().mod(1).eq(0).all():
            series = series.astype("Int64")
        values = pd.Categorical(series.astype("string").fillna("").to_numpy(dtype=object))
    categories = pd.Index(values.categories.to_numpy(dtype=object), dtype=object)
    values = pd.Categorical.from_codes(values.codes, categories=categories, validate=False)
    blank = np.array([not c.strip() for c in categories] + [True], dtype=bool)  # code -1: missing
    return values, blank[values.codes]


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """float64 values, NaN where a value is missing or not a number (as Python's ``float`` reads it)."""
    try:
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raw = column.to_pandas().to_numpy(dtype=object)
        values = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(
            np.float64, na_value=np.nan, copy=True
        )
        for i in np.flatnonzero(np.isnan(values)):  # the bad values, and oddities like " 5" or "1_000"
            try:
                values[i] = float(raw[i])
            except (TypeError, ValueError):
                pass
        return values


TIMESTAMP_FORMATS = ("seconds", "milliseconds", "iso")
"""Declared timestamp formats besides a ``strptime`` pattern (any text with a ``%``); None detects."""


def _whole_seconds(column: pa.ChunkedArray, per_second: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int64 whole seconds of numbers counting ``1 / per_second`` of a second (rounded down; integers
    exact), where a value is not a number, where it is beyond int64."""
    none = np.zeros(len(column), dtype=bool)
    try:
        values = pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
        if values.dtype == np.int64:  # no missing values
            return values // per_second, none, none
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    numbers = np.floor(_floats(column) / per_second)
    wrong = ~np.isfinite(numbers)
    beyond = ~wrong & ((numbers < -(2.0**63)) | (numbers >= 2.0**63))
    return np.where(wrong | beyond, 0, numbers).astype(np.int64), wrong, beyond


def _dates(column: pa.ChunkedArray, format: str) -> tuple[np.ndarray, np.ndarray]:
    """int64 seconds since the epoch of dates as text (``"iso"``: ISO 8601, else a ``strptime``
    pattern); a date with a UTC offset is converted to UTC, one without is taken as UTC. The second
    array marks values that are not such a date."""
    text = pd.Series(column.to_pandas().astype("string").to_numpy(dtype=object))
    pattern = "ISO8601" if format == "iso" else format
    try:
        parsed = pd.to_datetime(text, format=pattern, errors="coerce", utc=True)
    except ValueError as error:  # a pattern pandas cannot use
        raise ConfigError(f"timestamp_format={format!r} is not a strptime pattern pandas can use ({error})") from None
    wrong = parsed.isna().to_numpy()
    seconds = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[s]").astype(np.int64)
    return np.where(wrong, 0, seconds), wrong


def looks_numeric(column: pa.ChunkedArray) -> bool:
    """Whether the column's first non-blank value is a number (how a timestamp format is detected)."""
    for value in column.slice(0, 1000).to_pylist():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            float(value)
        except (TypeError, ValueError):
            return False
        return True
    return True


def _seconds(
    column: pa.ChunkedArray, format: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """int64 seconds (whole seconds, rounded down), where a value is not a timestamp, where it is
    beyond int64, and what was expected of a value.

    ``format``: None detects it (numbers are seconds since the epoch; text that is not a number is
    an ISO 8601 date, e.g. ``2024-05-01T12:30:00`` or ``2024-05-01``), ``"seconds"``,
    ``"milliseconds"``, ``"iso"``, or a ``strptime`` pattern such as ``"%d/%m/%Y %H:%M"``.
    """
    none = np.zeros(len(column), dtype=bool)
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):  # Parquet datetimes, as wall-clock time
        series = pd.Series(column.to_pandas())
        series = pd.to_datetime(series)
        series = series.dt.tz_localize(None) if series.dt.tz is not None else series
        return series.to_numpy(dtype="datetime64[s]").astype(np.int64), series.isna().to_numpy(), none, "a datetime"
    if format is None:
        numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or looks_numeric(column)
        format = "seconds" if numeric else "iso"
    if format not in ("seconds", "milliseconds"):
        seconds, wrong = _dates(column, format)
        what = "an ISO 8601 date (e.g. 2024-05-01T12:30:00)" if format == "iso" else f"a date like {format!r}"
        return seconds, wrong, none, what
    seconds, wrong, beyond = _whole_seconds(column, 1000 if format == "milliseconds" else 1)
    return seconds, wrong, beyond, f"a number of {format}"


def _describe(message: str, column: pa.ChunkedArray, where: np.ndarray, show: bool, k: int) -> str:
    return f"{message}, found {column[int(where[k])].as_py()!r}" if show else message


def _check(
    path: Path, raw: dict, line: np.ndarray, problems: Problems, issues: list[Issue], unit="line",
    timestamp_format: str | None = None,
) -> Table:
    """Convert and check the column of each role (``raw``: role -> (field name, values)), flag the
    bad rows (and ``issues`` found before), keep the rest. A row is flagged once, for its first bad
    value in role order. ``timestamp_format``: see :func:`_seconds`."""
    bad = np.zeros(len(line), dtype=bool)
    columns: dict[str, np.ndarray | pd.Categorical] = {}
    for role, (name, column) in raw.items():
        number = f"expected a number for '{name}'"
        if role in ID_ROLES:  # checks: (where, reason, message, whether it shows the value)
            columns[role], blank = _ids(column)
            checks = [(blank, "empty field", f"expected a non-empty '{name}'", False)]
        elif role == "timestamp":
            columns[role], wrong, beyond, what = _seconds(column, timestamp_format)
            beyond_text = f"expected a timestamp in seconds that fits in 64 bits for '{name}'"
            reason = "not a number" if what.startswith("a number") else "not a date"
            checks = [
                (wrong, reason, f"expected {what} for '{name}'" if reason == "not a date" else number, True),
                (beyond, "timestamp out of range", beyond_text, True),
            ]
        elif role in NUMBER_ROLES or role.startswith("flag:"):
            columns[role] = _floats(column)
            checks = [(~np.isfinite(columns[role]), "not a number", number, True)]
        else:
            columns[role] = column.to_pandas().astype("string").fillna("").to_numpy(dtype=object)
            checks = []
        for wrong, reason, message, show in checks:
            where = np.flatnonzero(wrong & ~bad)
            bad[where] = True
            issues.append((line[where], reason, functools.partial(_describe, message, column, where, show)))
    problems.flag(path, issues, unit)
    return Table(path, columns, line, unit).take(~bad)


# ----------------------------------------------------------------------------- text files


def _undecodable(encoding: str, error: UnicodeDecodeError, expected: bool = True) -> str:
    plain = encoding.removesuffix("-sig")
    return f"cannot decode the bytes as {plain} ({error.reason})" + (
        f"; expected {plain} text" if expected else ""
    )


def _first_line(path: Path, data: bytes, encoding: str) -> tuple[int, str]:
    """The 1-based number and text of the first non-blank line (``data`` is not all blank)."""
    start = data.rfind(b"\n", 0, _NON_SPACE.search(data).start()) + 1
    end = data.find(b"\n", start)
    try:
        text = data[start : end if end >= 0 else len(data)].decode(encoding).rstrip("\r")
    except UnicodeDecodeError as error:
        raise DataFormatError(path, _undecodable(encoding, error), data.count(b"\n", 0, start) + 1) from None
    return data.count(b"\n", 0, start) + 1, text


def _check_separator(path: Path, number: int, line: str, sep: str, n_fields: int) -> None:
    """Raise when the first line does not contain the separator at all (a wrong delimiter)."""
    if n_fields < 2 or sep in line:
        return
    others = [name for s, name in SEPARATOR_NAMES.items() if s != sep and s in line]
    hint = f"; the line looks separated by {others[0]}" if others else ""
    expected = SEPARATOR_NAMES.get(sep, repr(sep))
    message = f"expected {n_fields} fields separated by {expected}, but the line has no {expected}{hint}"
    raise DataFormatError(path, message, number)


def _positions(path: Path, spec: FileSpec, names: list[str]) -> dict[str, int]:
    """The field position of each role; a header without a column that is not optional raises."""
    if not spec.header:
        return {role: i for i, role in enumerate(spec.roles) if role is not None}
    positions, missing = {}, []
    for wanted, role in zip(spec.fields, spec.roles, strict=True):
        wanted = (wanted,) if isinstance(wanted, str) else wanted
        found = [names.index(name) for name in wanted if name in names]
        if found:
            positions[role] = found[0]
        elif role not in spec.optional:
            missing.append("/".join(wanted))
    if missing:
        sep = SEPARATOR_NAMES.get(spec.sep, repr(spec.sep))
        missing_text = ", ".join(missing)
        raise DataFormatError(
            path, f"expected a header with the column(s) {missing_text} separated by {sep}; found {names}", 1
        )
    return positions


def _is_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8 (pyarrow's vectorised check, faster than decoding)."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    binary = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        binary.cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _utf8(path: Path, data: bytes, encoding: str, problems: Problems) -> bytes:
    """The file as UTF-8 without a byte-order mark; undecodable lines raise, or are blanked when skipping."""
    utf8 = codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    if utf8 and _is_utf8(data):
        return data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        if not problems.skip:
            line = data.count(b"\n", 0, error.start) + 1
            raise DataFormatError(path, _undecodable(encoding, error), line) from None
        lines, bad = data.split(b"\n"), []
        for number, raw in enumerate(lines, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as line_error:
                bad.append((number, _undecodable(encoding, line_error, expected=False)))
                lines[number - 1] = b""  # a blank line is not a row; the other lines keep their numbers
        problems.flag(path, [(np.array([n for n, _ in bad]), "undecodable bytes", lambda k: bad[k][1])])
        data = b"\n".join(lines)
        text = data.decode(encoding)
    return data.removeprefix(codecs.BOM_UTF8) if utf8 else text.encode("utf-8")


def _parse(buffer: bytes, spec: FileSpec, n_fields: int, positions: dict[str, int], lone_cr: bool):
    """pyarrow's parse: the fields with a role as text (ids dictionary-encoded; all fields when
    quoted), and the rows of the wrong length as (record number, fields found, line breaks inside)."""
    stand_ins = (c for c in "\x1f\x1e\x1d\x1c\x01\x02\x03\x04" if c.encode() not in buffer)
    sep = spec.sep
    if len(sep) > 1:  # pyarrow splits on one character: stand in an unused control character
        sep = next(stand_ins)
        buffer = buffer.replace(spec.sep.encode(), sep.encode())
    cr = next(stand_ins) if lone_cr else ""  # pyarrow also ends a line at a lone "\r", which is data here
    buffer = _LONE_CR.sub(cr.encode(), buffer) if cr else buffer
    invalid: list[tuple[int, int, int]] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        invalid.append((row.number, row.actual_columns, row.text.count("\n")))
        return "skip"

    names = [f"f{i}" for i in range(n_fields)]
    ids = {names[positions[role]] for role in ID_ROLES if role in positions}
    used = [name for i, name in enumerate(names) if spec.quoted or i in positions.values()]
    types = {n: pa.dictionary(pa.int32(), pa.string()) if n in ids else pa.string() for n in used}
    parsed = pa_csv.read_csv(
        pa.py_buffer(buffer),
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=int(spec.header), use_threads=False),
        parse_options=pa_csv.ParseOptions(
            delimiter=sep,
            quote_char='"' if spec.quoted else False,
            newlines_in_values=spec.quoted,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=types, include_columns=used, strings_can_be_null=False, check_utf8=False
        ),
    )
    if cr:
        text = {n: pc.replace_substring(parsed.column(n).cast(pa.string()), cr, "\r") for n in used}
        parsed = pa.table({n: c.dictionary_encode() if n in ids else c for n, c in text.items()})
    return parsed, invalid


def _record_lines(buffer: bytes, parsed: pa.Table, invalid: list[tuple[int, int, int]], header: bool):
    """The 1-based line each record (header included) starts on, and which records are rows of
    ``parsed``; None when they do not line up. Records are the non-blank lines, except that a
    record with line breaks in quoted values also spans the lines after it."""
    n_records = parsed.num_rows + len(invalid) + int(header)
    is_row = np.ones(n_records, dtype=bool)
    is_row[[number - 1 for number, _, _ in invalid]] = False
    is_row[: int(header)] = False
    data = np.frombuffer(buffer, dtype=np.uint8)
    n_lines = int(np.count_nonzero(data == 10)) + (not buffer.endswith(b"\n"))
    if n_records == n_lines:
        return np.arange(1, n_lines + 1, dtype=np.int64), is_row
    ends = np.append(np.flatnonzero(data == 10), len(data))[:n_lines]
    starts = np.append(0, ends[:-1] + 1)
    blank = (ends == starts) | ((ends == starts + 1) & (data[np.minimum(starts, len(data) - 1)] == 13))
    nonblank = np.flatnonzero(~blank) + 1
    spans = np.zeros(n_records, dtype=np.int64)  # line breaks inside each record
    if len(nonblank) > n_records:
        spans[[number - 1 for number, _, _ in invalid]] = [n for _, _, n in invalid]
        for column in parsed.columns:
            spans[is_row] += pc.count_substring(column.cast(pa.string()), "\n").to_numpy(zero_copy_only=False)
    lines, taken, done = np.zeros(n_records, dtype=np.int64), 0, 0
    for record in np.flatnonzero(spans):  # few records span lines: loop over those alone
        if taken + record - done + 1 > len(nonblank):
            return None
        lines[done : record + 1] = nonblank[taken : taken + record - done + 1]
        taken = int(np.searchsorted(nonblank, lines[record] + spans[record], side="right"))
        done = record + 1
    if len(nonblank) - taken != n_records - done:
        return None
    lines[done:] = nonblank[taken:]
    return lines, is_row


def read_text(
    path: Path, spec: FileSpec, problems: Problems, encoding: str | None = None, timestamp_format: str | None = None
) -> Table:
    """Read and check one delimited text file (see the module docstring; ``timestamp_format``: :func:`_seconds`)."""
    if not path.is_file():
        raise DataFormatError(path, f"file not found; expected {spec.what}")
    data = path.read_bytes()
    if not data or data.isspace():
        raise DataFormatError(path, f"the file is empty; expected {spec.what}")
    encoding = encoding or ("latin-1" if spec.latin1_fallback and not _is_utf8(data) else "utf-8-sig")
    number, first = _first_line(path, data, encoding)
    names = list(spec.fields)
    if spec.header:
        if number != 1:
            raise DataFormatError(path, "expected a header on the first line, found a blank line", 1)
        split = next(csv.reader([first], delimiter=spec.sep)) if spec.quoted else first.split(spec.sep)
        names = [name.strip().split(":", 1)[0] if spec.typed_header else name.strip() for name in split]
    _check_separator(path, number, first, spec.sep, max(len(names), len(spec.fields)))
    positions = _positions(path, spec, names)
    if spec.header and _NON_SPACE.search(data, data.find(b"\n") + 1 if b"\n" in data else len(data)) is None:
        raise DataFormatError(path, f"the file has a header but no rows; expected {spec.what}")
    buffer = _utf8(path, data, encoding, problems)
    try:
        parsed, invalid = _parse(buffer, spec, len(names), positions, lone_cr=False)
        located = _record_lines(buffer, parsed, invalid, spec.header)
        if located is None and _LONE_CR.search(buffer):
            parsed, invalid = _parse(buffer, spec, len(names), positions, lone_cr=True)
            located = _record_lines(buffer, parsed, invalid, spec.header)
    except pa.ArrowInvalid as error:
        raise DataFormatError(path, f"cannot parse the file ({error}); expected {spec.what}") from None
    if located is None:
        raise DataFormatError(path, f"cannot match the parsed rows to lines; expected {spec.what}")
    lines, is_row = located
    sep = SEPARATOR_NAMES.get(spec.sep, repr(spec.sep))
    expected = f"expected {len(names)} fields separated by {sep} ({', '.join(names)})"
    wrong = (
        lines[[n - 1 for n, _, _ in invalid]],
        "wrong field count",
        lambda k: f"{expected}, found {invalid[k][1]}",
    )
    raw = {role: (names[p], parsed.column(f"f{p}")) for role, p in positions.items()}
    return _check(path, raw, lines[is_row], problems, [wrong], timestamp_format=timestamp_format)


# ----------------------------------------------------------------------------- Parquet


def read_parquet(
    path: Path, roles: Mapping[str, str], problems: Problems, timestamp_format: str | None = None
) -> Table:
    """Read and check a Parquet table whose columns ``roles`` maps; problems name the 1-based row."""
    what = f"a Parquet table with the columns {', '.join(roles.values())}"
    if not path.is_file():
        raise DataFormatError(path, f"file not found; expected {what}")
    try:
        found = pq.read_schema(path).names
        missing = [name for name in roles.values() if name not in found]
        table = None if missing else pq.read_table(path, columns=list(dict.fromkeys(roles.values())))
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise DataFormatError(path, f"cannot read the file as Parquet ({error}); expected {what}") from None
    if table is None:
        raise DataFormatError(path, f"expected the column(s) {', '.join(missing)}; found {found}")
    if table.num_rows == 0:
        raise DataFormatError(path, f"the file has no rows; expected {what}")
    raw = {role: (name, table.column(name)) for role, name in roles.items()}
    rows = np.arange(1, table.num_rows + 1, dtype=np.int64)
    return _check(path, raw, rows, problems, [], "row", timestamp_format=timestamp_format)
