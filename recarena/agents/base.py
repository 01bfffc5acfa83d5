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

from recarena.core.errors import CheckpointError

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
    ``losses/`` (td_loss, policy_loss, value_loss, entropy, ...), ``sim/``; train.py adds
    ``train_eval/`` (its periodic evaluation) and evaluate.py ``eval/``.
    """

    def log_scalar(self, tag: str, value: float, step: int) -> None: ...


class NullLogger:
    """A ScalarLogger that drops everything (for agents trained outside train.py)."""

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        pass


class TrainableAgent(Agent):
    """An agent that learns by interacting with a recarena vector environment.

    The contract between train.py and every trainable agent (tested family by family in
    ``tests/test_training_contract.py``):

    * **Steps.** A step is one user-step: a vector-env step of N users is N steps.
      :attr:`steps_done` counts every step the agent has trained on, across ``learn`` calls and
      restored from checkpoints; train.py reads its progress from it and nothing else.
    * **Chunks continue.** ``learn(env, steps, logger)`` trains until ``steps_done`` has grown by at
      least ``steps``, rounded up to the agent's unit (:meth:`step_unit`: a vector step of N users,
      or a whole rollout for PPO), and leaves the env where it stopped: the next call continues the
      same sessions from the agent's current observation. Chunk boundaries change nothing, so two
      calls of ``n * unit`` steps end with exactly the weights of one call of ``2 * n * unit`` (on
      CPU), and train.py's ``checkpoint_every`` does not change what is learned. Only an env the
      agent has not stepped yet (one that needs a reset) is reset, with a seed derived from the
      agent's.
    * **Logging.** Scalars (``charts/``, ``losses/``, ``sim/``) are logged at the first step at or
      past each multiple of :attr:`log_every` user-steps (train.py sets it from
      ``train.log_every``), whatever the chunks.
    * **Checkpoints.** ``checkpoint_state``/``restore_checkpoint_state`` capture everything needed
      to continue exactly (weights, optimiser, replay/rollout buffers, counters, generator states,
      the current observation), so a resumed CPU run ends with the same weights as an uninterrupted one.
    """

    log_every: int = 1_000
    """User-steps between log points (train.py passes ``train.log_every`` to the constructor)."""

    @property
    @abstractmethod
    def steps_done(self) -> int:
        """User-steps trained so far (every user of every vector step counts)."""

    def step_unit(self, num_envs: int) -> int:
        """User-steps ``learn`` advances in at a time on an env of ``num_envs`` users (default: one vector step)."""
        return int(num_envs)

    @abstractmethod
    def learn(self, env: Any, steps: int, logger: ScalarLogger) -> None:
        """Train for ``steps`` more user-steps (rounded up to :meth:`step_unit`) on ``env``, continuing
        where the previous call left it."""

    @abstractmethod
    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON-able metadata) that fully describe the training state."""

    @abstractmethod
    def restore_checkpoint_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`checkpoint_state`."""


def checkpoint_steps(state: dict[str, Any]) -> int:
    """The ``steps_done`` count a family's checkpoint state records (every family writes its
    :attr:`TrainableAgent.steps_done` under that one name; the native agents' checkpoints written
    before it are read from their ``global_step``, the same count); refuses a state without either."""
    steps = state.get("steps_done", state.get("global_step"))
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise CheckpointError(f"checkpoint state has no 'steps_done' (or older 'global_step') step count "
                              f"(got {steps!r}); not a checkpoint of a trainable agent")
    return steps


def next_log_point(step: int, log_every: int) -> int:
    """The first multiple of ``log_every`` after ``step``: the step at or past which the next log is due."""
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    return (step // log_every + 1) * log_every


def env_needs_reset(env: Any) -> bool:
    """True for a vector env that has not been reset yet (stepping it would fail)."""
    return bool(getattr(env, "_needs_reset", False))
