"""A data-free simulator whose users have known latent preferences (registered as "synthetic").

Items belong to one of ``n_topics`` topics; item latent factors sit near their topic's centre, user
factors are Gaussian, and the true rating of (user, item) is ``3 + 2 * tanh(sharpness * z)`` where
``z`` is the standardised dot product of the factors, so ratings span 1-5 and a user's favourite
items cluster in a few topics. Every user also has a generated "logged" sequence of
``events_per_user`` items (drawn without replacement, favouring liked items, in random order) from
which sessions start, exactly as logged users start from a real history prefix.

Uses: fast tests, known-answer agent tests (``best_item`` makes one item clearly the best for
everyone) and examples; with a strong ``interest.boredom_penalty`` the myopic greedy policy that
keeps recommending a user's favourite topic is beaten by one that diversifies.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field, model_validator

from recarena.core.config import config_dataclass
from recarena.simulators.base import UserState
from recarena.simulators.behaviour import MAX_RATING, MIN_RATING, BehaviourConfig, UserSampler, kmeans_topics
from recarena.simulators.composed import ComposedSimulator
from recarena.simulators.registry import register


@config_dataclass
class SyntheticConfig(BehaviourConfig):
    """Sizes and latent structure of a synthetic population (plus the shared behaviour options)."""

    n_users: Annotated[int, Field(ge=1)] = 200
    n_items: Annotated[int, Field(ge=1)] = 100
    n_topics: Annotated[int, Field(ge=1)] = 5
    latent_dim: Annotated[int, Field(ge=1)] = 8
    embedding_dim: Annotated[int, Field(ge=1)] = 32
    """Width of the (random, L2-normalised, preference-bearing) item embeddings."""
    events_per_user: int | None = None
    """Length of each user's generated sequence that starting histories are cut from
    (None: ``min(30, n_items // 2)``)."""
    sharpness: float = 1.0
    """Higher: ratings nearer 1 and 5; lower: nearer 3."""
    seed: int = 0
    """Seed of the population (factors, topics, sequences); rollouts take their own generator."""
    best_item: int | None = None
    """If set, this item is rated ``MAX_RATING`` by every user and every other item at most
    ``MAX_RATING - best_margin`` (and it never appears in starting histories): a known answer."""
    best_margin: Annotated[float, Field(gt=0, lt=MAX_RATING - MIN_RATING)] = 1.5

    @model_validator(mode="after")
    def _fit_the_catalogue(self) -> SyntheticConfig:
        limit = self.n_items - (self.best_item is not None)
        if self.events_per_user is None:
            self.events_per_user = max(1, min(30, self.n_items // 2))
        if not 1 <= self.events_per_user <= limit:
            raise ValueError(f"events_per_user must be in [1, {limit}], got {self.events_per_user}")
        if self.best_item is not None and not 0 <= self.best_item < self.n_items:
            raise ValueError(f"best_item must be in [0, {self.n_items}), got {self.best_item}")
        return self


def _population(config: SyntheticConfig) -> dict[str, torch.Tensor]:
    """Factors, true ratings, topics, embeddings and sequences, all on CPU from ``config.seed``."""
    g = torch.Generator().manual_seed(config.seed)
    n_users, n_items, dim = config.n_users, config.n_items, config.latent_dim
    topic = torch.arange(n_items) % config.n_topics
    topic = topic[torch.randperm(n_items, generator=g)]
    centres = torch.randn(config.n_topics, dim, generator=g)
    item_factors = centres[topic] + 0.5 * torch.randn(n_items, dim, generator=g)
    user_factors = torch.randn(n_users, dim, generator=g)
    affinity = user_factors @ item_factors.T
    affinity = (affinity - affinity.mean()) / affinity.std().clamp(min=1e-6)
    ratings = 3.0 + 2.0 * torch.tanh(config.sharpness * affinity)
    if config.best_item is not None:
        ratings = ratings.clamp(max=MAX_RATING - config.best_margin)
        ratings[:, config.best_item] = MAX_RATING
    topics = torch.nn.functional.one_hot(topic, config.n_topics).to(torch.float32)
    projection = torch.randn(dim + config.n_topics, config.embedding_dim, generator=g)
    features = torch.cat([item_factors, 2.0 * topics], dim=1)
    embeddings = features @ projection + 0.1 * torch.randn(n_items, config.embedding_dim, generator=g)
    embeddings = torch.nn.functional.normalize(embeddings, dim=1)
    # Sequences: Gumbel top-k on the ratings (liked items more likely), then a random time order.
    logits = ratings.clone()
    if config.best_item is not None:
        logits[:, config.best_item] = float("-inf")
    gumbel = -torch.log(-torch.log(torch.rand(n_users, n_items, generator=g).clamp(1e-12, 1 - 1e-7)))
    picked = torch.topk(logits + gumbel, config.events_per_user, dim=1).indices
    order = torch.argsort(torch.rand(picked.shape, generator=g), dim=1)
    sequence = picked.gather(1, order)
    return {
        "ratings": ratings,
        "topics": topics,
        "embeddings": embeddings,
        "sequence": sequence,
        "sequence_rating": ratings.gather(1, sequence),
        "user_factors": user_factors,
        "item_factors": item_factors,
    }


@register("synthetic")
class SyntheticSimulator(ComposedSimulator):
    """Users with known latent preferences; ``true_ratings[u, i]`` is every answer (none from a log)."""

    config_class = SyntheticConfig

    def __init__(self, config: SyntheticConfig | None = None, data: object = None, device: torch.device | str = "cpu") -> None:
        config = config or SyntheticConfig()
        if data is not None:
            raise TypeError("the synthetic simulator takes no data")
        population = _population(config)
        device = torch.device(device)
        n_users, length = population["sequence"].shape
        offsets = torch.arange(n_users + 1, dtype=torch.int64) * length
        sampler = UserSampler(
            config.sampler,
            offsets,
            population["sequence"].reshape(-1),
            population["sequence_rating"].reshape(-1),
            config.n_items,
            device,
        )
        topics = population["topics"]
        if config.interest.topics == "kmeans":
            topics = kmeans_topics(population["embeddings"], config.interest.n_clusters, seed=config.seed)
        super().__init__(
            config, sampler=sampler, item_topics=topics, item_embeddings=population["embeddings"], device=device
        )
        self.true_ratings = population["ratings"].to(device)
        self.item_topic = population["topics"].argmax(dim=1).to(device)

    def rate(self, state: UserState, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ratings = torch.take(self.true_ratings, state.user.unsqueeze(1) * self.n_items + slate)
        return ratings, torch.zeros_like(slate, dtype=torch.bool)
