"""Tiny structured logs for the choice-model tests (no MovieLens files).

Users live in one of ``n_groups`` groups of items and walk a cycle through their group's items:
the next item is always "the current one + 1 within the group", so the next choice is known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests._eval_fixtures import make_log

N_GROUPS = 3
GROUP_SIZE = 12
N_ITEMS = N_GROUPS * GROUP_SIZE
QUICK_SEQUENCE = {"dim": 16, "window": 8, "epochs": 60, "lr": 0.02, "patience": 4, "dropout": 0.0}
"""A next-item network that fits the tiny logs in about a second."""
WINDOW4 = {"sequence": {**QUICK_SEQUENCE, "window": 4}}
"""The learned choice with a GRU window of 4: resets read both from the user's first item and a sliding window."""


def group_of(item: int) -> int:
    return item // GROUP_SIZE


def next_in_group(item: int) -> int:
    group = group_of(item)
    return group * GROUP_SIZE + (item - group * GROUP_SIZE + 1) % GROUP_SIZE


def cycle_sequences(n_users: int = 60, seed: int = 0, test_item: int | None = None, n_items: int = N_ITEMS) -> list[list[tuple[int, float]]]:
    """(item, rating) sequences of 8-11 events (no repeats); ``test_item`` replaces every user's last event."""
    rng = np.random.default_rng(seed)
    sequences = []
    for u in range(n_users):
        group = u % N_GROUPS
        item = group * GROUP_SIZE + int(rng.integers(GROUP_SIZE))
        events = []
        for _ in range(int(rng.integers(8, 12))):
            events.append((item, float(rng.integers(3, 6))))
            item = next_in_group(item)
        if test_item is not None:
            events[-1] = (test_item, 5.0)
        sequences.append(events)
    return sequences


def cycle_log(n_users: int = 60, seed: int = 0, test_item: int | None = None, n_items: int = N_ITEMS, implicit: bool = False):
    log = make_log(cycle_sequences(n_users, seed, test_item, n_items), n_items, name="cycles")
    if implicit:
        log.rating[:] = np.nan
    return log


def popularity_log(n_users: int = 80, n_items: int = 30, seed: int = 0):
    """Histories of 8-12 distinct items drawn in proportion to a skewed popularity (ratings 3-5)."""
    rng = np.random.default_rng(seed)
    popularity = np.arange(n_items, 0, -1, dtype=float) ** 2
    sequences = []
    for _ in range(n_users):
        items = rng.choice(n_items, size=int(rng.integers(8, 13)), replace=False, p=popularity / popularity.sum())
        sequences.append([(int(i), float(rng.integers(3, 6))) for i in items])
    return make_log(sequences, n_items, name="popular")


def group_embeddings(n_items: int = N_ITEMS, dim: int = 8, seed: int = 0) -> torch.Tensor:
    """Item "text" encodings: a group direction plus a little noise (items past the groups get group i % 3)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(N_GROUPS, dim, generator=g)
    groups = torch.tensor([min(i // GROUP_SIZE, N_GROUPS - 1) if i < N_GROUPS * GROUP_SIZE else i % N_GROUPS for i in range(n_items)])
    return torch.nn.functional.normalize(centres[groups] + 0.1 * torch.randn(n_items, dim, generator=g), dim=1)


class TableModel:
    """A stand-in preference model: a fixed rating table [n_users, n_items]."""

    def __init__(self, ratings: torch.Tensor) -> None:
        self.ratings = ratings
        self.n_users = ratings.shape[0]

    def predict(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.ratings[user.unsqueeze(1), items]

    def predict_all(self, user: torch.Tensor) -> torch.Tensor:
        return self.ratings[user]


def in_group_ratings(n_users: int, n_items: int = N_ITEMS) -> torch.Tensor:
    """4.5 for the user's own group's items, 2.0 elsewhere."""
    user_group = torch.arange(n_users) % N_GROUPS
    item_group = torch.tensor([group_of(i) for i in range(n_items)])
    return torch.where(user_group.unsqueeze(1) == item_group.unsqueeze(0), 4.5, 2.0)


def write_ratings_folder(folder: Path, sequences: list[list[tuple[int, float]]], n_items: int = N_ITEMS) -> Path:
    """A MovieLens-style ratings.csv / movies.csv folder of the sequences."""
    log = make_log(sequences, n_items)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{u + 1},{i + 1},{r:.1f},{t}" for u, i, r, t in zip(log.user, log.item, log.rating, log.timestamp, strict=True)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    genres = ["Comedy", "Drama", "Horror"]
    movies = ["movieId,title,genres"] + [f"{i + 1},Film {i + 1} (1990),{genres[min(group_of(i), 2)]}" for i in range(n_items)]
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    return folder
