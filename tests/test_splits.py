"""Tests of leave-last-out and temporal splits and k-core filtering on hand-checkable logs."""

from __future__ import annotations

import numpy as np
import pytest

from recarena.data import (
    InteractionLog,
    ItemMetadata,
    k_core,
    leave_last_out,
    load_logs,
    temporal_split,
)


def make_log(sequences: dict[str, list[tuple[str, int]]], n_extra_items: int = 1) -> InteractionLog:
    """A log from {user: [(item, timestamp), ...]} in time order; ratings count 1, 2, 3, ...

    Items are indexed in sorted order, plus ``n_extra_items`` items without events.
    """
    item_ids = sorted({item for seq in sequences.values() for item, _ in seq})
    item_ids += [f"unused{i}" for i in range(n_extra_items)]
    index = {item: i for i, item in enumerate(item_ids)}
    users, items, times = [], [], []
    for u, seq in enumerate(sequences.values()):
        for item, t in seq:
            users.append(u)
            items.append(index[item])
            times.append(t)
    counts = np.bincount(users, minlength=len(sequences))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = len(users)
    return InteractionLog(
        name="toy",
        user_raw_ids=np.array(list(sequences), dtype=object),
        item_raw_ids=np.array(item_ids, dtype=object),
        user=np.array(users, dtype=np.int64),
        item=np.array(items, dtype=np.int64),
        rating=np.arange(1, n + 1, dtype=np.float32),
        timestamp=np.array(times, dtype=np.int64),
        user_offsets=offsets,
        items=ItemMetadata(
            title=list(item_ids),
            year=np.zeros(len(item_ids), dtype=np.int32),
            genres=[()] * len(item_ids),
            text=[""] * len(item_ids),
        ),
        user_features={"age": np.arange(len(sequences), dtype=np.int64) + 20},
    )


# Users: a has 4 events, b has 3, c has 2, d has 1.
TOY = {
    "a": [("x", 1), ("y", 2), ("z", 3), ("w", 4)],
    "b": [("y", 5), ("x", 6), ("z", 6)],
    "c": [("x", 7), ("y", 8)],
    "d": [("z", 9)],
}


def events_of(log: InteractionLog) -> list[tuple[str, str, int]]:
    return [
        (log.user_raw_ids[u], log.item_raw_ids[i], int(t))
        for u, i, t in zip(log.user, log.item, log.timestamp, strict=True)
    ]


def test_leave_last_out_known_answer():
    log = make_log(TOY)
    split = leave_last_out(log)
    assert split.protocol == "leave-last-out" and split.full is log
    assert events_of(split.test) == [("a", "w", 4), ("b", "z", 6)]
    assert events_of(split.valid) == [("a", "z", 3), ("b", "x", 6)]
    # Users with fewer than 3 events keep everything in train.
    assert events_of(split.train) == [
        ("a", "x", 1),
        ("a", "y", 2),
        ("b", "y", 5),
        ("c", "x", 7),
        ("c", "y", 8),
        ("d", "z", 9),
    ]
    assert split.test.name == "toy/test" and split.train.name == "toy/train"


def test_splits_keep_index_space_and_partition_events():
    log = make_log(TOY)
    for split in (leave_last_out(log), temporal_split(log, 0.25, 0.25)):
        for part in (split.train, split.valid, split.test):
            assert part.n_users == log.n_users and part.n_items == log.n_items
            assert part.user_raw_ids is log.user_raw_ids and part.items is log.items
            assert part.user_offsets[-1] == part.n_events
            assert np.all(np.diff(part.user) >= 0)
        assert split.train.n_events + split.valid.n_events + split.test.n_events == log.n_events
        ratings = np.sort(np.concatenate([split.train.rating, split.valid.rating, split.test.rating]))
        np.testing.assert_array_equal(ratings, np.sort(log.rating))  # every event in exactly one part


def test_temporal_split_known_answer():
    log = make_log(TOY)  # timestamps 1 2 3 4 5 6 6 7 8 9 (10 events)
    split = temporal_split(log, valid_fraction=0.3, test_fraction=0.2)
    assert split.protocol == "temporal"
    # test starts at rank 8 (t=8), valid at rank 5 (t=6): ties at t=6 both go to valid.
    assert sorted(t for *_, t in events_of(split.test)) == [8, 9]
    assert sorted(t for *_, t in events_of(split.valid)) == [6, 6, 7]
    assert sorted(t for *_, t in events_of(split.train)) == [1, 2, 3, 4, 5]


