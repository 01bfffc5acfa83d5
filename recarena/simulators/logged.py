"""Logged users: simulated users that start from, and answer from, real logged histories ("logged").

A session starts from a real user's history prefix in the training log (``sampler`` options). When
the recommended item is one that user really rated *later* in the log (after the prefix), the
response is the logged rating ("logged-first" mode); elsewhere - and everywhere in "model-only"
mode - the fitted LLM-derived preference model (:mod:`recarena.simulators.preference`) answers. Boredom
applies to both. The share of logged vs modelled responses is counted
(:meth:`LoggedUserSimulator.statistics`) and each step reports it per user (``StepOutcome.from_log``).

The (user, item) -> (logged rating, position) lookup is a sorted int64 key array
``user * n_items + item`` searched with ``torch.searchsorted``, on the simulator's device. Where a
user rated an item twice, the earliest event is used.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Literal

import numpy as np
import torch

from recarena.core.config import config_dataclass, from_dict
from recarena.core.errors import ConfigError
from recarena.data.interactions import InteractionLog, LogSplit
from recarena.simulators.base import UserState
from recarena.simulators.behaviour import (
    MAX_RATING,
    BehaviourConfig,
    UserSampler,
    item_topics_from_genres,
    kmeans_topics,
)
from recarena.simulators.composed import ComposedSimulator
from recarena.simulators.preference import PreferenceConfig, PreferenceModel, fit_preference_model
from recarena.simulators.registry import register


@config_dataclass
class LoggedConfig(BehaviourConfig):
    """Options of the logged-user simulator (plus the shared behaviour options)."""

    mode: Literal["logged-first", "model-only"] = "logged-first"
    """Answer from the log where the user really rated the item later, or always from the model."""
    preference_path: str | None = None
    """Directory of a saved PreferenceModel; None fits one on the training log (``preference``)."""
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    """How to fit the preference model when no ``preference_path`` (or model object) is given."""
    encoder: dict[str, Any] = field(default_factory=dict)
    """``recarena.llm.EncoderConfig`` options for the item encodings when none are given (default MiniLM)."""
    cache_dir: str | None = None
    """Embedding cache directory (default ``$RECARENA_CACHE``)."""
    rating_table: Literal["auto", "always", "never"] = "auto"
    """Precompute the model's ratings of every (user, item) into a dense table, so a step is a
    gather: the model is frozen and depends only on (user, item), so this is exact. "auto" does
    it when the table has at most ``RATING_TABLE_LIMIT`` entries (ML-1M: 22.4M, 90 MB)."""


RATING_TABLE_LIMIT = 64_000_000


class LogLookup:
    """(user, item) -> (found, position in the user's sequence, logged rating), batched on device."""

    def __init__(self, log: InteractionLog, device: torch.device) -> None:
        self.n_items = log.n_items
        position = np.arange(log.n_events, dtype=np.int64) - log.user_offsets[log.user]
        keys = log.user.astype(np.int64) * log.n_items + log.item.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        rating = np.nan_to_num(log.rating.astype(np.float32), nan=MAX_RATING)
        self.keys = torch.as_tensor(keys[order], device=device)
        self.position = torch.as_tensor(position[order], device=device)
        self.rating = torch.as_tensor(rating[order], device=device)

    def __call__(self, user: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.keys.numel() == 0:
            none = torch.zeros_like(items, dtype=torch.bool)
            return none, torch.zeros_like(items), torch.zeros_like(items, dtype=torch.float32)
        query = user.unsqueeze(1) * self.n_items + items
        index = torch.searchsorted(self.keys, query).clamp(max=self.keys.numel() - 1)
        found = torch.take(self.keys, index) == query
        return found, torch.take(self.position, index), torch.take(self.rating, index)


def _train_log(data: Any) -> InteractionLog:
    if isinstance(data, LogSplit):
        return data.train
    if isinstance(data, InteractionLog):
        return data
    if isinstance(data, str):
        from recarena.data.logs import load_logs
        from recarena.data.splits import leave_last_out

        return leave_last_out(load_logs(data)).train
    raise ConfigError(
        "the logged simulator needs data: an InteractionLog (training log), a LogSplit, or a "
        f"load_logs source name; got {type(data).__name__}"
    )


@register("logged")
class LoggedUserSimulator(ComposedSimulator):
    """Users who start from real history prefixes and answer from the log, else from the model."""

    config_class = LoggedConfig

    def __init__(
        self,
        config: LoggedConfig | None = None,
        data: Any = None,
        device: torch.device | str = "cpu",
        preference_model: Any = None,
        item_embeddings: torch.Tensor | None = None,
    ) -> None:
        config = config or LoggedConfig()
        log = _train_log(data)
        device = torch.device(device)
        if log.n_events == 0:
            raise ConfigError(f"the log '{log.name}' has no events to start sessions from")
        if item_embeddings is None and isinstance(preference_model, PreferenceModel) and preference_model.item_text.shape[1]:
            item_embeddings = preference_model.item_text
        if item_embeddings is None:
            item_embeddings = self._encode_items(log, config)
        item_embeddings = torch.as_tensor(item_embeddings, dtype=torch.float32)
        if item_embeddings.shape[0] != log.n_items:
            raise ConfigError(f"item_embeddings has {item_embeddings.shape[0]} rows, the log has {log.n_items} items")
        if preference_model is None:
            if config.preference_path is not None:
                preference_model = PreferenceModel.load(config.preference_path, map_location=device, log=log)
            else:
                preference_model = fit_preference_model(log, item_embeddings, config.preference)
        if hasattr(preference_model, "to"):
            preference_model = preference_model.to(device)
        if hasattr(preference_model, "eval"):
            preference_model.eval()
        self.preference_model = preference_model

        sampler = UserSampler(
            config.sampler,
            torch.as_tensor(log.user_offsets),
            torch.as_tensor(log.item),
            torch.as_tensor(log.rating),
            log.n_items,
            device,
        )
        topics = item_topics_from_genres(log.items.genre_matrix())
        if config.interest.topics == "kmeans" or not bool(topics.any()):
            topics = kmeans_topics(item_embeddings, config.interest.n_clusters, seed=config.preference.seed)
        super().__init__(config, sampler=sampler, item_topics=topics, item_embeddings=item_embeddings, device=device)
        self.log = log
        self.data_fingerprint = log.fingerprint()
        self.lookup = LogLookup(log, self.device)
        self.rating_table = self._rating_table(log.n_users) if self._wants_table(log.n_users) else None

    def _wants_table(self, n_users: int) -> bool:
        if self.config.rating_table == "never" or not hasattr(self.preference_model, "predict_all"):
            if self.config.rating_table == "always":
                raise ConfigError("rating_table='always' needs a preference model with predict_all(user)")
            return False
        return self.config.rating_table == "always" or n_users * self.n_items <= RATING_TABLE_LIMIT

    @torch.no_grad()
    def _rating_table(self, n_users: int, chunk: int = 1024) -> torch.Tensor:
        """Float32 [n_users, n_items]: the preference model's rating of every item by every user."""
        table = torch.empty((n_users, self.n_items), dtype=torch.float32, device=self.device)
        for start in range(0, n_users, chunk):
            users = torch.arange(start, min(start + chunk, n_users), device=self.device)
            table[start : start + len(users)] = self.preference_model.predict_all(users).to(self.device, torch.float32)
        return table

    @staticmethod
    def _encode_items(log: InteractionLog, config: LoggedConfig) -> torch.Tensor:
        from recarena.llm.encoder import EncoderConfig, encode_items

        return encode_items(log.items, from_dict(EncoderConfig, config.encoder, prefix="encoder."), config.cache_dir)

    def rate(self, state: UserState, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            model = self.preference_model
            if self.rating_table is not None:
                predicted = torch.take(self.rating_table, state.user.unsqueeze(1) * self.n_items + slate)
            elif isinstance(model, PreferenceModel) and not model.training:
                predicted = model.predict(state.user, slate, check=False)  # the caller validated the indices
            else:
                predicted = model.predict(state.user, slate)
        predicted = predicted.to(device=self.device, dtype=torch.float32)
        if self.config.mode == "model-only":
            return predicted, torch.zeros_like(slate, dtype=torch.bool)
        found, position, logged = self.lookup(state.user, slate)
        from_log = found & (position >= state.prefix_length.unsqueeze(1))
        return torch.where(from_log, logged, predicted), from_log
