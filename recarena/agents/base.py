"""The one small interface every agent and baseline implements.

train.py and evaluate.py treat all agents alike through it: evaluation ranks items with
:meth:`Agent.scores` (replay, full ranking, off-policy estimators and simulation all use it), the
environment loop acts with :meth:`Agent.act`, and run directories store agents with
:meth:`Agent.save` / :func:`Agent.load`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

Observation = dict[str, torch.Tensor]
"""A batch of observations as built by ``recarena.envs.observation.build_observation`` ([B, ...] tensors)."""


class Agent(ABC):
    """A recommendation policy over a catalogue of ``n_items`` items."""

    name: ClassVar[str]
    n_items: int

    @abstractmethod
    def scores(self, observation: Observation) -> torch.Tensor:
        """Float [B, n_items]: how strongly the agent would recommend each item (higher = better)."""

    def act(
        self, observation: Observation, k: int = 1, action_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Int64 [B, k]: the k best-scored distinct items, skipping items where ``action_mask`` is False."""
        scores = self.scores(observation).to(torch.float32)
        if action_mask is not None:
            scores = scores.masked_fill(~action_mask.to(scores.device), float("-inf"))
        return torch.topk(scores, k, dim=-1).indices

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write the agent (weights in safetensors, config in JSON) into ``directory``, atomically."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path) -> Agent:
        """Read an agent written by :meth:`save`; never executes code from the files."""


class ScalarLogger(Protocol):
    """Where agents report scalars; train.py supplies one that writes TensorBoard event files.

    Tags use stable namespaces: ``charts/`` (episodic_return, ctr, session_length, sps),
    ``losses/`` (td_loss, policy_loss, value_loss, entropy, ...), ``eval/``, ``sim/``.
    """

    def log_scalar(self, tag: str, value: float, step: int) -> None: ...


class NullLogger:
    """A ScalarLogger that drops everything (for agents trained outside train.py)."""

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        pass


class TrainableAgent(Agent):
    """An agent that learns by interacting with a recarena vector environment.

    train.py drives it in chunks: ``learn(env, steps, logger)`` continues training for ``steps``
    more environment steps (a step = one user-step of the batched env), then train.py evaluates,
    logs and checkpoints. ``checkpoint_state``/``restore_checkpoint_state`` capture everything
    needed to continue exactly (weights, optimiser, replay/rollout buffers, counters, generator
    states), so a resumed CPU run ends with the same weights as an uninterrupted one.
    """

    @abstractmethod
    def learn(self, env: Any, steps: int, logger: ScalarLogger) -> None:
        """Train for ``steps`` more environment steps on ``env`` (an ``envs`` vector env)."""

    @abstractmethod
    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON-able metadata) that fully describe the training state."""

    @abstractmethod
    def restore_checkpoint_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`checkpoint_state`."""
