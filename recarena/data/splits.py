"""Train/validation/test splits of an :class:`InteractionLog`, and k-core filtering.

Splits keep the full log's user and item index space (they are built with
:meth:`InteractionLog.select_events`), so an index means the same user or item in every part.
"""

from __future__ import annotations

import numpy as np

from recarena.data.interactions import InteractionLog, LogSplit


def _split(log: InteractionLog, valid: np.ndarray, test: np.ndarray, protocol: str) -> LogSplit:
    """The LogSplit whose validation and test parts are the events marked in ``valid``/``test``."""
    train = ~(valid | test)
    return LogSplit(
        train=log.select_events(train, name=f"{log.name}/train"),
        valid=log.select_events(valid, name=f"{log.name}/valid"),
        test=log.select_events(test, name=f"{log.name}/test"),
        protocol=protocol,
        full=log,
    )


def _position_from_end(log: InteractionLog) -> np.ndarray:
    """int64 [n_events]: 1 for each user's last event, 2 for the second-last, ..."""
    lengths = log.sequence_lengths()
    position = np.arange(log.n_events, dtype=np.int64) - log.user_offsets[log.user]
    return lengths[log.user] - position


def leave_last_out(log: InteractionLog) -> LogSplit:
    """Per-user leave-last-out, the standard ML-1M protocol.

    Each user's last event (in time order, file order breaking ties) is test, the second-last is
    validation, the rest is train. Users with fewer than 3 events have no event to spare for both
    held-out parts: all their events stay in train (filter with :func:`k_core` first to avoid them).
    """
    from_end = _position_from_end(log)
    long_enough = log.sequence_lengths()[log.user] >= 3
    test = long_enough & (from_end == 1)
    valid = long_enough & (from_end == 2)
    return _split(log, valid, test, "leave-last-out")


def validation_split(split: LogSplit) -> LogSplit:
    """``split`` with its validation events as the test part (and no test events at all), for
    choosing configurations without touching the test events: each query's history is the
    training events before it, so a later test event is neither history nor consumed."""
    none = np.zeros(split.full.n_events, dtype=bool)
    return LogSplit(
        train=split.train,
        valid=split.full.select_events(none, name=f"{split.full.name}/none"),
        test=split.valid,
        protocol=f"{split.protocol}-validation",
        full=split.full,
    )


def temporal_cutoffs(
    log: InteractionLog, valid_fraction: float = 0.1, test_fraction: float = 0.1
) -> tuple[int, int]:
    """The timestamps (valid_start, test_start) of :func:`temporal_split`.

    ``test_start`` is the timestamp of the event at rank ``n - round(n * test_fraction)`` in time
    order (so about ``test_fraction`` of events are at or after it); likewise ``valid_start`` with
    ``valid_fraction + test_fraction``. A part with fraction 0 starts after the last event.
    """
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError(f"valid_fraction + test_fraction must be < 1, got {valid_fraction + test_fraction}")
    if log.n_events == 0:
        raise ValueError("cannot split an empty log")
    times = np.sort(log.timestamp)
    n = len(times)
    after_end = int(times[-1]) + 1

    def start_of_last(fraction: float) -> int:
        count = int(round(n * fraction))
        return int(times[n - count]) if count > 0 else after_end

    return start_of_last(valid_fraction + test_fraction), start_of_last(test_fraction)


def temporal_split(log: InteractionLog, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> LogSplit:
    """Global temporal split: one pair of time cut-offs for every user.

    Events before ``valid_start`` are train, from ``valid_start`` up to ``test_start`` validation,
    from ``test_start`` on test (see :func:`temporal_cutoffs`). Events sharing a cut-off timestamp
    all go to the later part, so the fractions are approximate when timestamps tie. A user may
    appear in any subset of the parts.
    """
    valid_start, test_start = temporal_cutoffs(log, valid_fraction, test_fraction)
    test = log.timestamp >= test_start
    valid = (log.timestamp >= valid_start) & ~test
    return _split(log, valid, test, "temporal")


TRAINING_SPLITS = ("leave-last-out", "temporal")
"""The splits a run can train on (``data.split``): its logged users and fitted models see only the
split's training part, and evaluate.py scores it only on that split's held-out events."""


def split_log(log: InteractionLog, name: str) -> LogSplit:
    """``log`` split by the training split ``name`` (:data:`TRAINING_SPLITS`)."""
    if name == "leave-last-out":
        return leave_last_out(log)
    if name == "temporal":
        return temporal_split(log)
    raise ValueError(f"unknown split {name!r}; choose from {list(TRAINING_SPLITS)}")


def user_last_split(log: InteractionLog, test_fraction: float = 0.2, valid_fraction: float = 0.1) -> LogSplit:
    """Per-user time split: each user's last ``test_fraction`` of events is test (at least one),
    the last ``valid_fraction`` of the rest validation; users with fewer than 3 events stay in train."""
    if not (0 < test_fraction < 1 and 0 <= valid_fraction < 1):
        raise ValueError(
            f"need 0 < test_fraction < 1 and 0 <= valid_fraction < 1, got {test_fraction}, {valid_fraction}"
        )
    lengths = log.sequence_lengths()
    n = lengths[log.user]
    position = np.arange(log.n_events, dtype=np.int64) - log.user_offsets[log.user]
    eligible = n >= 3
    n_test = np.where(eligible, np.ceil(n * test_fraction), 0).astype(np.int64)
    n_valid = np.where(eligible & (valid_fraction > 0), np.ceil((n - n_test) * valid_fraction), 0).astype(
        np.int64
    )
    test = position >= n - n_test
    valid = (position >= n - n_test - n_valid) & ~test
    return _split(log, valid, test, "user-last")


def k_core(log: InteractionLog, user_k: int, item_k: int) -> InteractionLog:
    """Keep the largest sub-log where every user has >= ``user_k`` and every item >= ``item_k`` events.

    Filters repeatedly until nothing changes (dropping an item can push a user below ``user_k``).
    Users left with no events are removed and the rest re-indexed contiguously (in their old order,
    with ``user_features`` sliced to match). The item catalogue is kept whole, items without events
    included, so item indices, item metadata and cached item encodings stay valid.
    """
    if user_k < 0 or item_k < 0:
        raise ValueError(f"user_k and item_k must be >= 0, got {user_k}, {item_k}")
    keep = np.ones(log.n_events, dtype=bool)
    while True:
        user_counts = np.bincount(log.user[keep], minlength=log.n_users)
        item_counts = np.bincount(log.item[keep], minlength=log.n_items)
        new_keep = keep & (user_counts[log.user] >= user_k) & (item_counts[log.item] >= item_k)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep

    kept_users = np.flatnonzero(np.bincount(log.user[keep], minlength=log.n_users) > 0)
    new_index = np.full(log.n_users, -1, dtype=np.int64)
    new_index[kept_users] = np.arange(len(kept_users), dtype=np.int64)
    user = new_index[log.user[keep]]
    offsets = np.zeros(len(kept_users) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=len(kept_users)), out=offsets[1:])
    return InteractionLog(
        name=log.name,
        user_raw_ids=log.user_raw_ids[kept_users],
        item_raw_ids=log.item_raw_ids,
        user=user,
        item=log.item[keep],
        rating=log.rating[keep],
        timestamp=log.timestamp[keep],
        user_offsets=offsets,
        items=log.items,
        user_features={name: values[kept_users] for name, values in log.user_features.items()},
        source=log.source,
    )
