"""Tests of data.load_logs: every format, the bundled data, and every kind of bad input.

Small fixtures are written in the official formats into tmp_path; all describe the same tiny log
(``EVENTS`` over ``MOVIES``), so each format is checked against one known answer.
"""

from __future__ import annotations

import csv
import importlib.util
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from recarena import data
from recarena.core.errors import ConfigError, DataFormatError, MissingPackageError
from recarena.data import formats, logs
from recarena.data.logs import LoadReport, LoadWarning, load_logs

# (user, item, rating, timestamp) in file order; user 1 has two events at t=100 (file order decides).
EVENTS = [(2, 20, 4, 200), (1, 10, 5, 100), (1, 30, 3, 50), (2, 10, 2, 150), (3, 30, 1, 300), (1, 20, 4, 100)]
# (id, title as in the official files, genres); item 40 has no events but is in the catalogue.
MOVIES = [
    (10, "Toy Story (1995)", ("Animation", "Comedy")),
    (20, "Heat (1995)", ("Action", "Crime")),
    (30, "Misérables, Les (1995)", ("Drama",)),
    (40, "City of Lost Children, The (1995)", ("Adventure", "Sci-Fi")),
]
USERS = [(1, 24, "M", "technician"), (2, 53, "F", "other"), (3, 23, "M", "writer")]

# The known answer: events sorted by (user, timestamp, file order); items in item-file order.
EXPECTED_USER = [0, 0, 0, 1, 1, 2]
EXPECTED_ITEM = [2, 0, 1, 0, 1, 2]
EXPECTED_RATING = [3, 5, 4, 2, 4, 1]
EXPECTED_TIME = [50, 100, 100, 150, 200, 300]


# ----------------------------------------------------------------------------- fixture writers


def write_ml100k(folder, events=EVENTS):
    folder.mkdir(exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in events))
    lines = []
    for item, title, genres in MOVIES:
        flags = "|".join("1" if g in genres else "0" for g in formats.ML100K_GENRES)
        lines.append(f"{item}|{title}|01-Jan-1995||http://us.imdb.com/x|{flags}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (folder / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|12345\n" for u, a, g, o in USERS))
    return folder


def write_ml1m(folder, events=EVENTS):
    folder.mkdir(exist_ok=True)
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in events))
    movies = "".join(f"{item}::{title}::{'|'.join(genres)}\n" for item, title, genres in MOVIES)
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    (folder / "users.dat").write_text("".join(f"{u}::{g}::{a}::{o}::12345\n" for u, a, g, o in USERS))
    return folder


def write_latest(folder, events=EVENTS):
    folder.mkdir(exist_ok=True)
    rows = "".join(f"{u},{i},{r}.0,{t}\n" for u, i, r, t in events)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + rows)
    with open(folder / "movies.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["movieId", "title", "genres"])
        for item, title, genres in MOVIES:
            writer.writerow([item, title, "|".join(genres)])
    return folder


def write_recbole(folder, events=EVENTS, name="toy"):
    folder.mkdir(exist_ok=True)
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (folder / f"{name}.inter").write_text(inter + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in events))
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    item += "".join(f"{i}\t{title[:-7]}\t1995\t{' '.join(g)}\n" for i, title, g in MOVIES)
    (folder / f"{name}.item").write_text(item)
    user = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    (folder / f"{name}.user").write_text(user + "".join(f"{u}\t{a}\t{g}\t{o}\t1\n" for u, a, g, o in USERS))
    return folder


