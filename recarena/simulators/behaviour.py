"""Behaviour of simulated users: who starts, how they respond, choose, tire, leave, and the reward.

Each part is a small component with a typed config that works on batches of tensors ``[B, ...]``
on any device and draws every random number from an explicit ``torch.Generator``; none loops over
users in Python. :class:`recarena.simulators.composed.ComposedSimulator` composes them in a fixed order:

1. **respond** - ``response = clamp(rating - boredom_penalty * fatigue(item topics), 1, 5)``
   for every slate item, where ``rating`` comes from the log or the preference model;
2. **choose** - a multinomial logit over the slate plus a no-choice option picks at most one item
   (with a slate of one this is a click probability ``sigmoid((response - no_choice) / T)``);
3. **update** - history and consumed mask take the chosen item; per-topic fatigue decays, rises on
   the chosen item's topics, and optionally drifts;
4. **leave** - patience falls on a no-click or a dislike, rises a little on a like; the user leaves
   when it reaches 0, or by an optional constant per-step hazard (``model: sessions``: a no-click
   costs patience, and after a chosen item the user leaves with the hazard logged sessions show).

The reward is a named function of the outcome (:data:`REWARDS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from recarena.core.clustering import kmeans, nearest
from recarena.core.config import config_dataclass
from recarena.core.errors import ConfigError
from recarena.data.interactions import LIKE_THRESHOLD, MAX_RATING, MIN_RATING
from recarena.simulators.sessions import SessionHazard

FIRST_POSITION_TABLE_LIMIT = 1 << 30
"""Largest :meth:`UserSampler.first_positions` table, in bytes (1 GiB), that is built; beyond it the
static-shape reset of :class:`recarena.simulators.composed.ComposedSimulator` falls back to the synchronising one."""


# --------------------------------------------------------------------------------------- configs


@config_dataclass
class SamplerConfig:
    """Which logged users start sessions, and how much of their history they start with."""

    min_prefix: Annotated[int, Field(ge=0)] = 5
    """Fewest logged events in a starting history; users with fewer are never sampled."""
    min_future: Annotated[int, Field(ge=0)] = 1
    """Fewest logged events left after the prefix (the user's "future" the log can answer for)."""
    max_prefix: int | None = None
    """Cap on the prefix length (None: up to the user's length minus ``min_future``)."""
    weighting: Literal["uniform", "events"] = "uniform"
    """Draw users uniformly, or in proportion to their number of logged events."""

    @model_validator(mode="after")
    def _prefix_range(self) -> SamplerConfig:
        if self.max_prefix is not None and self.max_prefix < self.min_prefix:
            raise ValueError("max_prefix must be >= min_prefix")
        return self


@config_dataclass
class ChoiceConfig:
    """Multinomial logit over the slate plus a no-choice option."""

    temperature: Annotated[float, Field(gt=0)] = 1.0
    """Utilities are ``response / temperature``; lower is more deterministic."""
    no_choice_rating: float = 3.0
    """Rating-scale utility of choosing nothing."""


@config_dataclass
class InterestConfig:
    """Per-topic fatigue (boredom) and optional drift of interest."""

    topics: Literal["genres", "kmeans"] = "genres"
    """Topics of items: their genres (multi-hot), or k-means clusters of the item encodings."""
    n_clusters: Annotated[int, Field(ge=1)] = 16
    """Number of k-means topics (``topics="kmeans"``)."""
    fatigue_gain: float = 1.0
    """Fatigue added to each topic of a consumed item (spread over the item's topics)."""
    fatigue_decay: Annotated[float, Field(ge=0, le=1)] = 0.8
    """Per-step multiplier of fatigue (1 = never recovers, 0 = forgets at once)."""
    boredom_penalty: float = 0.3
    """Rating points lost per unit of fatigue on an item's topics."""
    drift: Annotated[float, Field(ge=0)] = 0.0
    """Standard deviation of a per-step Gaussian drift of every topic's fatigue (0 = none)."""
    max_fatigue: Annotated[float, Field(gt=0)] = 10.0
    """Fatigue is clamped to ``[-max_fatigue, max_fatigue]`` (negative = renewed interest)."""


@config_dataclass
class LeaveConfig:
    """When the user leaves: a patience budget (the user leaves when it reaches 0), plus, with
    ``model: sessions``, the leave hazard the logged sessions show after each chosen item."""

    model: Literal["patience", "sessions"] = "patience"
    """``patience``: patience falls by ``no_click_cost`` on a no-click and by ``dislike_cost`` on a
    dislike, rises by ``like_bonus`` on a like. ``sessions`` (the logged users of env ``-v3``): a
    no-click costs ``no_click_cost`` as before, and after each chosen item the user ends the session
    with the probability the training log's sessions show at that position and like
    (:mod:`recarena.simulators.sessions`, fitted by the simulator; ``dislike_cost`` and
    ``like_bonus`` are unused)."""
    session_gap: Annotated[int, Field(ge=0)] = 3600
    """``sessions``: seconds between a user's consecutive logged events that start a new session."""
    initial_patience: Annotated[float, Field(gt=0)] = 5.0
    no_click_cost: Annotated[float, Field(ge=0)] = 1.0
    """Patience lost when the user chooses nothing."""
    dislike_cost: Annotated[float, Field(ge=0)] = 1.0
    """Patience lost when the chosen item is not liked (response below the like threshold)."""
    like_bonus: Annotated[float, Field(ge=0)] = 0.5
    """Patience gained on a like."""
    max_patience: float = 10.0
    hazard: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Per-step probability of leaving whatever happened (0 = none)."""

    @model_validator(mode="after")
    def _patience_range(self) -> LeaveConfig:
        if self.max_patience < self.initial_patience:
            raise ValueError("need 0 < initial_patience <= max_patience")
        return self


@config_dataclass
class BehaviourConfig:
    """The options every composed simulator shares (nested sections in YAML / ``make`` kwargs)."""

    history_length: Annotated[int, Field(ge=1)] = 20
    """H: how many recent consumed items the state (and the observation) keeps."""
    reward: str = "like"
    """Reward function name, one of :data:`REWARDS` ("click", "like", "rating", "dwell")."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    choice: ChoiceConfig = field(default_factory=ChoiceConfig)
    interest: InterestConfig = field(default_factory=InterestConfig)
    leave: LeaveConfig = field(default_factory=LeaveConfig)

    @field_validator("reward")
    @classmethod
    def _known_reward(cls, reward: str) -> str:
        if reward not in REWARDS:
            raise ValueError(f"unknown reward '{reward}'; valid rewards are {sorted(REWARDS)}")
        return reward


# --------------------------------------------------------------------------------------- rewards

RewardFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``reward(clicked bool [B], liked bool [B], response float [B]) -> float32 [B]``."""


def _dwell(clicked: torch.Tensor, liked: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    # Share of the item watched: a rating-scaled value, 0.2 for a 1-star click, 1.0 for a 5-star one.
    return torch.where(clicked, response / MAX_RATING, torch.zeros_like(response))


REWARDS: dict[str, RewardFunction] = {
    "click": lambda clicked, liked, response: clicked.to(torch.float32),
    "like": lambda clicked, liked, response: liked.to(torch.float32),
    "rating": lambda clicked, liked, response: torch.where(clicked, response, torch.zeros_like(response)),
    "dwell": _dwell,
}
"""Reward functions by name; ``rating`` is the response on the 1-5 scale (0 without a click)."""


def reward_function(name: str) -> RewardFunction:
    """The reward function called ``name`` (error lists the valid names)."""
    if name not in REWARDS:
        raise ConfigError(f"unknown reward '{name}'; valid rewards are {sorted(REWARDS)}")
    return REWARDS[name]


# --------------------------------------------------------------------------------------- sampler


class UserSampler:
    """Draws logged users and history-prefix lengths, and builds their starting history.

    Holds the logged sequences in CSR form on the device: user ``u``'s events are
    ``item[offsets[u]:offsets[u+1]]`` in time order, with ``rating`` the logged responses.
    """

    def __init__(
        self,
        config: SamplerConfig,
        offsets: torch.Tensor,
        item: torch.Tensor,
        rating: torch.Tensor,
        n_items: int,
        device: torch.device,
    ) -> None:
        self.config = config
        self.n_items = n_items
        self.offsets = offsets.to(device=device, dtype=torch.int64)
        self.item = item.to(device=device, dtype=torch.int64)
        # Implicit feedback (NaN) counts as the top of the scale, as in the observation builder.
        self.rating = torch.nan_to_num(rating.to(device=device, dtype=torch.float32), nan=MAX_RATING)
        self.lengths = self.offsets[1:] - self.offsets[:-1]
        eligible = self.lengths >= config.min_prefix + config.min_future
        self.eligible_users = torch.nonzero(eligible).squeeze(1)
        if self.eligible_users.numel() == 0:
            raise ConfigError(
                f"no user has at least sampler.min_prefix + sampler.min_future = "
                f"{config.min_prefix + config.min_future} logged events"
            )
        self.weights = self.lengths[self.eligible_users].to(torch.float32)
        self.max_length = int(self.lengths.max()) if self.lengths.numel() else 0
        self._first_positions: torch.Tensor | None = None

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` (user, prefix_length) pairs, prefix uniform in [min_prefix, length - min_future]."""
        device = self.offsets.device
        if self.config.weighting == "uniform":
            pick = torch.randint(len(self.eligible_users), (n,), generator=generator, device=device)
        else:
            pick = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        user = self.eligible_users.index_select(0, pick)
        high = self.lengths.index_select(0, user) - self.config.min_future
        if self.config.max_prefix is not None:
            high = high.clamp(max=self.config.max_prefix)
        low = torch.full_like(high, self.config.min_prefix)
        span = (high - low + 1).to(torch.float32)
        draw = torch.rand(n, generator=generator, device=device)
        prefix = low + (draw * span).to(torch.int64).clamp(max=(high - low).clamp(min=0))
        return user, prefix

    def history(self, user: torch.Tensor, prefix: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Last ``length`` items of each prefix and their logged ratings, left-padded (-1, 0)."""
        position = prefix.unsqueeze(1) - length + torch.arange(length, device=prefix.device)
        valid = position >= 0
        event = self.offsets.index_select(0, user).unsqueeze(1) + position.clamp(min=0)
        event = event.clamp(max=max(len(self.item) - 1, 0))
        items = torch.where(valid, torch.take(self.item, event), torch.full_like(event, -1))
        ratings = torch.take(self.rating, event)
        ratings = torch.where(valid, ratings, torch.zeros_like(ratings))
        return items, ratings

    def consumed_pairs(self, user: torch.Tensor, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row [total], item [total]): every prefix item of each of the ``n`` users, flattened
        (``total = prefix.sum()``), so no [n, max_length] padding is ever built."""
        n = user.shape[0]
        total = int(prefix.sum())
        row = torch.repeat_interleave(torch.arange(n, device=user.device), prefix, output_size=total)
        first = torch.cumsum(prefix, 0) - prefix
        within = torch.arange(total, device=user.device) - first.index_select(0, row)
        event = self.offsets.index_select(0, user).index_select(0, row) + within
        return row, self.item.index_select(0, event)

    def first_positions_dtype(self) -> torch.dtype:
        """int16 when every position and prefix length fits below its maximum (the "never" value), else int32."""
        return torch.int16 if self.max_length < torch.iinfo(torch.int16).max else torch.int32

    def first_positions_bytes(self) -> int:
        """Size in bytes of the :meth:`first_positions` table."""
        itemsize = self.first_positions_dtype().itemsize  # no tensor: this runs in every reset
        return int(self.lengths.shape[0]) * self.n_items * itemsize

    def first_positions(self) -> torch.Tensor:
        """Int [n_users, n_items]: where each item first occurs in each user's logged sequence.

        Positions count from 0; an item the user never logged holds the dtype's maximum, which
        exceeds every prefix length. Built once on first use, on the device, without a host
        synchronisation (a ``scatter_reduce`` "amin" over the events); int16 unless some user has
        32,767 or more events (see :meth:`first_positions_bytes` for its size).
        """
        if self._first_positions is None:
            dtype = self.first_positions_dtype()
            n_users, device = int(self.lengths.shape[0]), self.offsets.device
            event = torch.arange(self.item.shape[0], device=device)
            owner = torch.searchsorted(self.offsets, event, right=True) - 1  # empty users own nothing
            position = (event - self.offsets.index_select(0, owner)).to(dtype)
            table = torch.full((n_users * self.n_items,), torch.iinfo(dtype).max, dtype=dtype, device=device)
            table.scatter_reduce_(0, owner * self.n_items + self.item, position, reduce="amin")
            self._first_positions = table.view(n_users, self.n_items)
        return self._first_positions

    def consumed(self, user: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Bool [n, n_items]: the items in each (user, prefix) starting history, with static shapes.

        The same set as :meth:`consumed_pairs` gives, from the :meth:`first_positions` table
        instead of a variable-length list, so it needs no host synchronisation.
        """
        return self.first_positions().index_select(0, user) < prefix.unsqueeze(1)


# --------------------------------------------------------------------------------------- choice


class ChoiceModel:
    """Multinomial logit over the slate and a no-choice option: the user picks at most one item.

    Utilities are ``response / temperature`` and ``no_choice_rating / temperature`` (the rating-only
    choice). Every choice model offers the same interface to the simulator: ``state_size`` (width of
    ``UserState.choice_state``; 0 here), ``window`` (history items read at reset), ``warm_interest``,
    ``initial_state``, ``utilities`` and ``advance``; see
    :class:`recarena.simulators.choice.LearnedChoice` for the learned one.
    """

    state_size = 0
    window = 0
    warm_interest = False

    def __init__(self, config: ChoiceConfig) -> None:
        self.config = config

    def probabilities(self, response: torch.Tensor) -> torch.Tensor:
        """[B, k] responses -> [B, k + 1] choice probabilities; the last column is "none"."""
        return torch.softmax(self._logits(response), dim=1)

    def choose(self, response: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Sampled slot per user, int64 [B], -1 for no choice (Gumbel-max over the logits)."""
        return choose_from_logits(self._logits(response), generator)

    def _logits(self, response: torch.Tensor) -> torch.Tensor:
        none = torch.full_like(response[:, :1], self.config.no_choice_rating)
        return torch.cat([response, none], dim=1) / self.config.temperature

    # the interface shared with the learned choice model

    def initial_state(self, history: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        return torch.zeros(history.shape[0], 0, device=history.device)

    def utilities(
        self,
        choice_state: torch.Tensor,
        consumed: torch.Tensor,
        slate: torch.Tensor,
        predicted: torch.Tensor,
        fatigue: torch.Tensor,
        response: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(utility [B, k], no-choice utility [B, 1]) from the responses (rating minus boredom)."""
        t = self.config.temperature
        return response / t, torch.full_like(response[:, :1], self.config.no_choice_rating / t)

    def advance(self, choice_state: torch.Tensor, item: torch.Tensor, response: torch.Tensor, clicked: torch.Tensor) -> torch.Tensor:
        return choice_state


def choose_from_logits(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Sampled slot per row of ``logits`` [B, k + 1] (last column: nothing), int64 [B], -1 for nothing.

    Gumbel-max: one uniform draw per logit, so the random stream does not depend on the values."""
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
    gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-12, max=1.0 - 1e-7)))
    slot = torch.argmax(logits + gumbel, dim=1)
    k = logits.shape[1] - 1
    return torch.where(slot == k, torch.full_like(slot, -1), slot)


# --------------------------------------------------------------------------------------- interest


def kmeans_topics(embeddings: torch.Tensor, n_clusters: int, seed: int = 0, iterations: int = 25) -> torch.Tensor:
    """One-hot topic matrix float32 [n_items, n_clusters] from k-means on the L2-normalised embeddings."""
    data = torch.nn.functional.normalize(embeddings.to(torch.float32), dim=1)
    n_clusters = min(n_clusters, data.shape[0])
    centres = kmeans(data.cpu(), n_clusters, torch.Generator().manual_seed(seed), iterations)
    return torch.nn.functional.one_hot(nearest(data, centres), n_clusters).to(torch.float32)


class InterestModel:
    """Per-topic fatigue: a boredom penalty on the response, and its dynamics after each step.

    ``item_topics`` is float [n_items, n_topics] (multi-hot or one-hot); each item's row is
    normalised to sum 1, so an item spreads its fatigue (and feels the fatigue) over its topics.
    """

    def __init__(self, config: InterestConfig, item_topics: torch.Tensor) -> None:
        self.config = config
        topics = item_topics.to(torch.float32)
        self.item_topics = topics
        self.topic_weights = topics / topics.sum(dim=1, keepdim=True).clamp(min=1e-12)

    @property
    def n_topics(self) -> int:
        return int(self.item_topics.shape[1])

    def fatigue(self, interest: torch.Tensor, slate: torch.Tensor) -> torch.Tensor:
        """Mean fatigue over each slate item's topics, float [B, k]."""
        weights = self.topic_weights.index_select(0, slate.reshape(-1)).view(*slate.shape, -1)  # [B, k, T]
        return torch.bmm(weights, interest.unsqueeze(2)).squeeze(2)

    def penalty(self, interest: torch.Tensor, slate: torch.Tensor) -> torch.Tensor:
        """Rating points lost per slate item, float [B, k]."""
        return self.config.boredom_penalty * self.fatigue(interest, slate)

    def replay(self, history: torch.Tensor) -> torch.Tensor:
        """Fatigue [n, T] after consuming ``history`` [n, H] (oldest first, -1 = padding) from fresh:
        the update of each step without drift (a deterministic warm start from a real history)."""
        interest = torch.zeros(history.shape[0], self.n_topics, device=history.device)
        for t in range(history.shape[1]):
            item = history[:, t]
            gain = self.topic_weights.index_select(0, item.clamp(min=0)) * self.config.fatigue_gain
            new = (interest * self.config.fatigue_decay + gain).clamp(-self.config.max_fatigue, self.config.max_fatigue)
            interest = torch.where((item >= 0).unsqueeze(1), new, interest)
        return interest

    def update(
        self, interest: torch.Tensor, item: torch.Tensor, clicked: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Fatigue after a step: decay, add the chosen item's topics (if any), drift, clamp."""
        topics = self.topic_weights.index_select(0, item.clamp(min=0))
        gain = topics * (clicked.to(torch.float32) * self.config.fatigue_gain).unsqueeze(1)
        new = interest * self.config.fatigue_decay + gain
        if self.config.drift > 0:
            noise = torch.randn(new.shape, generator=generator, device=new.device)
            new = new + self.config.drift * noise
        return new.clamp(-self.config.max_fatigue, self.config.max_fatigue)


def respond(ratings: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """The response model: preference rating minus the boredom penalty, on the 1-5 scale."""
    return (ratings - penalty).clamp(MIN_RATING, MAX_RATING)


def item_topics_from_genres(genre_matrix: np.ndarray) -> torch.Tensor:
    """Float [n_items, n_genres] multi-hot genres as topics (items without genres get no topic)."""
    return torch.as_tensor(np.asarray(genre_matrix, dtype=np.float32))


# --------------------------------------------------------------------------------------- leave


class LeaveModel:
    """Patience bookkeeping and the decision to leave.

    With ``model: sessions`` it holds the fitted hazard (``hazard``, a
    :class:`~recarena.simulators.sessions.SessionHazard`) as one float32 table of leave probabilities
    [position bucket, outcome] (outcome: 0 nothing chosen, 1 chosen and not liked, 2 liked), the
    constant ``hazard`` folded in, so every path looks up the same numbers."""

    def __init__(self, config: LeaveConfig, hazard: SessionHazard | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.session_hazard = hazard if config.model == "sessions" else None
        self.edges: torch.Tensor | None = None
        self.table: torch.Tensor | None = None
        if config.model == "sessions":
            if hazard is None:
                raise ConfigError("leave.model 'sessions' needs the leave hazard of logged sessions, which only "
                                  "simulators built from a log fit (the logged simulator); use leave.model: patience")
            fitted = torch.as_tensor(np.asarray(hazard.table), dtype=torch.float64)
            constant = torch.full((fitted.shape[0], 1), float(config.hazard), dtype=torch.float64)
            combined = torch.cat([constant, 1.0 - (1.0 - constant) * (1.0 - fitted)], dim=1)
            self.table = combined.to(device=device, dtype=torch.float32)
            self.edges = torch.as_tensor(hazard.edges, dtype=torch.int64, device=device)

    @property
    def draws(self) -> bool:
        """Whether :meth:`update` draws one uniform per user (a hazard can fire)."""
        return self.table is not None or self.config.hazard > 0

    def initial(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.full((n,), self.config.initial_patience, dtype=torch.float32, device=device)

    def update(
        self,
        patience: torch.Tensor,
        clicked: torch.Tensor,
        liked: torch.Tensor,
        generator: torch.Generator,
        position: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(new patience, left). ``patience``: -no_click_cost, -dislike_cost or +like_bonus, leave at
        <= 0 or by the constant hazard. ``sessions``: -no_click_cost on a no-click, leave at <= 0 or
        with the table's probability at ``position`` (int64 [B], 0-based step of the session)."""
        c = self.config
        zero = torch.zeros_like(patience)
        if self.table is not None:
            if position is None:
                raise ValueError("leave.model 'sessions' needs each user's position in the session")
            new = (patience - torch.where(clicked, zero, zero + c.no_click_cost)).clamp(min=0.0, max=c.max_patience)
            outcome = clicked.to(torch.int64) + liked.to(torch.int64)
            bucket = torch.bucketize(position, self.edges, right=True)
            probability = self.table[bucket, outcome]
            uniform = torch.rand(patience.shape, generator=generator, device=patience.device)
            return new, (new <= 0) | (uniform < probability)
        change = torch.where(clicked, torch.where(liked, zero + c.like_bonus, zero - c.dislike_cost), zero - c.no_click_cost)
        new = (patience + change).clamp(min=0.0, max=c.max_patience)
        left = new <= 0
        if c.hazard > 0:
            left = left | (torch.rand(patience.shape, generator=generator, device=patience.device) < c.hazard)
        return new, left


def is_liked(response: torch.Tensor, clicked: torch.Tensor, threshold: float = LIKE_THRESHOLD) -> torch.Tensor:
    """A chosen item is liked when its response reaches ``threshold`` (the like threshold, 4 of 5; the
    ``-v2`` logged users: 3.5, a response that rounds to 4 or more)."""
    return clicked & (response >= threshold)
