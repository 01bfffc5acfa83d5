"""Non-RL baselines behind the common :class:`recarena.agents.base.Agent` interface.

* :class:`RandomAgent` - uniform random items (respecting the action mask).
* :class:`MostPopularAgent` - items ranked by their training-log counts.
* :class:`GreedyAgent` - myopic: the simulator's preference model's predicted rating of each item.
* :class:`SequenceModelAgent` (``sasrec``) and :class:`GRU4RecAgent` (``gru4rec``) - the causal
  sequence encoder of :mod:`recarena.agents.sequence_encoder` (a transformer, or a GRU) trained on
  next-item prediction: the strong non-RL references for ranking.

Scores of items already in the observed history are ``-inf`` where a config's ``exclude_history``
is on (the default for the ranking baselines): re-recommending a watched film is never useful in
the logs' protocols, and the env's action mask excludes consumed items anyway.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol

import numpy as np
import torch
from pydantic import Field

from recarena.agents.base import Agent, Observation
from recarena.agents.next_item_training import fit_next_item, pca_initialisation, sequence_windows
from recarena.agents.sequence_encoder import SequenceEncoder, SequenceEncoderConfig
from recarena.agents.serialization import (
    generator_state,
    load_agent_files,
    require_tensors,
    save_agent_files,
    set_generator_state,
)
from recarena.core.config import config_dataclass, from_dict
from recarena.core.errors import CheckpointError, ConfigError
from recarena.core.seeding import resolve_device, torch_generator
from recarena.data.interactions import InteractionLog
from recarena.envs.observation import history_item_mask

NEG_INF = float("-inf")


def _exclude_history(scores: torch.Tensor, observation: Observation) -> torch.Tensor:
    history = observation["history"].to(scores.device)
    return scores.masked_fill(history_item_mask(history, scores.shape[1]), NEG_INF)


def _check_n_items(n_items: int) -> int:
    if not isinstance(n_items, int) or n_items < 1:
        raise ConfigError(f"n_items must be a positive integer, got {n_items!r}")
    return n_items


def _check_log(log: InteractionLog, n_items: int, who: str) -> None:
    if log.n_items != n_items:
        raise ValueError(f"{who}: the log has {log.n_items} items but the agent was built for {n_items}")
    if log.n_events == 0:
        raise ValueError(f"{who}: the log has no events to fit on")


# ----------------------------------------------------------------------------------------- random


@config_dataclass
class RandomConfig:
    """Options of the random baseline."""

    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    """Seed of the agent's own torch generator (scores are fresh uniform draws each call)."""


class RandomAgent(Agent):
    """Scores every item with a fresh uniform draw, so ``act`` picks k distinct allowed items uniformly."""

    name: ClassVar[str] = "random"
    config_class: ClassVar[type] = RandomConfig

    def __init__(self, n_items: int, config: RandomConfig | None = None) -> None:
        self.n_items = _check_n_items(n_items)
        self.config = config or RandomConfig()
        self.generator = torch_generator(self.config.seed)

    def scores(self, observation: Observation) -> torch.Tensor:
        history = observation["history"]
        draws = torch.rand((history.shape[0], self.n_items), generator=self.generator)
        return draws.to(history.device)

    def save(self, directory: str | Path) -> None:
        save_agent_files(
            directory, self.name, self.config, {"generator": generator_state(self.generator)},
            {"n_items": self.n_items},
        )

    @classmethod
    def load(cls, directory: str | Path) -> RandomAgent:
        config, tensors, extra = load_agent_files(directory, cls.name)
        agent = cls(int(extra["n_items"]), from_dict(RandomConfig, config))
        require_tensors(tensors, ["generator"], directory)
        set_generator_state(agent.generator, tensors["generator"])
        return agent


# ----------------------------------------------------------------------------------- most popular