def test_temporal_split_ties_go_to_the_later_part():
    log = make_log({"a": [("x", 1), ("y", 5)], "b": [("x", 5), ("y", 5)]})
    split = temporal_split(log, valid_fraction=0.0, test_fraction=0.25)
    assert split.valid.n_events == 0
    assert split.test.n_events == 3 and split.train.n_events == 1  # all events at t=5 are test


@pytest.mark.parametrize("valid, test", [(-0.1, 0.1), (0.1, 1.0), (0.6, 0.5)])
def test_temporal_split_rejects_bad_fractions(valid, test):
    with pytest.raises(ValueError, match="fraction"):
        temporal_split(make_log(TOY), valid, test)


def test_k_core_iterates_and_keeps_the_catalogue():
    # item w (1 event) goes at k=2; then user d (1 event) goes; then item z drops to 2 events (kept).
    log = make_log(TOY)
    core = k_core(log, user_k=2, item_k=2)
    assert list(core.user_raw_ids) == ["a", "b", "c"]
    assert events_of(core) == [
        ("a", "x", 1), ("a", "y", 2), ("a", "z", 3),
        ("b", "y", 5), ("b", "x", 6), ("b", "z", 6),
        ("c", "x", 7), ("c", "y", 8),
    ]  # fmt: skip
    assert core.n_items == log.n_items and core.items is log.items  # catalogue kept whole
    np.testing.assert_array_equal(core.user_offsets, [0, 3, 6, 8])
    np.testing.assert_array_equal(core.user_features["age"], [20, 21, 22])


def test_k_core_cascades():
    # At k=3: item w (1 event) and users c (2) and d (1) go; then x, y and z have 2 events each and
    # go, which empties a and b: nothing is left, but the catalogue stays.
    core = k_core(make_log(TOY), user_k=3, item_k=3)
    assert core.n_events == 0 and core.n_users == 0 and core.n_items == make_log(TOY).n_items


def test_k_core_noop_and_invalid():
    log = make_log(TOY)
    same = k_core(log, 0, 0)
    assert same.fingerprint() == log.fingerprint()
    with pytest.raises(ValueError):
        k_core(log, -1, 0)


def test_splits_are_deterministic_on_ml100k():
    log = load_logs("ml-100k")
    a, b = leave_last_out(log), leave_last_out(log)
    assert a.test.fingerprint() == b.test.fingerprint()
    assert a.test.n_events == a.valid.n_events == 943  # every ML-100K user has >= 20 ratings
    assert a.train.n_events == 100_000 - 2 * 943
    # Each test event is its user's latest one.
    for u in (0, 100, 942):
        assert a.test.timestamp[a.test.user_slice(u)][0] == log.timestamp[log.user_slice(u)].max()
    t = temporal_split(log)
    assert (
        t.train.timestamp.max() < t.valid.timestamp.min() <= t.valid.timestamp.max() < t.test.timestamp.min()
    )
    assert abs(t.test.n_events - 10_000) < 200 and abs(t.valid.n_events - 10_000) < 200


def test_validation_split_scores_the_second_last_event_without_the_test_event():
    from recarena.data import validation_split
    from recarena.evaluation.histories import build_queries

    log = make_log({"a": [("x", 1), ("y", 2), ("z", 3), ("w", 4)], "b": [("y", 1), ("x", 2), ("z", 3)],
                    "c": [("x", 1), ("y", 2)]})
    split = validation_split(leave_last_out(log))
    assert split.test.n_events == 2 and split.valid.n_events == 0  # users with >= 3 events only
    queries = build_queries(split)
    title = log.items.title
    assert queries.user.tolist() == [0, 1]
    assert [title[i] for i in queries.target] == ["z", "x"]  # a's and b's second-last events
    histories = [[title[i] for i in queries.seq_item[start:end]] for start, end in zip(queries.start, queries.position, strict=True)]
    assert histories == [["x", "y"], ["y"]]
    assert "w" not in [title[i] for i in queries.seq_item]  # a's test event is neither history nor scored
