"""A state encoder and a dot-product item head shared by the native DQN and PPO agents.

The state is encoded from the observation (the LLM-encoded ``llm_state`` plus a learned pooling of
the history's item encodings) into a vector ``s``; every item ``a`` has a representation ``e_a``
initialised from its LLM text encoding, and its score is ``s . e_a + b_a``. Scoring the whole
catalogue is therefore one ``[B, D] x [D, n_items]`` matmul, so catalogues of 1e5 items cost
little more than small ones, and items never seen in training start from their text.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from recarena.agents.base import Observation
from recarena.core.errors import ConfigError
from recarena.envs.observation import build_observation, history_item_mask
from recarena.simulators.base import LoggedSequences

POOLED_TEXT = "pooled_text"
"""Optional observation key: :func:`pool_history_text` of the observation, precomputed. It depends
on no parameter, so a training loop that scores the same observations many times (PPO's epochs,
its actor and critic) can compute it once."""


def pool_history_text(observation: Observation, item_text: torch.Tensor) -> torch.Tensor:
    """Float [B, d]: the history's item text encodings averaged with response weights
    (``response / 5 + 0.5``, normalised; padding -1 weighs 0, an empty history gives 0)."""
    history = observation["history"].long()
    weights = (history >= 0).to(torch.float32) * (observation["responses"].to(torch.float32) / 5.0 + 0.5)
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1e-6)
    # An embedding bag sums the encodings without materialising the [B, H, d] tensor.
    return nn.functional.embedding_bag(history.clamp(min=0), item_text, per_sample_weights=weights, mode="sum")


def with_pooled_text(observation: Observation, item_text: torch.Tensor) -> Observation:
    """``observation`` plus its :data:`POOLED_TEXT` (computed without gradient)."""
    with torch.no_grad():
        return {**observation, POOLED_TEXT: pool_history_text(observation, item_text)}


class StateEncoder(nn.Module):
    """Observation -> float [B, hidden_dim] from the llm_state, a learned projection of the
    response-weighted pool of the history's item encodings, and the history length."""

    def __init__(self, text_dim: int, hidden_dim: int):
        super().__init__()
        self.text_dim = text_dim
        self.history_projection = nn.Linear(text_dim, hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(text_dim + hidden_dim + 1, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim)
        )

    def forward(self, observation: Observation, item_text: torch.Tensor) -> torch.Tensor:
        history = observation["history"]
        valid = (history >= 0).to(torch.float32)
        pooled_text = observation.get(POOLED_TEXT)
        if pooled_text is None:
            pooled_text = pool_history_text(observation, item_text)
        # Pooling and the linear projection commute, so the [B, d] pool is projected once (a
        # projection of the whole catalogue or of every history slot would cost far more).
        has_history = valid.amax(1, keepdim=True)  # an empty history pools to 0, bias included
        projection = self.history_projection
        pooled = nn.functional.linear(pooled_text, projection.weight) + has_history * projection.bias
        length = valid.mean(1, keepdim=True)
        # The first layer acts on cat([llm_state, relu(pooled), length]); applying its two column
        # blocks separately skips the gradient of the (parameter-free) llm_state input.
        first, weight = self.mlp[0], self.mlp[0].weight
        learned = torch.cat([torch.relu(pooled), length], dim=-1)
        hidden = (nn.functional.linear(observation["llm_state"].to(learned.dtype), weight[:, : self.text_dim])
                  + nn.functional.linear(learned, weight[:, self.text_dim :], first.bias))
        return self.mlp[2](self.mlp[1](hidden))


class ItemScorer(nn.Module):
    """Scores all items for a batch of observations: ``scores = encode(obs) @ item_repr.T + bias``.

    Args:
        item_embeddings: float [n_items, d] frozen LLM encodings of the item texts.
        hidden_dim: width of the state vector and of the item representations.
        learn_item_residual: add a learned per-item vector (initialised at zero) to the projected
            text encoding, so collaborative signal can refine what the text says.
    """

    def __init__(self, item_embeddings: torch.Tensor, hidden_dim: int = 64, learn_item_residual: bool = True):
        super().__init__()
        n_items, text_dim = item_embeddings.shape
        self.n_items = n_items
        self.register_buffer("item_text", item_embeddings.detach().to(torch.float32).clone(), persistent=False)
        self.item_projection = nn.Linear(text_dim, hidden_dim, bias=False)
        self.item_residual = nn.Parameter(torch.zeros(n_items, hidden_dim)) if learn_item_residual else None
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.state_encoder = StateEncoder(text_dim, hidden_dim)

    def item_representations(self) -> torch.Tensor:
        """Float [n_items, hidden_dim]: projected text encodings plus the learned residual."""
        representation = self.item_projection(self.item_text)
        if self.item_residual is not None:
            representation = representation + self.item_residual
        return representation

    def encode_state(self, observation: Observation, item_representations: torch.Tensor | None = None) -> torch.Tensor:
        """Float [B, hidden_dim]. (``item_representations`` is unused: the pooled state reads the
        items' text; the argument keeps the interface of the sequence state's scorer.)"""
        return self.state_encoder(observation, self.item_text)

    def forward(self, observation: Observation, item_representations: torch.Tensor | None = None) -> torch.Tensor:
        """Float [B, n_items] scores. ``item_representations`` may be passed in when they are known
        not to have changed (e.g. computed once per rollout under ``no_grad``): projecting the
        catalogue costs more than scoring a small batch against it."""
        if item_representations is None:
            item_representations = self.item_representations()
        return torch.addmm(self.item_bias, self.encode_state(observation), item_representations.T)


