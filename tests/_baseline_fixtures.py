"""Tiny item-id logs and observations shared by the baseline agent tests (test_baselines.py,
test_sequence_encoder.py). Unlike tests/_eval_fixtures.make_log, sequences are item ids alone
(ratings optional, 5.0 by default) at timestamps 0, 1, 2, ...; raw ids start at 0."""

from __future__ import annotations

import numpy as np
import torch

from recarena.data.interactions import InteractionLog, ItemMetadata
from recarena.envs.observation import build_observation, left_pad_histories


def make_log(sequences: list[list[int]], n_items: int, ratings: list[list[float]] | None = None) -> InteractionLog:
    """A tiny InteractionLog: user u's events are ``sequences[u]`` in time order."""
    users = np.concatenate([np.full(len(s), u, dtype=np.int64) for u, s in enumerate(sequences)])
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
    if ratings is None:
        rating = np.full(len(items), 5.0, dtype=np.float32)
    else:
        rating = np.concatenate([np.asarray(r, dtype=np.float32) for r in ratings])
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sequences], out=offsets[1:])
    meta = ItemMetadata([f"item {i}" for i in range(n_items)], np.zeros(n_items, np.int32), [()] * n_items, [""] * n_items)
    return InteractionLog(
        name="tiny",
        user_raw_ids=np.array([str(u) for u in range(len(sequences))], dtype=object),
        item_raw_ids=np.array([str(i) for i in range(n_items)], dtype=object),
        user=users, item=items, rating=rating, timestamp=np.arange(len(items), dtype=np.int64),
        user_offsets=offsets, items=meta,
    )


def observation(histories: list[list[int]], history_length: int, n_items: int, dim: int = 4) -> dict[str, torch.Tensor]:
    """The observation of ``histories`` (every response 4.0) left-padded to ``history_length``, with fixed random
    unit item embeddings of size ``dim``."""
    history, responses = left_pad_histories(
        [np.asarray(h, dtype=np.int64) for h in histories], [np.full(len(h), 4.0) for h in histories], history_length
    )
    embeddings = torch.nn.functional.normalize(torch.randn(n_items, dim, generator=torch.Generator().manual_seed(0)), dim=1)
    return build_observation(history, responses, embeddings)