@config_dataclass
class MostPopularConfig:
    """Options of the most-popular baseline."""

    count: Literal["all", "liked"] = "all"
    """Count every training event, or only liked ones (rating >= 4)."""
    exclude_history: bool = True
    """Score items in the observed history -inf."""


class MostPopularAgent(Agent):
    """Ranks items by how often they occur in the training log (ties: lower item index first).

    Scores are ``(n_items - rank) / n_items``, so the order is exact and tie-free in float32 for any
    count size; :attr:`counts` keeps the raw counts.
    """

    name: ClassVar[str] = "most_popular"
    config_class: ClassVar[type] = MostPopularConfig

    def __init__(self, n_items: int, config: MostPopularConfig | None = None) -> None:
        self.n_items = _check_n_items(n_items)
        self.config = config or MostPopularConfig()
        self.counts: torch.Tensor | None = None
        self._item_scores: torch.Tensor | None = None

    def fit(self, train_log: InteractionLog) -> MostPopularAgent:
        """Count the events (or liked events) of ``train_log`` per item."""
        _check_log(train_log, self.n_items, "MostPopularAgent.fit")
        items = train_log.item if self.config.count == "all" else train_log.item[train_log.liked]
        self.set_counts(torch.as_tensor(np.bincount(items, minlength=self.n_items), dtype=torch.int64))
        return self

    def set_counts(self, counts: torch.Tensor) -> None:
        """Use ``counts`` (int [n_items]) directly, e.g. counts gathered elsewhere."""
        counts = torch.as_tensor(counts, dtype=torch.int64).cpu()
        if counts.shape != (self.n_items,) or bool((counts < 0).any()):
            raise ValueError(f"counts must be non-negative integers of shape ({self.n_items},)")
        self.counts = counts
        order = torch.argsort(-counts, stable=True)  # most frequent first, ties by index
        rank = torch.empty_like(order)
        rank[order] = torch.arange(self.n_items)
        self._item_scores = (self.n_items - rank).to(torch.float32) / self.n_items

    def scores(self, observation: Observation) -> torch.Tensor:
        if self._item_scores is None:
            raise RuntimeError("MostPopularAgent has no counts: call fit(train_log) first")
        history = observation["history"]
        scores = self._item_scores.to(history.device).expand(history.shape[0], -1).clone()
        return _exclude_history(scores, observation) if self.config.exclude_history else scores

    def save(self, directory: str | Path) -> None:
        if self.counts is None:
            raise RuntimeError("MostPopularAgent has no counts to save: call fit(train_log) first")
        save_agent_files(directory, self.name, self.config, {"counts": self.counts}, {"n_items": self.n_items})

    @classmethod
    def load(cls, directory: str | Path) -> MostPopularAgent:
        config, tensors, extra = load_agent_files(directory, cls.name)
        agent = cls(int(extra["n_items"]), from_dict(MostPopularConfig, config))
        require_tensors(tensors, ["counts"], directory)
        try:
            agent.set_counts(tensors["counts"])
        except ValueError as error:
            raise CheckpointError(f"{directory}: {error}") from error
        return agent


# ----------------------------------------------------------------------------------------- greedy


class UserPreferences(Protocol):
    """What the greedy baseline needs of a preference model (``recarena.simulators.preference.PreferenceModel``
    has it): predicted ratings of every item for logged users. A ``predict_history(history,
    responses) -> [B, n_items]`` method, where present, answers users without an identity."""

    n_users: int

    def predict_all(self, user: torch.Tensor) -> torch.Tensor: ...


class RatingTable:
    """A :class:`UserPreferences` over a dense rating table [n_users, n_items] (e.g. the synthetic
    simulator's ``true_ratings``)."""

    def __init__(self, ratings: torch.Tensor) -> None:
        if ratings.dim() != 2:
            raise ValueError(f"ratings must be [n_users, n_items], got shape {tuple(ratings.shape)}")
        self.ratings = ratings.to(torch.float32)
        self.n_users = int(ratings.shape[0])

    def predict_all(self, user: torch.Tensor) -> torch.Tensor:
        return self.ratings[user.to(self.ratings.device)]


