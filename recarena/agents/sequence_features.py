"""The shared causal sequence encoder as the SB3 agents' features extractor (``features.state: sequence``).

The extractor's output is :meth:`recarena.agents.sequence_encoder.SequenceEncoder.encode_last` of the
observation's ``history`` and ``responses`` (the newest ``min(encoder.max_length, history window)``
items): the same state the native agents' :class:`recarena.agents.sequence_state.SequenceItemScorer`
reads, with the SB3 policy's heads (Q-network, actor, critic) on top. :func:`pretrain_policy_encoders`
loads the next-item pretraining of :func:`recarena.agents.sequence_state.pretrain_encoder` (same
routine, same cache) into every extractor of a policy; SB3's RL loss then fine-tunes it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from recarena.agents.sequence_encoder import SequenceEncoder, SequenceEncoderConfig
from recarena.agents.sequence_state import SequenceStateOptions, pretrain_encoder


class SequenceFeaturesExtractor(BaseFeaturesExtractor):
    """SB3 features extractor: ``encoder.encode_last(history, responses)``, ``features_dim = encoder.hidden_dim``.

    Args:
        observation_space: the env's Dict space with ``history`` and ``responses``.
        item_embeddings: float [n_items, d] frozen LLM item encodings (the encoder's text part).
        encoder: the encoder's options.

    RL reads the encoder without dropout, as the native agents do: :meth:`train` keeps it in eval
    mode whatever SB3 asks (dropout is on only while :func:`pretrain_encoder` runs).
    """

    def __init__(self, observation_space: gym.spaces.Dict, item_embeddings: torch.Tensor,
                 encoder: SequenceEncoderConfig) -> None:
        if not isinstance(observation_space, gym.spaces.Dict) or not {"history", "responses"} <= set(
            observation_space.spaces
        ):
            raise ValueError("SequenceFeaturesExtractor needs a Dict observation space with 'history' and 'responses'")
        n_items = int(item_embeddings.shape[0])
        high = int(observation_space["history"].high.max())
        if high != n_items - 1:
            raise ValueError(f"observation space has {high + 1} items but item_embeddings has {n_items} rows")
        super().__init__(observation_space, encoder.hidden_dim)
        self.encoder = SequenceEncoder(n_items, encoder, item_embeddings.detach().to(torch.float32))
        self.encoder.eval()

    def train(self, mode: bool = True) -> SequenceFeaturesExtractor:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        history = observations["history"].round().long()  # SB3 hands Box observations over as float
        return self.encoder.encode_last(history, observations["responses"].to(torch.float32))


def policy_encoders(policy: nn.Module) -> list[SequenceEncoder]:
    """The encoders of every :class:`SequenceFeaturesExtractor` in ``policy`` (DQN's online and target
    Q-networks each have one; PPO shares one between actor and critic)."""
    return [m.encoder for m in policy.modules() if isinstance(m, SequenceFeaturesExtractor)]


def pretrain_policy_encoders(policy: nn.Module, env: Any, options: SequenceStateOptions, seed: int) -> dict[str, Any]:
    """Pretrain (or load from the cache) the sequence encoder on ``env.logged_sequences`` with
    :func:`pretrain_encoder` and load the weights into every extractor of ``policy``; returns
    :func:`pretrain_encoder`'s report."""
    encoders = policy_encoders(policy)
    if not encoders:
        raise ValueError("the policy has no SequenceFeaturesExtractor to pretrain")
    info = pretrain_encoder(encoders[0], env, options, seed)
    for other in encoders[1:]:
        other.load_state_dict(encoders[0].state_dict())
    return info
