"""Held-out events with the real history before each: the queries every offline protocol scores.

A :class:`EvalQueries` merges a split's train, validation and test events back into one
time-ordered sequence per user. Each query is one held-out (test) event: the user's real history is
every event of that user before it, and the target is the logged item. Replay, full ranking and the
off-policy estimators all build their observations from these queries with the same
``recarena.envs.observation.build_observation`` that training uses, so a policy sees in evaluation exactly
what it sees in simulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recarena.data.interactions import LIKE_THRESHOLD, LogSplit
from recarena.envs.observation import MAX_RESPONSE, build_observation


@dataclass(frozen=True)
class EvalQueries:
    """Held-out events (queries) over merged per-user sequences.

    ``seq_item``/``seq_rating`` hold every event of the split, sorted by (user, time, split order);
    query ``q`` predicts ``seq_item[position[q]]`` from ``seq_item[start[q]:position[q]]``.
    """

    protocol: str
    n_items: int
    seq_item: np.ndarray  # int64 [E]
    seq_rating: np.ndarray  # float32 [E], NaN for implicit feedback
    user: np.ndarray  # int64 [Q]
    start: np.ndarray  # int64 [Q]: first event of the query's user in seq_*
    position: np.ndarray  # int64 [Q]: the held-out event in seq_*

    def __len__(self) -> int:
        return len(self.position)

    @property
    def target(self) -> np.ndarray:
        return self.seq_item[self.position]

    @property
    def rating(self) -> np.ndarray:
        return self.seq_rating[self.position]

    @property
    def n_users(self) -> int:
        return len(np.unique(self.user))

    def reward(self, kind: str = "like") -> np.ndarray:
        """Float64 [Q] logged reward of each query: ``like`` (rating >= 4; 1 without ratings) or ``rating``."""
        rating = self.rating.astype(np.float64)
        if kind == "like":
            return np.where(np.isnan(rating), 1.0, (rating >= LIKE_THRESHOLD).astype(np.float64))
        if kind == "rating":
            return np.where(np.isnan(rating), MAX_RESPONSE, rating)
        raise ValueError(f"reward must be 'like' or 'rating', got {kind!r}")

    def subset(self, index: np.ndarray) -> EvalQueries:
        """The queries at ``index`` (same merged sequences)."""
        return EvalQueries(
            self.protocol, self.n_items, self.seq_item, self.seq_rating,
            self.user[index], self.start[index], self.position[index],
        )


def build_queries(split: LogSplit, max_users: int | None = None, seed: int = 0) -> EvalQueries:
    """Every test event of ``split`` as a query, with the user's train + valid + earlier test events as history.

    ``max_users`` keeps a random (seeded) subset of the test users, for quick runs.
    """
    parts = [split.train, split.valid, split.test]
    user = np.concatenate([p.user for p in parts])
    item = np.concatenate([p.item for p in parts])
    rating = np.concatenate([p.rating for p in parts]).astype(np.float32)
    timestamp = np.concatenate([p.timestamp for p in parts])
    source = np.concatenate([np.full(p.n_events, i, dtype=np.int8) for i, p in enumerate(parts)])
    # Stable sort by (user, time, split order): ties in time keep train < valid < test, and the
    # file order inside each part (lexsort is stable).
    order = np.lexsort((source, timestamp, user))
    user, item, rating, source = user[order], item[order], rating[order], source[order]
    n_users = split.full.n_users
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=n_users), out=offsets[1:])

    position = np.flatnonzero(source == 2).astype(np.int64)
    query_user = user[position]
    if max_users is not None and max_users < len(np.unique(query_user)):
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {max_users}")
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(np.unique(query_user), size=max_users, replace=False))
        keep = np.isin(query_user, chosen)
        position, query_user = position[keep], query_user[keep]
    return EvalQueries(
        protocol=split.protocol,
        n_items=split.full.n_items,
        seq_item=item.astype(np.int64),
        seq_rating=rating,
        user=query_user.astype(np.int64),
        start=offsets[query_user],
        position=position,
    )


@dataclass
class QueryBatch:
    """Tensors for a batch of queries: the observation, the consumed-item mask and the target."""

    observation: dict[str, torch.Tensor]
    consumed: torch.Tensor  # bool [b, n_items]: items in the user's history (target excluded)
    target: torch.Tensor  # int64 [b]


def query_batch(
    queries: EvalQueries,
    index: np.ndarray,
    history_length: int,
    item_embeddings: torch.Tensor,
    device: torch.device | str = "cpu",
) -> QueryBatch:
    """Build the observation (last ``history_length`` events) and consumed mask (all events) for ``index``."""
    if history_length < 1:
        raise ValueError(f"history_length must be >= 1, got {history_length}")
    start = queries.start[index]
    position = queries.position[index]
    b = len(index)
    # Left-padded window of the last H events before each query.
    window = position[:, None] - history_length + np.arange(history_length)[None, :]
    valid = window >= start[:, None]
    safe = np.where(valid, window, 0)
    history = np.where(valid, queries.seq_item[safe], -1)
    responses = np.where(valid, np.nan_to_num(queries.seq_rating[safe], nan=MAX_RESPONSE), 0.0)
    # Every item consumed before the query (not only the window).
    lengths = position - start
    rows = np.repeat(np.arange(b), lengths)
    first = np.repeat(start - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    events = first + np.arange(int(lengths.sum()))
    consumed = torch.zeros((b, queries.n_items), dtype=torch.bool)
    consumed[torch.as_tensor(rows), torch.as_tensor(queries.seq_item[events])] = True
    target = torch.as_tensor(queries.seq_item[position], dtype=torch.int64)
    consumed[torch.arange(b), target] = False  # a re-consumed target stays rankable
    device = torch.device(device)
    observation = build_observation(
        torch.as_tensor(history, dtype=torch.int64, device=device),
        torch.as_tensor(responses, dtype=torch.float32, device=device),
        item_embeddings.to(device),
    )
    # The logged user's index, for agents that model known users (the greedy baseline); others ignore it.
    observation["user"] = torch.as_tensor(queries.user[index], dtype=torch.int64, device=device)
    return QueryBatch(observation, consumed.to(device), target.to(device))


def batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Consecutive index chunks of at most ``batch_size`` covering ``range(n)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
