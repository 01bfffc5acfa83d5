"""The typed structures every loader returns and every other part of recarena consumes.

An :class:`InteractionLog` holds events in CSR layout: events are sorted by (user, timestamp,
original file order), so user ``u``'s time-ordered sequence is the slice
``user_offsets[u]:user_offsets[u + 1]`` of the ``item``/``rating``/``timestamp`` arrays. Users and
items are contiguous indices ``0..n-1``; ``user_raw_ids``/``item_raw_ids`` map them back to the ids
in the source files. Splits keep the index space of the full log, so an item index means the same
item in train, validation and test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

MIN_RATING = 1.0
MAX_RATING = 5.0
"""The rating scale every simulator predicts on (MovieLens stars; logs without ratings count as 5)."""
LIKE_THRESHOLD = 4.0
"""Ratings at or above this count as a "like" (the usual MovieLens convention, 4-5 of 5 stars)."""


@dataclass(frozen=True)
class ItemMetadata:
    """Per-item metadata, one row per item index (items without events included).

    ``year`` is 0 where unknown; ``genres`` may be empty; ``text`` is any extra free text
    (a description, tags) and is "" where there is none.
    """

    title: list[str]
    year: np.ndarray  # int32 [n_items]
    genres: list[tuple[str, ...]]
    text: list[str]

    def __post_init__(self) -> None:
        n = len(self.title)
        if not (len(self.year) == len(self.genres) == len(self.text) == n):
            raise ValueError("ItemMetadata columns must all have one row per item")

    def __len__(self) -> int:
        return len(self.title)

    @property
    def genre_vocabulary(self) -> list[str]:
        """Sorted list of every genre that occurs."""
        return sorted({g for genres in self.genres for g in genres})

    def genre_matrix(self) -> np.ndarray:
        """Multi-hot float32 matrix [n_items, n_genres] over :attr:`genre_vocabulary`."""
        vocabulary = {g: i for i, g in enumerate(self.genre_vocabulary)}
        matrix = np.zeros((len(self), max(len(vocabulary), 1)), dtype=np.float32)
        for row, genres in enumerate(self.genres):
            for genre in genres:
                matrix[row, vocabulary[genre]] = 1.0
        return matrix


@dataclass(frozen=True)
class InteractionLog:
    """Time-ordered interaction events of many users, in CSR layout (see module docstring)."""

    name: str
    user_raw_ids: np.ndarray  # object (str) [n_users]
    item_raw_ids: np.ndarray  # object (str) [n_items]
    user: np.ndarray  # int64 [n_events], non-decreasing
    item: np.ndarray  # int64 [n_events]
    rating: np.ndarray  # float32 [n_events]; NaN where the log has no rating (implicit feedback)
    timestamp: np.ndarray  # int64 [n_events], seconds since the epoch
    user_offsets: np.ndarray  # int64 [n_users + 1]
    items: ItemMetadata
    user_features: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. age, gender, occupation
    source: str = ""

    def __repr__(self) -> str:
        """A one-line summary (the arrays would print thousands of numbers)."""
        return (
            f"InteractionLog(name={self.name!r}, n_users={self.n_users:,}, n_items={self.n_items:,}, "
            f"n_events={self.n_events:,}, ratings={'explicit' if self.has_ratings else 'none'})"
        )

    def __post_init__(self) -> None:
        n_events = len(self.user)
        if not (len(self.item) == len(self.rating) == len(self.timestamp) == n_events):
            raise ValueError("event arrays must have the same length")
        if len(self.user_offsets) != len(self.user_raw_ids) + 1:
            raise ValueError("user_offsets must have n_users + 1 entries")
        if len(self.items) != len(self.item_raw_ids):
            raise ValueError("items metadata must have one row per item id")

    @property
    def n_users(self) -> int:
        return len(self.user_raw_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_raw_ids)

    @property
    def n_events(self) -> int:
        return len(self.user)

    @property
    def has_ratings(self) -> bool:
        """True when every event carries an explicit rating."""
        return self.n_events > 0 and not bool(np.isnan(self.rating).any())

    @property
    def liked(self) -> np.ndarray:
        """Bool [n_events]: rating >= LIKE_THRESHOLD (every event counts as liked without ratings)."""
        if not self.has_ratings:
            return np.ones(self.n_events, dtype=bool)
        return self.rating >= LIKE_THRESHOLD

    def user_slice(self, user: int) -> slice:
        """Slice of the event arrays that holds user ``user``'s time-ordered events."""
        return slice(int(self.user_offsets[user]), int(self.user_offsets[user + 1]))

    def sequence_lengths(self) -> np.ndarray:
        """int64 [n_users]: events per user."""
        return np.diff(self.user_offsets)

    def item_counts(self) -> np.ndarray:
        """int64 [n_items]: events per item."""
        return np.bincount(self.item, minlength=self.n_items)

    def select_events(self, keep: np.ndarray, name: str | None = None) -> InteractionLog:
        """A log with only the events where ``keep`` is True, in the same user/item index space."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.n_events,):
            raise ValueError(f"keep mask must have shape ({self.n_events},), got {keep.shape}")
        user = self.user[keep]
        counts = np.bincount(user, minlength=self.n_users)
        offsets = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return InteractionLog(
            name=name or self.name,
            user_raw_ids=self.user_raw_ids,
            item_raw_ids=self.item_raw_ids,
            user=user,
            item=self.item[keep],
            rating=self.rating[keep],
            timestamp=self.timestamp[keep],
            user_offsets=offsets,
            items=self.items,
            user_features=self.user_features,
            source=self.source,
        )

    def fingerprint(self) -> str:
        """A short content hash of the events and ids, recorded in run directories."""
        digest = hashlib.sha256()
        for array in (self.user, self.item, self.rating, self.timestamp):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update("\x1f".join(map(str, self.item_raw_ids)).encode())
        digest.update("\x1f".join(map(str, self.user_raw_ids)).encode())
        return digest.hexdigest()[:16]

    def item_set_fingerprint(self) -> str:
        """Hash of the item catalogue alone (raw ids in index order): runs and data must agree on it."""
        return hashlib.sha256("\x1f".join(map(str, self.item_raw_ids)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LogSplit:
    """Train / validation / test logs over one index space, plus the protocol that made them."""

    train: InteractionLog
    valid: InteractionLog
    test: InteractionLog
    protocol: str  # "leave-last-out" or "temporal"
    full: InteractionLog
