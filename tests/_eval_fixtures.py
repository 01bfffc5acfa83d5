"""Tiny hand-built logs and agents shared by the evaluation tests (no MovieLens files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recarena.agents.base import Agent
from recarena.data.interactions import InteractionLog, ItemMetadata, LogSplit


def make_log(sequences: list[list[tuple[int, float]]], n_items: int, name: str = "tiny") -> InteractionLog:
    """A log where user u's events are ``sequences[u]`` (item, rating) at times 100*u + position."""
    user, item, rating, timestamp = [], [], [], []
    for u, events in enumerate(sequences):
        for position, (i, r) in enumerate(events):
            user.append(u)
            item.append(i)
            rating.append(r)
            timestamp.append(1000 + 100 * u + position)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sequences], out=offsets[1:])
    items = ItemMetadata(
        title=[f"Item {i}" for i in range(n_items)],
        year=np.zeros(n_items, dtype=np.int32),
        genres=[("Drama",) if i % 2 else ("Comedy",) for i in range(n_items)],
        text=["" for _ in range(n_items)],
    )
    return InteractionLog(
        name=name,
        user_raw_ids=np.array([str(u + 1) for u in range(len(sequences))], dtype=object),
        item_raw_ids=np.array([str(i + 1) for i in range(n_items)], dtype=object),
        user=np.array(user, dtype=np.int64),
        item=np.array(item, dtype=np.int64),
        rating=np.array(rating, dtype=np.float32),
        timestamp=np.array(timestamp, dtype=np.int64),
        user_offsets=offsets,
        items=items,
    )


def last_out_split(log: InteractionLog) -> LogSplit:
    """Leave-last-out by hand: last event -> test, second last -> valid, the rest -> train."""
    position = np.arange(log.n_events) - log.user_offsets[log.user]
    length = np.diff(log.user_offsets)[log.user]
    test = position == length - 1
    valid = position == length - 2
    return LogSplit(
        train=log.select_events(~test & ~valid),
        valid=log.select_events(valid),
        test=log.select_events(test),
        protocol="leave-last-out",
        full=log,
    )


# Five users over six items. Under leave-last-out the queries are (consumed -> target):
# u0 {0,1,2} -> 3, u1 {4,0} -> 5, u2 {2,3,1} -> 0, u3 {5,4} -> 2, u4 {0,1} -> 3.
TINY_SEQUENCES = [
    [(0, 5.0), (1, 4.0), (2, 3.0), (3, 5.0)],
    [(4, 2.0), (0, 5.0), (5, 4.0)],
    [(2, 3.0), (3, 3.0), (1, 4.0), (0, 2.0)],
    [(5, 1.0), (4, 4.0), (2, 4.0)],
    [(0, 4.0), (1, 4.0), (3, 1.0)],
]


class FixedScoresAgent(Agent):
    """Scores every user's items with the same vector (hand-computable rankings)."""

    name = "fixed"

    def __init__(self, scores: list[float]) -> None:
        self.vector = torch.tensor(scores, dtype=torch.float32)
        self.n_items = len(scores)

    def scores(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.vector.expand(observation["history"].shape[0], -1).clone()

    def save(self, directory: str | Path) -> None:  # pragma: no cover - not used
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | Path) -> Agent:  # pragma: no cover - not used
        raise NotImplementedError


class ContentAgent(Agent):
    """Scores items by cosine similarity of their encoding to the observation's llm_state."""

    name = "content"

    def __init__(self, item_embeddings: torch.Tensor) -> None:
        self.embeddings = item_embeddings.to(torch.float32)
        self.n_items = int(item_embeddings.shape[0])

    def scores(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        return observation["llm_state"].to(torch.float32) @ self.embeddings.to(observation["llm_state"].device).T

    def save(self, directory: str | Path) -> None:  # pragma: no cover - not used
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | Path) -> Agent:  # pragma: no cover - not used
        raise NotImplementedError


def random_embeddings(n_items: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n_items, dim, generator=generator), dim=1)
