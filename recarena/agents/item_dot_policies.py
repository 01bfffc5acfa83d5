"""SB3 policies that score items by a dot product with the sequence encoder's item vectors (``features.head: item_dot``).

With ``features.state: sequence`` the policy's features are ``s = encoder.encode_last(history, responses)``
(:class:`recarena.agents.sequence_features.SequenceFeaturesExtractor`). Stock SB3 maps ``s`` to the
``n_items`` Q-values / logits with a freshly initialised MLP, so the pretrained encoder's ranking is not
there at step 0. These policies score item ``i`` as the native agents'
:class:`recarena.agents.sequence_state.SequenceItemScorer` does::

    score_i = s . v_i + b_i      v_i = encoder.item_vectors()[i] (the extractor's own encoder), b = 0 at first

so at step 0 the greedy action is the pretrained encoder's top item. DQN's Q-values (online and target
networks, each on its own extractor) and PPO's / MaskablePPO's action logits are these scores; PPO's
critic stays SB3's MLP on ``s`` (``net_arch`` is its hidden layers; the actor reads ``s`` directly).
The head only *references* the extractor's encoder (it is saved once, as the extractor's); its
parameter is the item bias.
"""

from __future__ import annotations

from typing import Any

import torch
from sb3_contrib.common.maskable.policies import MaskableMultiInputActorCriticPolicy
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from recarena.agents.sequence_encoder import SequenceEncoder
from recarena.agents.sequence_features import SequenceFeaturesExtractor


def _encoder_of(extractor: nn.Module) -> SequenceEncoder:
    if not isinstance(extractor, SequenceFeaturesExtractor):
        raise ValueError(f"the item_dot head needs the sequence features extractor, got {type(extractor).__name__}")
    return extractor.encoder


class ItemDotHead(nn.Module):
    """``scores = state @ encoder.item_vectors().T + item_bias``: float [B, hidden_dim] -> [B, n_items].

    ``encoder`` is held by reference, not registered as a submodule: its owner (the features
    extractor) trains, moves and saves it; this module's only parameter is ``item_bias`` (zeros).
    """

    def __init__(self, encoder: SequenceEncoder) -> None:
        super().__init__()
        self.item_bias = nn.Parameter(torch.zeros(encoder.n_items))
        self._encoder = (encoder,)  # a tuple: nn.Module does not register what is inside it

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.item_bias, state, self._encoder[0].item_vectors().T)


class ItemDotQNetwork(QNetwork):
    """SB3's Q-network with :class:`ItemDotHead` in place of the MLP (``q_net``); no hidden layers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.q_net = ItemDotHead(_encoder_of(self.features_extractor))


class ItemDotDQNPolicy(DQNPolicy):
    """DQN policy whose online and target Q-networks are :class:`ItemDotQNetwork` s (``net_arch`` unused)."""

    def make_q_net(self) -> ItemDotQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return ItemDotQNetwork(**net_args).to(self.device)


class _ItemDotActor:
    """Mixin for SB3 / sb3-contrib actor-critic policies: the actor's logits are :class:`ItemDotHead` on
    the features (no actor MLP), the critic keeps ``net_arch`` as its hidden layers."""

    def __init__(self, observation_space: Any, action_space: Any, lr_schedule: Any,
                 net_arch: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(observation_space, action_space, lr_schedule,  # type: ignore[call-arg]
                         net_arch={"pi": [], "vf": list(net_arch or [])}, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)  # type: ignore[misc]
        self.action_net = ItemDotHead(_encoder_of(self.pi_features_extractor))  # type: ignore[attr-defined]
        # SB3 built the optimiser over the Linear action_net just replaced: rebuild it over the head.
        self.optimizer = self.optimizer_class(  # type: ignore[attr-defined]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs  # type: ignore[attr-defined]
        )


class ItemDotActorCriticPolicy(_ItemDotActor, MultiInputActorCriticPolicy):
    """PPO's policy with the item-vector actor head."""


class ItemDotMaskableActorCriticPolicy(_ItemDotActor, MaskableMultiInputActorCriticPolicy):
    """MaskablePPO's policy with the item-vector actor head."""
