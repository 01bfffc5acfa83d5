"""Sessions of a log and the leave hazard they show, for the ``sessions`` leave model.

A log's sessions are each user's events split where consecutive events lie more than ``gap``
seconds apart. Every logged event is a chosen item, so the logs say how often a session ends right
after a chosen item, by how far into the session it was and whether it was liked: the discrete-time
hazard ``h(position, liked)`` = sessions ended after such an event / such events, a piecewise-
constant maximum-likelihood fit over position buckets. Logs hold no exposures, so they say nothing
about steps where nothing was chosen: the simulator's patience rule covers those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recarena.data.interactions import InteractionLog

SESSION_GAP_SECONDS = 3600
"""Default gap (1 hour) between a user's consecutive events that starts a new session."""

POSITION_EDGES = (1, 5, 20, 50, 200)
"""Bucket edges of the position in the session (0-based): [0], [1, 5), [5, 20), [20, 50), [50, 200), [200, ...)."""

MIN_CELL_EVENTS = 50
"""A (bucket, liked) cell with fewer events takes its bucket's pooled rate; a bucket with fewer, the
previous bucket's rates."""


def session_starts(log: InteractionLog, gap: int = SESSION_GAP_SECONDS) -> np.ndarray:
    """Bool [n_events]: the event starts a session (a user's first event, or > ``gap`` s after the previous)."""
    if gap < 0:
        raise ValueError(f"the session gap must be >= 0 seconds, got {gap}")
    new_session = np.ones(log.n_events, dtype=bool)
    new_session[1:] = (log.user[1:] != log.user[:-1]) | (np.diff(log.timestamp) > gap)
    return new_session


def session_positions(new_session: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each event in its session, 0-based; whether it is its session's last event)."""
    n = len(new_session)
    index = np.arange(n)
    start = np.maximum.accumulate(np.where(new_session, index, 0)) if n else index
    last = np.ones(n, dtype=bool)
    last[:-1] = new_session[1:]
    return index - start, last


@dataclass
class SessionHazard:
    """Probability of ending the session right after a chosen item, per position bucket and like.

    ``table`` float64 [len(POSITION_EDGES) + 1, 2]: column 0 not liked, column 1 liked. ``info``
    records the counts and settings (what a run writes into its ``choice_fit``)."""

    table: np.ndarray
    edges: tuple[int, ...] = POSITION_EDGES
    info: dict[str, Any] = field(default_factory=dict)


def fit_session_hazard(log: InteractionLog, gap: int = SESSION_GAP_SECONDS, edges: tuple[int, ...] = POSITION_EDGES,
                       min_events: int = MIN_CELL_EVENTS) -> SessionHazard:
    """The maximum-likelihood piecewise-constant hazard of ``log``'s sessions (module docstring); a
    cell with fewer than ``min_events`` events falls back as :data:`MIN_CELL_EVENTS` says.

    Raises ValueError when the log has no events."""
    if log.n_events == 0:
        raise ValueError(f"the log '{log.name}' has no events to fit the session hazard on")
    new_session = session_starts(log, gap)
    position, last = session_positions(new_session)
    bucket = np.searchsorted(np.asarray(edges), position, side="right")
    liked = log.liked.astype(np.int64)
    n_buckets = len(edges) + 1
    events = np.zeros((n_buckets, 2), dtype=np.int64)
    ends = np.zeros((n_buckets, 2), dtype=np.int64)
    np.add.at(events, (bucket, liked), 1)
    np.add.at(ends, (bucket, liked), last.astype(np.int64))
    table = np.zeros((n_buckets, 2), dtype=np.float64)
    overall = float(last.mean())
    for b in range(n_buckets):
        bucket_events = int(events[b].sum())
        if bucket_events < min_events:
            table[b] = table[b - 1] if b > 0 else overall
            continue
        pooled = ends[b].sum() / bucket_events
        for column in (0, 1):
            table[b, column] = ends[b, column] / events[b, column] if events[b, column] >= min_events else pooled
    info = {
        "gap_seconds": int(gap),
        "position_edges": list(edges),
        "sessions": int(new_session.sum()),
        "events": int(log.n_events),
        "hazard_not_liked": [round(float(v), 6) for v in table[:, 0]],
        "hazard_liked": [round(float(v), 6) for v in table[:, 1]],
        "events_not_liked": events[:, 0].tolist(),
        "events_liked": events[:, 1].tolist(),
    }
    return SessionHazard(table, tuple(edges), info)