def write_generic_csv(folder, events=EVENTS, with_rating=True):
    folder.mkdir(exist_ok=True)
    header = "who;what;when" + (";stars" if with_rating else "") + "\n"
    rows = "".join(f"{u};{i};{t}" + (f";{r}" if with_rating else "") + "\n" for u, i, r, t in events)
    (folder / "log.csv").write_text(header + rows)
    with open(folder / "items.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["what", "name", "kinds", "blurb"])
        for item, title, genres in MOVIES:
            writer.writerow([item, title, "|".join(genres), f"about {item}"])
    return folder


# InteractionLog.fingerprint() of the bundled datasets, recorded with the previous (hand-written)
# parser before the loaders moved to pyarrow: the rewrite must load exactly the same logs.
BUNDLED_FINGERPRINTS = {"ml-100k": "ff97b0c417511687", "ml-1m": "981173f18d352907"}

GENERIC = {"user": "who", "item": "what", "timestamp": "when", "rating": "stars"}
GENERIC_ITEMS = {"item": "what", "title": "name", "genres": "kinds", "text": "blurb"}


def assert_known_answer(log, has_metadata=True):
    assert log.n_events == 6 and log.n_users == 3
    assert list(log.user_raw_ids) == ["1", "2", "3"]
    np.testing.assert_array_equal(log.user, EXPECTED_USER)
    np.testing.assert_array_equal(log.item, EXPECTED_ITEM)
    np.testing.assert_array_equal(log.rating, EXPECTED_RATING)
    np.testing.assert_array_equal(log.timestamp, EXPECTED_TIME)
    np.testing.assert_array_equal(log.user_offsets, [0, 3, 5, 6])
    assert log.user.dtype == np.int64 and log.item.dtype == np.int64 and log.timestamp.dtype == np.int64
    assert log.rating.dtype == np.float32
    if has_metadata:
        assert list(log.item_raw_ids) == ["10", "20", "30", "40"]  # item 40 has no events but is kept
        assert log.items.title == ["Toy Story", "Heat", "Misérables, Les", "City of Lost Children, The"]
        assert list(log.items.year) == [1995] * 4
        assert log.items.genres == [g for _, _, g in MOVIES]


def assert_same_metadata(a, b):
    assert (
        a.items.title == b.items.title and a.items.genres == b.items.genres and a.items.text == b.items.text
    )
    np.testing.assert_array_equal(a.items.year, b.items.year)
    assert set(a.user_features) == set(b.user_features)
    for name, values in a.user_features.items():
        np.testing.assert_array_equal(values, b.user_features[name])


# ----------------------------------------------------------------------------- each format


def test_ml100k_raw_folder_and_file(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    log = load_logs(folder)
    assert_known_answer(log)
    assert log.items.text == [""] * 4
    assert list(log.user_features["age"]) == [24, 53, 23]
    assert list(log.user_features["gender"]) == ["M", "F", "M"]
    assert list(log.user_features["occupation"]) == ["technician", "other", "writer"]
    assert load_logs(folder / "u.data").fingerprint() == log.fingerprint()


def test_ml1m_raw(tmp_path):
    log = load_logs(write_ml1m(tmp_path / "ml-1m"))
    assert_known_answer(log)
    assert list(log.user_features["age"]) == [24, 53, 23]
    assert list(log.user_features["gender"]) == ["M", "F", "M"]


def test_ml_latest_quoted_titles(tmp_path):
    folder = write_latest(tmp_path / "ml-latest-small")
    assert '"City of Lost Children, The (1995)"' in (folder / "movies.csv").read_text()
    log = load_logs(folder)
    assert_known_answer(log)
    assert log.user_features == {}


def test_ml_latest_no_genres_listed(tmp_path):
    folder = write_latest(tmp_path / "latest")
    text = (folder / "movies.csv").read_text().replace("Adventure|Sci-Fi", "(no genres listed)")
    (folder / "movies.csv").write_text(text)
    assert load_logs(folder).items.genres[3] == ()


def test_recbole_folder(tmp_path):
    log = load_logs(write_recbole(tmp_path / "rb"))
    assert_known_answer(log)
    assert log.name == "toy"
    assert list(log.user_features["occupation"]) == ["technician", "other", "writer"]


def test_generic_csv_with_item_file(tmp_path):
    folder = write_generic_csv(tmp_path / "g")
    log = load_logs(
        folder / "log.csv",
        columns=GENERIC,
        item_file=folder / "items.csv",
        item_columns=GENERIC_ITEMS,
        delimiter=";",
        item_delimiter=";",
    )
    assert_known_answer(log)
    assert log.items.text == ["about 10", "about 20", "about 30", "about 40"]


def test_delimiter_is_the_event_files_own_and_item_delimiter_the_item_files(tmp_path):
    """``delimiter=";"`` for the events does not silently apply to a comma-separated item file."""
    folder = write_generic_csv(tmp_path / "g")
    with open(folder / "items.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)  # commas, as most item files are
        writer.writerow(["what", "name", "kinds", "blurb"])
        for item, title, genres in MOVIES:
            writer.writerow([item, title, "|".join(genres), f"about {item}"])
    log = load_logs(folder / "log.csv", columns=GENERIC, item_file=folder / "items.csv",
                    item_columns=GENERIC_ITEMS, delimiter=";")
    assert_known_answer(log)
    assert log.items.text == ["about 10", "about 20", "about 30", "about 40"]


def test_interaction_log_repr_is_one_short_line(tmp_path):
    log = load_logs(write_generic_csv(tmp_path / "g") / "log.csv", columns=GENERIC, delimiter=";")
    text = repr(log)
    assert text == "InteractionLog(name='log', n_users=3, n_items=3, n_events=6, ratings=explicit)"


def test_generic_csv_without_rating_or_items_is_implicit(tmp_path):
    folder = write_generic_csv(tmp_path / "g", with_rating=False)
    columns = {"user": "who", "item": "what", "timestamp": "when"}
    log = load_logs(folder / "log.csv", columns=columns, delimiter=";")
    assert np.isnan(log.rating).all() and not log.has_ratings and log.liked.all()
    assert list(log.item_raw_ids) == ["10", "20", "30"]  # the items that occur, natural order
    assert log.items.title == ["10", "20", "30"]  # raw ids stand in for titles
    np.testing.assert_array_equal(log.item, EXPECTED_ITEM)


def test_parquet_with_datetime_timestamps(tmp_path):
    frame = pd.DataFrame(EVENTS, columns=["u", "i", "r", "t"])
    frame["t"] = pd.to_datetime(frame["t"], unit="s")
    frame.to_parquet(tmp_path / "log.parquet")
    items = pd.DataFrame(
        {
            "i": [m[0] for m in MOVIES],
            "title": [m[1] for m in MOVIES],
            "genres": ["|".join(m[2]) for m in MOVIES],
        }
    )
    items.to_parquet(tmp_path / "items.parquet")
    log = load_logs(
        tmp_path / "log.parquet",
        columns={"user": "u", "item": "i", "timestamp": "t", "rating": "r"},
        item_file=tmp_path / "items.parquet",
        item_columns={"item": "i", "title": "title", "genres": "genres"},
    )
    assert_known_answer(log)


def test_natural_order_of_raw_ids(tmp_path):
    events = [("u10", "b", 3, 1), ("u2", "a", 3, 1), ("u1", "c", 3, 1)]
    (tmp_path / "x.csv").write_text("u,i,t,r\n" + "".join(f"{u},{i},{t},{r}\n" for u, i, r, t in events))
    log = load_logs(tmp_path / "x.csv", columns={"user": "u", "item": "i", "timestamp": "t", "rating": "r"})
    assert list(log.user_raw_ids) == ["u1", "u2", "u10"]
    assert list(log.item_raw_ids) == ["a", "b", "c"]


def test_ids_keep_leading_zeros(tmp_path):
    (tmp_path / "x.csv").write_text("u,i,t\n01,007,5\n1,7,6\n")
    log = load_logs(tmp_path / "x.csv", columns={"user": "u", "item": "i", "timestamp": "t"})
    assert sorted(log.user_raw_ids) == ["01", "1"] and sorted(log.item_raw_ids) == ["007", "7"]


def test_crlf_line_ends(tmp_path):
    folder = write_ml1m(tmp_path / "m")
    for name in ("ratings.dat", "movies.dat"):
        path = folder / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert_known_answer(load_logs(folder))


def test_title_year_parsing(tmp_path):
    folder = write_ml1m(tmp_path / "m")
    movies = "10::City of Lost Children, The (Cité des enfants perdus, La) (1995)::Adventure\n20::Babylon 5::\n30::X (1999) ::Drama\n"
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    (folder / "ratings.dat").write_text("1::10::5::1\n1::20::5::2\n1::30::5::3\n")
    log = load_logs(folder)
    assert log.items.title == ["City of Lost Children, The (Cité des enfants perdus, La)", "Babylon 5", "X"]
    assert list(log.items.year) == [1995, 0, 1999]
    assert log.items.genres == [("Adventure",), (), ("Drama",)]


def test_utf8_movie_file_also_accepted(tmp_path):
    folder = write_ml1m(tmp_path / "m")
    (folder / "movies.dat").write_bytes(
        (folder / "movies.dat").read_bytes().decode("latin-1").encode("utf-8")
    )
    assert load_logs(folder).items.title[2] == "Misérables, Les"


def test_every_official_format_gives_the_same_log(tmp_path):
    """One tiny log written in each official format loads to the same events and metadata."""
    logs_ = [
        load_logs(w(tmp_path / w.__name__)) for w in (write_ml100k, write_ml1m, write_latest, write_recbole)
    ]
    for log in logs_[1:]:
        assert log.fingerprint() == logs_[0].fingerprint()
        assert log.items.title == logs_[0].items.title and log.items.genres == logs_[0].items.genres
        np.testing.assert_array_equal(log.items.year, logs_[0].items.year)


def test_blank_lines_keep_line_numbers(tmp_path):
    folder = write_ml100k(tmp_path / "m")
    (folder / "u.data").write_text("1\t10\t5\t100\n\n\n1\t20\tbad\t101\n")
    with pytest.raises(DataFormatError, match=r"u.data, line 4: expected a number for 'rating', found 'bad'"):
        load_logs(folder)


def test_line_numbers_across_quoted_line_breaks_and_blank_lines(tmp_path):
    folder = write_latest(tmp_path / "latest")
    movies = 'movieId,title,genres\n10,"Toy\nStory (1995)",Comedy\n\n20,Heat (1995),Action\n30,"A\n\nB (1995)",Drama\n40,x\n'
    (folder / "movies.csv").write_text(movies)
    with pytest.raises(
        DataFormatError, match=r"movies.csv, line 9: expected 3 fields separated by ','.*found 2"
    ):
        load_logs(folder)
    (folder / "movies.csv").write_text(movies.replace("40,x", "40,X (1995),Drama"))
    log = load_logs(folder)
    assert log.items.title[:3] == ["Toy\nStory", "Heat", "A\n\nB"]  # line breaks in quoted values are kept
    assert list(log.items.year) == [1995] * 4


def test_lone_carriage_return_is_part_of_the_line(tmp_path):
    folder = _corrupt(write_ml1m(tmp_path / "m"), "ratings.dat", "1::10::5::1\n1::20::4::2\r1::30::3::3\n")
    with pytest.raises(
        DataFormatError, match=r"ratings.dat, line 2: expected 4 fields separated by '::'.*found 7"
    ):
        load_logs(folder)


def test_timestamp_beyond_int64_names_file_and_line(tmp_path):
    (tmp_path / "x.csv").write_text("u,i,t\n1,a,5\n2,b,99999999999999999999\n3,c,1e30\n")
    columns = {"user": "u", "item": "i", "timestamp": "t"}
    with pytest.raises(
        DataFormatError, match=r"x.csv, line 3: expected a timestamp in seconds that fits in 64 bits"
    ):
        load_logs(tmp_path / "x.csv", columns=columns)
    with pytest.warns(LoadWarning):
        log, report = load_logs(tmp_path / "x.csv", columns=columns, on_bad_rows="skip", return_report=True)
    assert report.skipped == {"x.csv: timestamp out of range": 2} and list(log.timestamp) == [5]


def test_large_and_fractional_timestamps(tmp_path):
    columns = {"user": "u", "item": "i", "timestamp": "t"}
    (tmp_path / "x.csv").write_text("u,i,t\n1,a,9007199254740993\n2,b,-5\n")
    assert list(load_logs(tmp_path / "x.csv", columns=columns).timestamp) == [9007199254740993, -5]  # exact
    (tmp_path / "x.csv").write_text("u,i,t\n1,a,1.5\n2,b,-2.5\n3,c,7.9\n")
    assert list(load_logs(tmp_path / "x.csv", columns=columns).timestamp) == [1, -3, 7]  # whole seconds


def test_format_registry(tmp_path):
    assert {"ml-100k-raw", "ml-1m-raw", "ml-latest", "recbole", "csv", "parquet"} <= set(logs.formats())
    with pytest.raises(
        ConfigError, match=r"format='excel' is not valid; expected one of .*'ml-1m-raw'.*'parquet'"
    ):
        load_logs(tmp_path, format="excel")

    def read_excel_like(path, options, problems):  # a custom format: reuse the ML-1M reader
        return formats.READERS["ml-1m-raw"](path, options, problems)

    logs.register_format("excel", read_excel_like)
    try:
        assert "excel" in logs.formats()
        assert_known_answer(load_logs(write_ml1m(tmp_path / "m"), format="excel"))
    finally:
        del formats.READERS["excel"]


def test_determinism(tmp_path):
    folder = write_ml1m(tmp_path / "m")
    a, b = load_logs(folder), load_logs(folder)
    assert a.fingerprint() == b.fingerprint()
    for name in ("user", "item", "rating", "timestamp", "user_offsets"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_min_interactions_apply_k_core(tmp_path):
    log, report = load_logs(
        write_ml1m(tmp_path / "m"), min_user_interactions=2, min_item_interactions=2, return_report=True
    )
    assert list(log.user_raw_ids) == ["1", "2"] and log.n_events == 4 and log.n_items == 4
    assert report.filtered_events == 2 and report.events == 4


# ----------------------------------------------------------------------------- bad input


def _corrupt(folder, name, text, encoding="utf-8"):
    (folder / name).write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return folder


BAD_INPUTS = [
    # (id, writer, file, new content, expected fragments of the message)
    (
        "wrong field count",
        write_ml100k,
        "u.data",
        "1\t10\t5\t1\n1\t20\t5\n",
        ["u.data, line 2", "expected 4 fields separated by a tab", "found 3"],
    ),
    (
        "too many fields",
        write_ml1m,
        "ratings.dat",
        "1::10::5::1\n1::20::5::2::9\n",
        ["ratings.dat, line 2", "expected 4 fields separated by '::'", "found 5"],
    ),
    (
        "non-numeric rating",
        write_ml1m,
        "ratings.dat",
        "1::10::5::1\n1::20::five::2\n",
        ["ratings.dat, line 2", "expected a number for 'Rating', found 'five'"],
    ),
    (
        "non-numeric timestamp",
        write_latest,
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,10,5,1\n1,20,4,yesterday\n",
        ["ratings.csv, line 3", "expected a number for 'timestamp', found 'yesterday'"],
    ),
    (
        "nan rating",
        write_recbole,
        "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\tnan\t1\n",
        ["toy.inter, line 2", "expected a number for 'rating'"],
    ),
    (
        "empty id",
        write_ml100k,
        "u.data",
        "1\t10\t5\t1\n\t20\t5\t2\n",
        ["u.data, line 2", "expected a non-empty 'user id'"],
    ),
    (
        "unknown item",
        write_ml100k,
        "u.data",
        "1\t10\t5\t1\n2\t99\t5\t2\n",
        ["u.data, line 2", "item id '99' is not in the item file u.item"],
    ),
    (
        "duplicate user-item",
        write_ml1m,
        "ratings.dat",
        "1::10::5::1\n2::10::5::1\n1::10::3::7\n",
        [
            "ratings.dat, line 3",
            "duplicate event",
            "also occurs on line 1",
            "expected each (user, item) once",
        ],
    ),
    (
        "duplicate item id",
        write_ml1m,
        "movies.dat",
        "10::A (1990)::Drama\n20::B (1991)::Drama\n10::C (1992)::Drama\n",
        ["movies.dat, line 3", "item id '10' is already listed on line 1"],
    ),
    ("empty events file", write_ml100k, "u.data", "", ["u.data: the file is empty"]),
    ("blank events file", write_ml1m, "ratings.dat", "\n \n", ["ratings.dat: the file is empty"]),
    ("empty item file", write_ml1m, "movies.dat", "", ["movies.dat: the file is empty"]),
    (
        "header only",
        write_latest,
        "ratings.csv",
        "userId,movieId,rating,timestamp\n",
        ["ratings.csv", "header but no rows"],
    ),
    (
        "tabs instead of '::'",
        write_ml1m,
        "ratings.dat",
        "1\t10\t5\t1\n",
        ["ratings.dat, line 1", "expected 4 fields separated by '::'", "looks separated by a tab"],
    ),
    (
        "semicolons instead of commas",
        write_latest,
        "ratings.csv",
        "userId;movieId;rating;timestamp\n1;10;5;1\n",
        ["ratings.csv, line 1", "separated by ','", "looks separated by ';'"],
    ),
    (
        "missing header column",
        write_latest,
        "ratings.csv",
        "userId,itemId,rating,timestamp\n1,10,5,1\n",
        ["ratings.csv, line 1", "expected a header with the column(s) movieId"],
    ),
    (
        "latin-1 bytes in UTF-8 ratings",
        write_ml100k,
        "u.data",
        b"1\t10\t5\t1\n2\t20\t5\t2\n3\t30\t5\xe9\t3\n",
        ["u.data, line 3", "cannot decode the bytes as utf-8"],
    ),
    (
        "latin-1 bytes in UTF-8 movies.csv",
        write_latest,
        "movies.csv",
        "movieId,title,genres\n10,Toy Story (1995),Comedy\n30,Misérables (1995),Drama\n".encode("latin-1"),
        ["movies.csv, line 3", "cannot decode"],
    ),
    ("missing item file", write_ml1m, "movies.dat", None, ["movies.dat: file not found", "expected"]),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_names_file_line_and_expectation(tmp_path, case):
    _, writer, name, content, fragments = case
    folder = writer(tmp_path / "data")
    if content is None:
        (folder / name).unlink()
    else:
        _corrupt(folder, name, content)
    with pytest.raises(DataFormatError) as caught:
        load_logs(folder)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert caught.value.path.endswith(name)


def test_bad_parquet_value_names_row(tmp_path):
    pd.DataFrame({"u": ["1", "2", None], "i": ["a", "b", "c"], "t": [1, 2, 3]}).to_parquet(
        tmp_path / "x.parquet"
    )
    with pytest.raises(DataFormatError, match=r"x.parquet: row 3: expected a non-empty 'u'"):
        load_logs(tmp_path / "x.parquet", columns={"user": "u", "item": "i", "timestamp": "t"})


def test_corrupt_parquet(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataFormatError, match="cannot read the file as Parquet"):
        load_logs(tmp_path / "x.parquet", columns={"user": "u", "item": "i", "timestamp": "t"})


def test_duplicate_user_item_time_key_for_generic_logs(tmp_path):
    # Re-consuming an item later is fine for a generic log; the same event twice is not.
    (tmp_path / "x.csv").write_text("u,i,t\n1,a,1\n1,a,2\n")
    assert load_logs(tmp_path / "x.csv", columns={"user": "u", "item": "i", "timestamp": "t"}).n_events == 2
    (tmp_path / "x.csv").write_text("u,i,t\n1,a,1\n1,b,1\n1,a,1\n")
    with pytest.raises(
        DataFormatError, match=r"line 4: duplicate event.*line 2; expected each \(user, item, timestamp\)"
    ):
        load_logs(tmp_path / "x.csv", columns={"user": "u", "item": "i", "timestamp": "t"})


@pytest.mark.parametrize("mode, kept_rating", [("keep-first", 5.0), ("keep-last", 3.0)])
def test_deduplicate_keeps_first_or_last_in_time(tmp_path, mode, kept_rating):
    folder = _corrupt(write_ml1m(tmp_path / "m"), "ratings.dat", "1::10::3::9\n1::20::4::5\n1::10::5::1\n")
    with pytest.warns(LoadWarning, match="dropped 1 duplicate events"):
        log, report = load_logs(folder, deduplicate=mode, return_report=True)
    assert log.n_events == 2 and report.duplicates_dropped == 1
    assert log.rating[log.item == 0].tolist() == [kept_rating]


def test_skip_mode_counts_every_reason(tmp_path):
    folder = write_ml1m(tmp_path / "m")
    ratings = (
        b"1::10::5::1\n"  # good
        b"1::20::5\n"  # wrong field count
        b"1::30::x::3\n"  # not a number
        b"2::99::4::4\n"  # unknown item
        b"\n"  # blank: not a row
        b"2::10::4::5\n"  # good
        b"3::30::2::6\n"  # good
        b"3::20::1::8\n"  # unknown item: its movies.dat row is skipped below
    ) + b"3::30::4\xff::7\n"  # undecodable
    _corrupt(folder, "ratings.dat", ratings)
    _corrupt(
        folder, "movies.dat", "10::A (1990)::Drama\n20::B::Drama::extra\n30::C (1992)::Drama\n10::D::Drama\n"
    )
    with pytest.warns(LoadWarning) as record:
        log, report = load_logs(folder, on_bad_rows="skip", return_report=True)
    assert isinstance(report, LoadReport)
    assert report.skipped == {
        "ratings.dat: undecodable bytes": 1,
        "ratings.dat: wrong field count": 1,
        "ratings.dat: not a number": 1,
        "movies.dat: wrong field count": 1,
        "movies.dat: duplicate item id": 1,
        "ratings.dat: unknown item": 2,
    }
    assert log.n_events == 3 and report.events == 3
    assert report.rows_read == 8 and report.skipped_events == 5
    assert (
        report.rows_read
        == report.events + report.skipped_events + report.duplicates_dropped + report.filtered_events
    )
    assert list(log.item_raw_ids) == ["10", "30"]
    assert any("ratings.dat, line 2: expected 4 fields" in e for e in report.examples)
    assert "skipped rows" in str(record[0].message)


def test_skip_mode_still_raises_on_file_level_problems(tmp_path):
    folder = _corrupt(write_ml1m(tmp_path / "m"), "ratings.dat", "1\t10\t5\t1\n")
    with pytest.raises(DataFormatError, match="separated by '::'"):
        load_logs(folder, on_bad_rows="skip")
    _corrupt(folder, "ratings.dat", "1::99::5::1\n")
    with pytest.raises(DataFormatError, match="no valid events remain.*unknown item: 1"):
        load_logs(folder, on_bad_rows="skip")


def test_clean_load_does_not_warn(tmp_path):
    folder = write_ml100k(tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log, report = load_logs(folder, on_bad_rows="skip", return_report=True)
    assert report.skipped == {} and report.rows_read == report.events == 6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"on_bad_rows": "ignore"}, "on_bad_rows='ignore' is not valid"),
        ({"deduplicate": "drop"}, "deduplicate='drop' is not valid"),
        ({"format": "excel"}, "format='excel' is not valid"),
        ({"format": "csv"}, "needs columns="),
        (
            {"format": "csv", "columns": {"user": "u", "item": "i", "time": "t"}},
            r"unknown key\(s\) \['time'\]",
        ),
        ({"format": "csv", "columns": {"user": "u", "item": "i"}}, r"missing the key\(s\) \['timestamp'\]"),
    ],
)
def test_invalid_options(tmp_path, kwargs, match):
    (tmp_path / "x.csv").write_text("u,i,t\n1,a,1\n")
    with pytest.raises(ConfigError, match=match):
        load_logs(tmp_path / "x.csv", **kwargs)


def test_unknown_source(tmp_path):
    with pytest.raises(
        DataFormatError, match=r"no such file or folder; expected a bundled name \['ml-100k', 'ml-1m'\]"
    ):
        load_logs("ml-10m")
    with pytest.raises(DataFormatError, match="cannot tell the format"):
        load_logs(tmp_path)


def test_missing_data_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "recbole" else real(name, *a)
    )
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps recbole==1\.2\.1"):
        load_logs("ml-100k")


# ----------------------------------------------------------------------------- bundled data


def test_bundled_ml100k():
    log = data.load_logs("ml-100k")
    assert log.fingerprint() == BUNDLED_FINGERPRINTS["ml-100k"]
    assert (log.n_events, log.n_users, log.n_items) == (100_000, 943, 1_682)
    assert log.name == "ml-100k" and log.has_ratings
    assert log.item_raw_ids[0] == "1" and log.items.title[0] == "Toy Story" and log.items.year[0] == 1995
    assert log.items.genres[0] == ("Animation", "Children's", "Comedy")
    assert set(log.user_features) == {"age", "gender", "occupation"}
    assert np.all(np.diff(log.user) >= 0)
    for u in (0, 500, 942):  # each sequence is time-ordered
        assert np.all(np.diff(log.timestamp[log.user_slice(u)]) >= 0)
    assert set(np.unique(log.rating)) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_bundled_ml1m_counts_and_load_time():
    start = time.perf_counter()
    log = load_logs("ml-1m")
    seconds = time.perf_counter() - start
    print(f"\nML-1M: {log.n_events:,} events loaded in {seconds:.2f} s")  # a sanity print, not an assertion
    assert log.fingerprint() == BUNDLED_FINGERPRINTS["ml-1m"]
    assert (log.n_events, log.n_users, log.n_items) == (1_000_209, 6_040, 3_883)
    assert int((log.item_counts() > 0).sum()) == 3_706
    assert log.user_raw_ids[0] == "1m_1" and log.item_raw_ids[0] == "Toy Story (1995)"
    assert log.items.title[0] == "Toy Story" and log.items.year[0] == 1995
    assert np.all(np.diff(log.user) >= 0) and log.user_offsets[-1] == log.n_events


def test_encoding_option_overrides_the_latin1_fallback(tmp_path):
    folder = write_ml1m(tmp_path / "m")
    assert load_logs(folder, encoding="latin-1").items.title[2] == "Misérables, Les"
    with pytest.raises(DataFormatError, match=r"movies.dat, line 3: cannot decode the bytes as utf-8"):
        load_logs(folder, encoding="utf-8")


def test_report_lists_files_and_adds_up(tmp_path):
    folder = write_ml100k(tmp_path / "m")
    log, report = load_logs(folder, return_report=True)
    assert [p.rsplit("/", 1)[-1] for p in report.files] == ["u.data", "u.item", "u.user"]
    assert report.rows_read == report.events == log.n_events == 6
    assert "kept 6 of 6 event rows" in report.summary()


def test_a_mapped_column_must_exist(tmp_path):
    (tmp_path / "x.csv").write_text("u,i,t\n1,a,1\n")
    with pytest.raises(DataFormatError, match=r"x.csv, line 1: expected a header with the column\(s\) stars"):
        load_logs(tmp_path / "x.csv", columns={"user": "u", "item": "i", "timestamp": "t", "rating": "stars"})
    pd.DataFrame({"u": ["1"], "i": ["a"], "t": [1]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(DataFormatError, match=r"x.parquet: expected the column\(s\) stars"):
        load_logs(
            tmp_path / "x.parquet", columns={"user": "u", "item": "i", "timestamp": "t", "rating": "stars"}
        )


@pytest.mark.parametrize("writer", [write_ml100k, write_ml1m, write_recbole, write_latest])
def test_each_file_is_read_once(tmp_path, monkeypatch, writer):
    folder = writer(tmp_path / "data")
    reads: list[str] = []
    read_bytes = logs.Path.read_bytes

    def counting_read_bytes(path):
        reads.append(path.name)
        return read_bytes(path)

    monkeypatch.setattr(logs.Path, "read_bytes", counting_read_bytes)
    log, report = load_logs(folder, return_report=True)
    assert_known_answer(log)
    assert sorted(reads) == sorted(p.rsplit("/", 1)[-1] for p in report.files)