MASKED_SCORE = -1e9
"""Score given to masked items: finite (so softmax gives them exactly 0 and 0 * log 0 stays 0, with
no NaN-guarding pass over the catalogue), and far below any real score."""


def allowed_items(action_mask: torch.Tensor) -> torch.Tensor:
    """``action_mask`` as bool with every row that allows nothing made all-allowed (never leave a row
    with nothing to pick)."""
    allowed = action_mask.to(torch.bool)
    return allowed | ~allowed.any(dim=-1, keepdim=True)


def mask_scores(scores: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
    """Scores with disallowed items (``action_mask`` False) set to MASKED_SCORE; rows with none allowed unmasked."""
    if action_mask is None:
        return scores
    return scores.masked_fill(~allowed_items(action_mask), MASKED_SCORE)


def history_mask(history: torch.Tensor, n_items: int) -> torch.Tensor:
    """Bool [B, n_items], True for items *not* in the history window (used where full masks are too big)."""
    return ~history_item_mask(history, n_items)


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    """bf16 autocast when ``mode`` is "bf16", or "auto" on CUDA; otherwise full precision."""
    if mode == "bf16" or (mode == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class LoggedNextItems:
    """Supervised next-item examples from the logged sequences a simulator starts its users from.

    Each example is a real user's history up to a random point of their *training* log (the
    observation the env would show for that prefix) and the item the user really chose next. The
    sequences come explicitly from the env (``env.logged_sequences``); held-out events are never in
    them. Used for an auxiliary next-item loss (in the spirit of SQN, Xin et al., SIGIR 2020): the
    simulated reward says what a user likes, the log says what users actually pick next.

    ``min_rating`` > 0 keeps only the examples whose next event was rated at least that (e.g. 4:
    what users picked *and* liked); the others get the target :data:`IGNORED_TARGET`, which
    :func:`next_item_loss` skips, so the draws (and shapes) are the same either way.
    """

    def __init__(self, sequences: LoggedSequences, item_embeddings: torch.Tensor, history_length: int,
                 min_rating: float = 0.0) -> None:
        self.sequences = sequences
        self.item_embeddings = item_embeddings
        self.history_length = int(history_length)
        self.min_rating = float(min_rating)

    @classmethod
    def from_env(cls, env: Any, min_rating: float = 0.0) -> LoggedNextItems:
        """The examples of the env's ``logged_sequences``, observed as the env observes (its history window)."""
        sequences = logged_sequences_of(env, "the auxiliary next-item loss")
        return cls(sequences, env.item_embeddings, env.history_length, min_rating)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Observation, torch.Tensor]:
        """(observation of ``n`` logged prefixes, int64 [n] next logged item), drawn with ``generator``."""
        sequences = self.sequences
        user, prefix = sequences.sample(n, generator)
        prefix = torch.minimum(prefix, sequences.lengths.index_select(0, user) - 1)  # a next event exists
        history, responses = sequences.history(user, prefix, self.history_length)
        event = sequences.offsets.index_select(0, user) + prefix
        target = torch.take(sequences.item, event)
        if self.min_rating > 0:
            target = torch.where(torch.take(sequences.rating, event) >= self.min_rating, target, IGNORED_TARGET)
        return build_observation(history, responses, self.item_embeddings), target


def logged_sequences_of(env: Any, purpose: str) -> LoggedSequences:
    """``env.logged_sequences``, or a ConfigError saying that ``purpose`` needs a simulator that has them."""
    sequences = getattr(env, "logged_sequences", None)
    if sequences is None:
        simulator = type(getattr(env, "simulator", env)).__name__
        raise ConfigError(f"{purpose} needs a simulator with logged sequences (e.g. 'logged'); {simulator} has none")
    return sequences


IGNORED_TARGET = -100
"""Target of an example :func:`next_item_loss` skips (PyTorch's ``ignore_index`` convention)."""


def next_item_loss(scores: torch.Tensor, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``target`` [B] under ``scores`` [B, n_items], items in ``history``
    excluded, over the examples whose target is not ``IGNORED_TARGET`` (0 if there are none)."""
    masked = mask_scores(scores, history_mask(history, scores.shape[1]))
    total = torch.nn.functional.cross_entropy(masked, target, ignore_index=IGNORED_TARGET, reduction="sum")
    return total / (target != IGNORED_TARGET).sum().clamp(min=1)