def preferences_of(simulator: Any) -> UserPreferences:
    """The preference model of a simulator: its ``preference_model`` or, for the synthetic
    simulator, a :class:`RatingTable` of its true ratings."""
    model = getattr(simulator, "preference_model", None)
    if model is not None:
        return model
    ratings = getattr(simulator, "true_ratings", None)
    if ratings is not None:
        return RatingTable(ratings)
    raise TypeError(f"{type(simulator).__name__} exposes neither preference_model nor true_ratings")


@config_dataclass
class GreedyConfig:
    """Options of the myopic greedy baseline."""

    exclude_history: bool = True
    """Score items in the observed history -inf."""
    model_dir: str | None = None
    """A saved ``PreferenceModel`` directory to load the model from in :meth:`GreedyAgent.load`
    when no ``preference_model`` is passed."""
    user_chunk: Annotated[int, Field(ge=1)] = 1024
    """Users per batch when averaging predictions into the cold-start (population) scores."""


class GreedyAgent(Agent):
    """Recommends what the simulator's preference model predicts the user rates highest, now.

    It is myopic: it ignores boredom, leaving and every future step. The user comes from an
    optional ``user`` key of the observation (int64 [B], the logged user index; -1 = unknown).
    Rows without a known user are cold-start: scored by the model's ``predict_history(history,
    responses)`` where it has one, else by the population-mean predicted rating of each item
    (the model's expectation for an average user, computed once).
    """

    name: ClassVar[str] = "greedy"
    config_class: ClassVar[type] = GreedyConfig

    def __init__(
        self, n_items: int, config: GreedyConfig | None = None, preference_model: UserPreferences | None = None
    ) -> None:
        self.n_items = _check_n_items(n_items)
        self.config = config or GreedyConfig()
        if preference_model is None:
            raise ConfigError("GreedyAgent needs preference_model= (e.g. simulators.preference.PreferenceModel)")
        self.preference_model = preference_model
        self._population: torch.Tensor | None = None

    def population_scores(self) -> torch.Tensor:
        """Float [n_items]: the mean predicted rating of each item over all known users."""
        if self._population is None:
            total = None
            n_users = int(self.preference_model.n_users)
            for start in range(0, n_users, self.config.user_chunk):
                users = torch.arange(start, min(start + self.config.user_chunk, n_users), dtype=torch.int64)
                chunk = self._predict_users(users).sum(dim=0)
                total = chunk if total is None else total + chunk
            self._population = (total / n_users).cpu()
        return self._population

    def _predict_users(self, users: torch.Tensor) -> torch.Tensor:
        device = getattr(self.preference_model, "device", users.device)
        scores = self.preference_model.predict_all(users.to(device)).to(torch.float32)
        if scores.shape != (users.shape[0], self.n_items):
            raise ValueError(f"preference model returned {tuple(scores.shape)}, expected ({len(users)}, {self.n_items})")
        return scores

    def scores(self, observation: Observation) -> torch.Tensor:
        history = observation["history"]
        batch, device = history.shape[0], history.device
        user = observation.get("user")
        known = torch.zeros(batch, dtype=torch.bool, device=device) if user is None else user.to(device) >= 0
        scores = torch.empty(batch, self.n_items, dtype=torch.float32, device=device)
        if bool(known.any()):
            scores[known] = self._predict_users(user.to(device)[known]).to(device)
        cold = ~known
        if bool(cold.any()):
            predict_history = getattr(self.preference_model, "predict_history", None)
            if predict_history is not None:
                cold_scores = predict_history(history[cold], observation["responses"][cold])
                scores[cold] = cold_scores.to(device=device, dtype=torch.float32)
            else:
                scores[cold] = self.population_scores().to(device)
        return _exclude_history(scores, observation) if self.config.exclude_history else scores

    def save(self, directory: str | Path) -> None:
        """Saves the config and population scores; the preference model belongs to the simulator
        (its own save); :meth:`load` takes it as ``preference_model=`` or from ``config.model_dir``."""
        save_agent_files(
            directory, self.name, self.config, {"population": self.population_scores()}, {"n_items": self.n_items}
        )

    @classmethod
    def load(cls, directory: str | Path, preference_model: UserPreferences | None = None) -> GreedyAgent:
        config_data, tensors, extra = load_agent_files(directory, cls.name)
        config = from_dict(GreedyConfig, config_data)
        if preference_model is None:
            if config.model_dir is None:
                raise CheckpointError(
                    f"{directory}: a greedy agent needs preference_model= or a config.model_dir to load it from"
                )
            from recarena.simulators.preference import PreferenceModel

            preference_model = PreferenceModel.load(config.model_dir)
        agent = cls(int(extra["n_items"]), config, preference_model=preference_model)
        require_tensors(tensors, ["population"], directory)
        agent._population = tensors["population"]
        return agent


