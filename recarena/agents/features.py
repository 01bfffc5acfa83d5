"""The features extractor that turns an observed history into an LLM-encoded state for SB3 policies.

Each item in the observed history is looked up in a frozen table of cached LLM item encodings (a
non-trainable, non-persistent buffer: it is rebuilt from the text cache, never learned or stored in
weights), projected by a learned linear map, tagged with the user's response, and pooled over the
sequence by one of three poolers:

* ``mean`` - the masked mean of the tokens (order-free, cheapest);
* ``gru`` - a GRU over the real (unpadded) part of the sequence, oldest to newest, last hidden state;
* ``attention`` - one learned query attending over the tokens plus learned recency positions
  (and an always-present "no history" token, so an empty history is well defined).

The pooled vector is concatenated with the observation's ``llm_state`` (the response-weighted mean
of the history's LLM encodings); where the observation space leaves ``llm_state`` out (to keep
replay buffers small), it is recomputed from the history with the same function the env uses.
"""

from __future__ import annotations

import math
from typing import Literal

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from recarena.envs.observation import MAX_RESPONSE, llm_state

Pooler = Literal["mean", "gru", "attention"]
POOLERS: tuple[str, ...] = ("mean", "gru", "attention")


class HistoryFeaturesExtractor(BaseFeaturesExtractor):
    """SB3 features extractor: pooled projected history encodings ++ llm_state.

    Args:
        observation_space: the env's Dict space with ``history`` and ``responses`` (and optionally
            ``llm_state``), as built by ``recarena.envs.observation.observation_space``.
        item_embeddings: float [n_items, d] cached LLM item encodings (kept frozen).
        embed_dim: width of the projected history tokens and of the pooled vector.
        pooler: ``"mean"``, ``"gru"`` or ``"attention"``.
        use_llm_state: append the d-dimensional llm_state to the pooled vector.

    ``features_dim`` is ``embed_dim + d`` with the llm_state, ``embed_dim`` without.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        item_embeddings: torch.Tensor,
        embed_dim: int = 64,
        pooler: Pooler = "mean",
        use_llm_state: bool = True,
    ) -> None:
        if not isinstance(observation_space, gym.spaces.Dict) or not {"history", "responses"} <= set(
            observation_space.spaces
        ):
            raise ValueError("HistoryFeaturesExtractor needs a Dict observation space with 'history' and 'responses'")
        if pooler not in POOLERS:
            raise ValueError(f"pooler must be one of {list(POOLERS)}, got {pooler!r}")
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        if item_embeddings.ndim != 2:
            raise ValueError(f"item_embeddings must be [n_items, d], got shape {tuple(item_embeddings.shape)}")
        n_items, text_dim = item_embeddings.shape
        history_length = int(observation_space["history"].shape[0])
        high = int(observation_space["history"].high.max())
        if high != n_items - 1:
            raise ValueError(f"observation space has {high + 1} items but item_embeddings has {n_items} rows")
        if "llm_state" in observation_space.spaces and observation_space["llm_state"].shape[0] != text_dim:
            raise ValueError(
                f"llm_state has {observation_space['llm_state'].shape[0]} dims, item_embeddings have {text_dim}"
            )
        super().__init__(observation_space, embed_dim + (text_dim if use_llm_state else 0))
        self.pooler = pooler
        self.use_llm_state = use_llm_state
        self.llm_state_observed = "llm_state" in observation_space.spaces
        self.register_buffer("item_embeddings", item_embeddings.detach().to(torch.float32), persistent=False)
        self.projection = nn.Linear(text_dim, embed_dim)
        self.response_projection = nn.Linear(1, embed_dim, bias=False)
        if pooler == "gru":
            self.gru = nn.GRU(embed_dim, embed_dim, batch_first=True)
        elif pooler == "attention":
            self.positions = nn.Parameter(torch.zeros(history_length, embed_dim))
            self.empty_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.query = nn.Parameter(torch.randn(embed_dim) / math.sqrt(embed_dim))
            self.key = nn.Linear(embed_dim, embed_dim, bias=False)
            self.value = nn.Linear(embed_dim, embed_dim)

    def tokens(self, history: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Float [B, H, embed_dim]: projected item encodings plus a response term (padding included)."""
        encoded = self.item_embeddings[history.clamp(min=0)]
        return self.projection(encoded) + self.response_projection((responses / MAX_RESPONSE).unsqueeze(-1))

    def pool(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Float [B, embed_dim] from tokens [B, H, D] and the bool [B, H] mask of real (non-padding) entries."""
        if self.pooler == "mean":
            weights = valid.to(tokens.dtype).unsqueeze(-1)
            return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        if self.pooler == "gru":
            return self._pool_gru(tokens, valid)
        return self._pool_attention(tokens, valid)

    def _pool_gru(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        batch, length, _ = tokens.shape
        lengths = valid.sum(1)
        # Histories are left-padded (newest last); shift each row so its real part starts at 0.
        shift = (length - lengths).unsqueeze(1)
        index = (torch.arange(length, device=tokens.device).unsqueeze(0) + shift) % length
        right_padded = torch.gather(tokens, 1, index.unsqueeze(-1).expand_as(tokens))
        packed = nn.utils.rnn.pack_padded_sequence(
            right_padded, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        _, hidden = self.gru(packed)
        return hidden[-1] * (lengths > 0).to(tokens.dtype).unsqueeze(-1)

    def _pool_attention(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        batch = tokens.shape[0]
        tokens = torch.cat([self.empty_token.expand(batch, 1, -1), tokens + self.positions], dim=1)
        valid = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=valid.device), valid], dim=1)
        logits = self.key(tokens) @ self.query / math.sqrt(tokens.shape[-1])  # [B, H + 1]
        weights = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=1)
        return (weights.unsqueeze(-1) * self.value(tokens)).sum(1)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        history = observations["history"].round().long()  # SB3 hands Box observations over as float
        responses = observations["responses"].to(torch.float32)
        valid = history >= 0
        pooled = self.pool(self.tokens(history, responses), valid)
        if not self.use_llm_state:
            return pooled
        if self.llm_state_observed:
            state = observations["llm_state"].to(torch.float32)
        else:
            state = llm_state(history, responses, self.item_embeddings)
        return torch.cat([pooled, state], dim=-1)