# ------------------------------------------------------------------ SASRec and GRU4Rec sequence models


@config_dataclass
class SequenceModelConfig(SequenceEncoderConfig):
    """Options of the supervised next-item model: the encoder's (:class:`SequenceEncoderConfig`)
    and its training's."""

    loss: Literal["full_softmax", "sampled_softmax"] = "full_softmax"
    """Cross-entropy over the whole catalogue ("SASRec+"), or over the target plus ``n_negatives``
    uniform negatives shared by the batch (cheaper per epoch on large catalogues)."""
    n_negatives: Annotated[int, Field(ge=1)] = 512
    epochs: Annotated[int, Field(ge=1)] = 20
    batch_size: Annotated[int, Field(ge=1)] = 128
    """Users per batch (each contributes every position of its training window)."""
    learning_rate: Annotated[float, Field(gt=0)] = 3e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    init_from_llm: bool = True
    """Initialise item id embeddings from the top principal components of the LLM item encodings
    (needs ``item_embeddings`` in :meth:`SequenceModelAgent.fit`)."""
    exclude_history: bool = True
    """Score items in the observed history -inf."""
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    device: str = "cpu"
    """``cpu``, ``cuda[:N]`` or ``auto``."""


@config_dataclass
class GRU4RecConfig(SequenceModelConfig):
    """:class:`SequenceModelConfig` with the GRU encoder (one layer) by default."""

    architecture: Literal["transformer", "gru"] = "gru"
    n_layers: Annotated[int, Field(ge=1)] = 1


def training_windows(log: InteractionLog, max_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`recarena.agents.next_item_training.sequence_windows` of the users' sequences in ``log``."""
    return sequence_windows(log.user_offsets, log.item, log.rating, max_length)


class SequenceModelAgent(Agent):
    """Supervised next-item model on :class:`recarena.agents.sequence_encoder.SequenceEncoder`:
    scores = ``h_last . v_i`` over the full catalogue. ``sasrec``: the transformer encoder.

    Train with :meth:`fit` on the training log (``item_embeddings``: the frozen LLM item encodings,
    projected into the item vectors and, with ``init_from_llm``, the start of the id embeddings); at
    scoring time it reads the observation's ``history`` and ``responses`` (newest last, the last
    ``max_length`` items). Training and scoring run inside a forked torch RNG seeded from
    ``config.seed`` (dropout and initialisation), and batch order and negatives come from an explicit
    generator, so a fit is deterministic on CPU and leaves global state alone.
    """

    name: ClassVar[str] = "sasrec"
    config_class: ClassVar[type] = SequenceModelConfig

    def __init__(self, n_items: int, config: SequenceModelConfig | None = None) -> None:
        self.n_items = _check_n_items(n_items)
        self.config = config or self.config_class()
        self.device = resolve_device(self.config.device)
        self._build(None)
        self.fitted = False
        self.fit_info: dict[str, Any] = {}

    def _build(self, item_text: torch.Tensor | None) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.model = SequenceEncoder(self.n_items, self.config, item_text).to(self.device)
        self.model.eval()

    def fit(
        self,
        train_log: InteractionLog,
        item_embeddings: torch.Tensor | None = None,
        logger: Any = None,
        progress: bool = False,
    ) -> SequenceModelAgent:
        """Train on next-item prediction over every position of each user's newest window."""
        config = self.config
        _check_log(train_log, self.n_items, f"{type(self).__name__}.fit")
        if item_embeddings is not None:
            item_embeddings = torch.as_tensor(item_embeddings, dtype=torch.float32).cpu()
            if item_embeddings.ndim != 2 or item_embeddings.shape[0] != self.n_items:
                raise ValueError(f"item_embeddings must have {self.n_items} rows, got {tuple(item_embeddings.shape)}")
        if not config.use_ids and item_embeddings is None:
            raise ValueError(f"{type(self).__name__}.fit: use_ids is off, so items need item_embeddings (their text)")
        self._build(item_embeddings)
        if config.init_from_llm and config.use_ids and item_embeddings is not None:
            with torch.no_grad():
                self.model.item_embedding.copy_(pca_initialisation(item_embeddings, config.hidden_dim).to(self.device))
        windows = training_windows(train_log, config.max_length)
        if len(windows[0]) == 0:
            raise ValueError(f"{type(self).__name__}.fit: no user has at least 2 events")
        started = time.perf_counter()
        history = fit_next_item(
            self.model, windows, epochs=config.epochs, batch_size=config.batch_size,
            learning_rate=config.learning_rate, weight_decay=config.weight_decay, loss=config.loss,
            n_negatives=config.n_negatives, seed=config.seed, logger=logger, progress=progress,
        )
        self.fitted = True
        self.fit_info = {"epochs": config.epochs, "batches_per_epoch": math.ceil(len(windows[0]) / config.batch_size),
                         "history": history, "seconds": round(time.perf_counter() - started, 2),
                         "n_sequences": len(windows[0])}
        return self

    @torch.no_grad()
    def scores(self, observation: Observation) -> torch.Tensor:
        history = observation["history"]
        responses = observation.get("responses")
        scores = self.model.scores(history.to(self.device).long(),
                                   None if responses is None else responses.to(self.device)).to(history.device)
        return _exclude_history(scores, observation) if self.config.exclude_history else scores

    def save(self, directory: str | Path) -> None:
        tensors = {f"model.{key}": value for key, value in self.model.state_dict().items()}
        save_agent_files(directory, self.name, self.config, tensors,
                         {"n_items": self.n_items, "text_dim": self.model.text_dim, "fitted": self.fitted,
                          "fit_info": self.fit_info})

    @classmethod
    def load(cls, directory: str | Path) -> SequenceModelAgent:
        config, tensors, extra = load_agent_files(directory, cls.name)
        agent = cls(int(extra["n_items"]), from_dict(cls.config_class, config))
        text_dim = int(extra.get("text_dim", 0))
        if text_dim:
            agent._build(torch.zeros(agent.n_items, text_dim))
        state = {key[len("model."):]: value for key, value in tensors.items() if key.startswith("model.")}
        try:
            agent.model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"{directory}: weights do not match the saved config: {error}") from error
        agent.model.to(agent.device).eval()
        agent.fitted, agent.fit_info = bool(extra.get("fitted", True)), dict(extra.get("fit_info", {}))
        return agent


class GRU4RecAgent(SequenceModelAgent):
    """GRU4Rec: :class:`SequenceModelAgent` with the GRU encoder (:class:`GRU4RecConfig`)."""

    name: ClassVar[str] = "gru4rec"
    config_class: ClassVar[type] = GRU4RecConfig
