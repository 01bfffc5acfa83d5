"""DQN, PPO and MaskablePPO from Stable-Baselines3 / sb3-contrib behind recarena's TrainableAgent.

The policies read the observation through :class:`recarena.agents.features.HistoryFeaturesExtractor` (frozen
cached LLM item encodings, a learned projection, a mean/GRU/attention pooler, plus the llm_state),
so every SB3 agent sees an LLM-encoded state; or, with ``features.state: sequence``, through the
shared causal sequence encoder (:mod:`recarena.agents.sequence_features`), pretrained on the logs
(``features.pretrain_epochs``) when built with an env and fine-tuned by SB3's loss.

What these wrappers add to stock SB3:

* **Chunked training that resumes exactly.** train.py calls :meth:`SB3Agent.learn` for a chunk of
  steps, then checkpoints. :meth:`checkpoint_state` captures the policy and optimiser
  ``state_dict``\\ s, the replay buffer arrays, SB3's counters, the last observation, and every
  random state SB3 draws from (torch and NumPy global generators, the action space's generator),
  all as tensors + JSON - SB3's own ``.zip`` format pickles parts of the model, so it is not used.
  PPO's rollout buffer is empty at chunk boundaries (a chunk always ends after a full rollout and
  its update), so it needs no saving.
* **Schedules over the whole run.** Exploration and learning-rate schedules run over the planned
  ``total_steps`` of the run, not over each ``learn`` call.
* **Per-user epsilon-greedy.** SB3's DQN draws one exploration coin for the whole batch of envs;
  here each user explores independently.
* **Stable TensorBoard tags.** A callback logs ``charts/episodic_return``, ``charts/ctr``,
  ``charts/session_length``, ``charts/sps`` and ``sim/coverage``, ``sim/diversity``,
  ``sim/leave_rate``; SB3's ``train/*`` values are forwarded as ``losses/*``.

Randomness: SB3 draws from the global torch and NumPy generators. The model seeds them once when it
is built (from the agent's seed) and checkpoints restore them; nothing else in recarena's training
loop uses them.
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from gymnasium import spaces
from pydantic import Field, model_validator
from sb3_contrib import MaskablePPO
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from recarena.agents.base import (
    NullLogger,
    Observation,
    ScalarLogger,
    TrainableAgent,
    env_needs_reset,
    next_log_point,
)
from recarena.agents.features import HistoryFeaturesExtractor
from recarena.agents.item_dot_policies import (
    ItemDotActorCriticPolicy,
    ItemDotDQNPolicy,
    ItemDotMaskableActorCriticPolicy,
)
from recarena.agents.item_scorer import LoggedNextItems, next_item_loss
from recarena.agents.sequence_features import SequenceFeaturesExtractor, pretrain_policy_encoders
from recarena.agents.sequence_state import SequenceStateOptions
from recarena.agents.serialization import load_agent_files, save_agent_files
from recarena.agents.session_stats import SUMS, SessionStats
from recarena.core.checkpoint import check_identity, flatten_state, unflatten_state
from recarena.core.config import config_dataclass, from_dict, migrate_renamed_keys, to_dict
from recarena.core.errors import CheckpointError, ConfigError
from recarena.envs.observation import observation_space as full_observation_space

# --------------------------------------------------------------------------------------- configs


@config_dataclass
class FeaturesConfig(SequenceStateOptions):
    """The features extractor shared by every SB3 agent: which state the policy reads.

    ``state: pooled`` (default): :class:`HistoryFeaturesExtractor`, the LLM-encoded history pooled by
    ``pooler`` (``embed_dim``, ``use_llm_state``). ``state: sequence``:
    :class:`recarena.agents.sequence_features.SequenceFeaturesExtractor`, the shared causal sequence
    encoder (``encoder``), optionally pretrained on the env's logged sequences (``pretrain_*``, the
    same cache as the native agents) and fine-tuned by SB3's loss. ``state``, ``encoder`` and
    ``pretrain_*`` are the native agents' :class:`SequenceStateOptions`, under the same names; they
    live here, not at the config's top level as in the native configs, because in an SB3 config this
    section is the whole state encoder (the extractor) and the top level is SB3's algorithm.
    """

    embed_dim: Annotated[int, Field(ge=1)] = 64
    """Width of the projected history tokens and of the pooled history vector (``state: pooled``)."""
    pooler: Literal["mean", "gru", "attention"] = "mean"
    """How the history tokens are pooled into one vector (``state: pooled``)."""
    use_llm_state: bool = True
    """Append the env's LLM-encoded state (response-weighted mean item encoding) to the pooled vector
    (``state: pooled``; the sequence state is the encoder's output alone)."""
    head: Literal["mlp", "item_dot"] = "mlp"
    """How the state becomes item scores (DQN's Q-values, PPO's logits). ``mlp``: SB3's MLP head
    (``net_arch``). ``item_dot`` (``state: sequence`` only): ``state . v_i + b_i`` with the encoder's
    item vectors ``v_i`` (:mod:`recarena.agents.item_dot_policies`), so at step 0 the agent ranks as the
    pretrained encoder; DQN then has no hidden layers, PPO's ``net_arch`` is the critic's."""

    @model_validator(mode="after")
    def _check_head(self) -> FeaturesConfig:
        if self.head == "item_dot" and self.state != "sequence":
            raise ValueError(f"head: item_dot needs state: sequence (the encoder's item vectors; got {self.state!r})")
        return self


@config_dataclass
class NextItemOptions:
    """The auxiliary next-item loss, shared by the SB3 agents' configs."""

    next_item_coef: Annotated[float, Field(ge=0)] = 0.0
    """> 0: after each of SB3's updates, as many SGD steps (its optimiser, its gradient clipping) on
    ``next_item_coef`` x the softmax cross-entropy of real users' next logged items under the
    policy's scores (Q-values or logits), as the update took gradient steps. Needs a simulator with
    logged sequences. 0 = off."""
    next_item_batch_size: Annotated[int, Field(ge=1)] = 256
    """Logged (history prefix, next item) examples per step of that loss."""
    next_item_min_rating: Annotated[float, Field(ge=0)] = 0.0
    """> 0: only next events rated at least this (e.g. 4 = liked) count."""


@config_dataclass
class DQNConfig(NextItemOptions):
    """Stable-Baselines3 DQN on the LLM-encoded state (steps are user-steps of the vector env)."""

    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    net_arch: list[Annotated[int, Field(ge=1)]] = field(default_factory=lambda: [256])
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    buffer_size: Annotated[int, Field(ge=1)] = 50_000
    learning_starts: Annotated[int, Field(ge=0)] = 1_000
    batch_size: Annotated[int, Field(ge=1)] = 128
    gamma: Annotated[float, Field(ge=0, le=1)] = 0.9
    train_freq: Annotated[int, Field(ge=1)] = 1
    """Vector-env steps (each one step of every user) between gradient updates."""
    gradient_steps: Annotated[int, Field(ge=1)] = 1
    target_update_interval: Annotated[int, Field(ge=1)] = 2_000
    exploration_steps: Annotated[int, Field(ge=1)] = 20_000
    """User-steps over which epsilon decays linearly (SB3's ``exploration_fraction`` is this over the
    run's planned total steps, :func:`sb3_exploration_fraction`)."""
    exploration_initial_eps: Annotated[float, Field(ge=0, le=1)] = 1.0
    exploration_final_eps: Annotated[float, Field(ge=0, le=1)] = 0.05
    max_grad_norm: float = 10.0
    replay_llm_state: bool = False
    """Store llm_state in the replay buffer; False recomputes it from the history (10x smaller buffer)."""
    mask: Literal["env", "none"] = "env"
    """``env``: while training, act (greedy and random) only among items the env's action mask allows
    (not yet consumed, where the env masks), as evaluation does; ``none``: among every item. TD
    targets still max over all items."""

    @model_validator(mode="after")
    def _epsilon_falls(self) -> DQNConfig:
        if self.exploration_final_eps > self.exploration_initial_eps:
            raise ValueError("need 0 <= exploration_final_eps <= exploration_initial_eps <= 1")
        return self


@config_dataclass
class PPOConfig(NextItemOptions):
    """Stable-Baselines3 PPO (or sb3-contrib MaskablePPO) on the LLM-encoded state."""

    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    net_arch: list[Annotated[int, Field(ge=1)]] = field(default_factory=lambda: [256])
    learning_rate: Annotated[float, Field(gt=0)] = 3e-4
    n_steps: Annotated[int, Field(ge=1)] = 64
    """Vector-env steps per rollout (a rollout is n_steps x num_envs user-steps)."""
    batch_size: Annotated[int, Field(ge=1)] = 256
    n_epochs: Annotated[int, Field(ge=1)] = 4
    gamma: Annotated[float, Field(ge=0, le=1)] = 0.9
    gae_lambda: Annotated[float, Field(ge=0, le=1)] = 0.95
    clip_range: Annotated[float, Field(gt=0)] = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_advantage: bool = True


# --------------------------------------------------------------------------------------- SB3 subclasses


class _RunProgress:
    """Mixin: schedules see progress over the planned run, not over the current ``learn`` call."""

    planned_total_steps: int = 0

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any):  # type: ignore[override]
        total, callback = super()._setup_learn(total_timesteps, *args, **kwargs)  # type: ignore[misc]
        self._total_timesteps = max(int(self.planned_total_steps), int(total))
        return total, callback


class _AfterUpdate:
    """Mixin: run ``after_update()`` (the agent's next-item steps) after each of SB3's updates."""

    after_update: Any = None

    def train(self, *args: Any, **kwargs: Any) -> None:
        super().train(*args, **kwargs)  # type: ignore[misc]
        if self.after_update is not None:
            self.after_update()


def sb3_exploration_fraction(exploration_steps: int, total_steps: int) -> float:
    """SB3's ``exploration_fraction`` for epsilon to reach its final value after ``exploration_steps``
    of a run of ``total_steps`` (above 1 when the run ends before that: epsilon never gets there)."""
    if exploration_steps < 1 or total_steps < 1:
        raise ValueError(f"need exploration_steps >= 1 and total_steps >= 1, got {exploration_steps}, {total_steps}")
    return exploration_steps / total_steps


class _DQN(_AfterUpdate, _RunProgress, DQN):
    """DQN whose epsilon-greedy exploration flips one coin per user, not one per batch, and decays
    over ``exploration_steps`` user-steps whatever the run's length."""

    exploration_steps: int = 1

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any):  # type: ignore[override]
        total, callback = super()._setup_learn(total_timesteps, *args, **kwargs)
        self.exploration_fraction = sb3_exploration_fraction(self.exploration_steps, self._total_timesteps)
        self.exploration_schedule = LinearSchedule(
            self.exploration_initial_eps, self.exploration_final_eps, self.exploration_fraction
        )
        return total, callback

    def predict(self, observation, state=None, episode_start=None, deterministic=False):  # type: ignore[override]
        action, state = self.policy.predict(observation, state, episode_start, deterministic)
        if deterministic or self.exploration_rate <= 0.0:
            return action, state
        if not self.policy.is_vectorized_observation(observation):
            if np.random.rand() < self.exploration_rate:
                action = np.array(np.random.randint(self.action_space.n))
            return action, state
        explore = np.random.rand(action.shape[0]) < self.exploration_rate
        random_actions = np.random.randint(self.action_space.n, size=action.shape[0])
        return np.where(explore, random_actions, action), state

    mask_actions: bool = False  # the agent's mask == "env"

    def _sample_action(self, learning_starts, action_noise=None, n_envs=1):  # type: ignore[override]
        """Epsilon-greedy per user during training; with ``mask_actions`` both the greedy and the
        random choice are restricted to the items the env's action mask allows (as in evaluation)."""
        n_items = int(self.action_space.n)
        masks = self.env.action_masks() if self.mask_actions and hasattr(self.env, "action_masks") else None
        if self.num_timesteps < learning_starts:
            explore = np.ones(n_envs, dtype=bool)
        else:
            explore = np.random.rand(n_envs) < self.exploration_rate
        action = np.zeros(n_envs, dtype=np.int64)
        if not explore.all():
            observation, _ = self.policy.obs_to_tensor(self._last_obs)
            with torch.no_grad():
                q_values = self.q_net(observation)
            if masks is not None:
                q_values = q_values.masked_fill(~torch.as_tensor(masks, device=q_values.device), float("-inf"))
            action = q_values.argmax(dim=1).cpu().numpy()
        if explore.any():
            if masks is None:
                random_actions = np.random.randint(n_items, size=n_envs)
            else:
                draws = np.random.rand(n_envs, n_items)
                draws[~masks] = -1.0
                random_actions = draws.argmax(axis=1)
            action = np.where(explore, random_actions, action)
        return action, action


class _PPO(_AfterUpdate, _RunProgress, PPO):
    pass


class _MaskablePPO(_AfterUpdate, _RunProgress, MaskablePPO):
    pass


class _SpacesOnlyVecEnv(VecEnv):
    """A VecEnv that only carries spaces: SB3 models are built against it before a real env arrives."""

    def __init__(self, num_envs: int, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        super().__init__(num_envs, observation_space, action_space)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this agent has no environment yet; pass one to learn()")

    reset = step_async = step_wait = _fail

    def close(self) -> None:
        pass

    def get_attr(self, attr_name, indices=None):  # type: ignore[override]
        return [None] * self.num_envs

    def set_attr(self, attr_name, value, indices=None):  # type: ignore[override]
        pass

    def env_method(self, method_name, *args, indices=None, **kwargs):  # type: ignore[override]
        return self._fail()

    def env_is_wrapped(self, wrapper_class, indices=None):  # type: ignore[override]
        return [False] * self.num_envs


class _SelectKeys(VecEnvWrapper):
    """Keeps only some observation keys (drops llm_state from replay buffers; policies recompute it)."""

    def __init__(self, venv: VecEnv, keys: list[str]) -> None:
        self.keys = list(keys)
        space = spaces.Dict({k: venv.observation_space[k] for k in self.keys})
        super().__init__(venv, observation_space=space)

    def _select(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: observation[k] for k in self.keys}

    def reset(self):  # type: ignore[override]
        return self._select(self.venv.reset())

    def step_wait(self):  # type: ignore[override]
        observation, reward, done, infos = self.venv.step_wait()
        for info in infos:  # PPO bootstraps truncated sessions from it through the policy's space
            if "terminal_observation" in info:
                info["terminal_observation"] = self._select(info["terminal_observation"])
        return self._select(observation), reward, done, infos


# --------------------------------------------------------------------------------------- logging


_SB3_TAGS = {
    "train/policy_gradient_loss": "losses/policy_loss",
    "train/value_loss": "losses/value_loss",
    "train/entropy_loss": "losses/entropy",
    "train/approx_kl": "losses/approx_kl",
    "train/clip_fraction": "losses/clip_fraction",
    "train/explained_variance": "losses/explained_variance",
    "rollout/exploration_rate": "charts/exploration_rate",
    "train/learning_rate": "charts/learning_rate",
    "train/next_item_loss": "losses/next_item",
}


class _ForwardWriter(KVWriter):
    """Forwards SB3's ``train/*`` (and ``rollout/exploration_rate``...) values to a ScalarLogger under
    ``losses/*`` / ``charts/*``: each tag at most once per window of ``every`` steps.

    The agent's episode callback dumps SB3's logger at each multiple of ``every``, so values SB3 has
    recorded by then are logged there; SB3's own dumps (after each PPO update, at DQN episode ends)
    add what was recorded later in the window.
    """

    def __init__(self, every: int, tags: dict[str, str]) -> None:
        self.target: ScalarLogger = NullLogger()
        self.every = every
        self.tags = tags
        self.next_step: dict[str, int] = {}

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        for key, value in key_values.items():
            if key not in self.tags or not isinstance(value, (int, float, np.floating, np.integer)):
                continue
            tag = self.tags[key]
            if step < self.next_step.get(tag, self.every):  # the first log point closes the first window
                continue
            self.target.log_scalar(tag, float(value), step)
            self.next_step[tag] = next_log_point(step, self.every)

    def close(self) -> None:
        pass


class _EpisodeStats(BaseCallback):
    """Feeds every vector step to the agent's :class:`SessionStats` (the native agents' session
    bookkeeping: the same ``charts/*`` and ``sim/*`` tags and definitions) and writes them, with SB3's
    losses, at each multiple of ``agent.log_every`` user-steps."""

    def __init__(self, agent: SB3Agent, logger: ScalarLogger) -> None:
        super().__init__()
        self.agent = agent
        self.target = logger

    def _on_step(self) -> bool:
        rewards = torch.as_tensor(np.asarray(self.locals["rewards"], dtype=np.float32).reshape(-1))
        dones = torch.as_tensor(np.asarray(self.locals["dones"], dtype=bool).reshape(-1))
        actions = torch.as_tensor(np.asarray(self.locals["actions"]).reshape(len(rewards), -1).astype(np.int64))
        infos = self.locals["infos"]
        clicked = torch.tensor([bool(info["clicked"]) for info in infos])
        truncated = torch.tensor([bool(info.get("TimeLimit.truncated", False)) for info in infos]) & dones
        self.agent.stats.update(actions[:, :1], rewards, dones & ~truncated, truncated, clicked)
        step = self.model.num_timesteps
        if step >= self.agent.next_log:
            self.agent.stats.log(self.target, step)
            self.agent.next_log = next_log_point(step, self.agent.log_every)
            self.model.logger.dump(step)  # SB3's losses recorded so far, at this log point too
        return True


# --------------------------------------------------------------------------------------- agents


class SB3Agent(TrainableAgent):
    """Base of the SB3-backed agents; subclasses pick the algorithm and config class.

    Args:
        n_items: catalogue size (the action space is ``Discrete(n_items)``).
        config: the agent's typed config (``config_class``).
        env: a ``RecommendationVectorEnv`` to take the observation space, item encodings and number
            of users from (or give ``item_embeddings`` + ``observation_space`` + ``num_envs``).
        seed: seeds weight initialisation and SB3's random draws.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        total_steps: planned length of the run (schedules decay over it); 0 = per ``learn`` call.
        log_every: steps between ``charts/*`` and ``sim/*`` log points.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    algorithm: ClassVar[type]
    item_dot_policy: ClassVar[type]
    """SB3 policy class for ``features.head: item_dot`` (otherwise SB3's ``MultiInputPolicy``)."""
    loss_tag: ClassVar[str] = "losses/loss"

    def __init__(
        self,
        n_items: int,
        config: Any,
        *,
        env: Any = None,
        item_embeddings: torch.Tensor | None = None,
        observation_space: spaces.Dict | None = None,
        num_envs: int | None = None,
        seed: int = 0,
        device: str = "cpu",
        total_steps: int = 0,
        log_every: int = 1_000,
    ) -> None:
        if env is not None:
            item_embeddings = env.simulator.item_embeddings if item_embeddings is None else item_embeddings
            observation_space = observation_space or env.single_observation_space
            num_envs = num_envs or env.num_envs
        if item_embeddings is None or observation_space is None:
            raise ConfigError(f"agent '{self.name}' needs env=... (or item_embeddings and observation_space)")
        if not isinstance(config, self.config_class):
            raise ConfigError(f"agent '{self.name}' takes a {self.config_class.__name__}, got {type(config).__name__}")
        if int(item_embeddings.shape[0]) != n_items:
            raise ConfigError(f"item_embeddings has {item_embeddings.shape[0]} rows, n_items is {n_items}")
        if log_every < 1:
            raise ConfigError(f"log_every must be >= 1, got {log_every}")
        self.n_items = int(n_items)
        self.config = config
        self.seed = int(seed)
        self.log_every = int(log_every)
        self.item_embeddings = item_embeddings.detach().to("cpu", torch.float32).clone()
        self.env_observation_space = observation_space
        self.policy_keys = self._policy_keys(observation_space)
        policy_space = spaces.Dict({k: observation_space[k] for k in self.policy_keys})
        self.num_envs = int(num_envs or 1)
        self.model = self._build_model(
            _SpacesOnlyVecEnv(self.num_envs, policy_space, spaces.Discrete(self.n_items)), device
        )
        self.model.planned_total_steps = int(total_steps)
        self._writer = _ForwardWriter(self.log_every, {**_SB3_TAGS, "train/loss": self.loss_tag})
        self.model.set_logger(Logger(folder=None, output_formats=[self._writer]))
        self._env: Any = None
        self.stats = SessionStats(self.num_envs, self.item_embeddings, torch.device("cpu"))
        self.next_log = self.log_every  # the first step at or past which charts/* and sim/* are written
        self.logged: LoggedNextItems | None = None  # next-item examples, built from the env when used
        self.next_item_generator = torch.Generator().manual_seed(self.seed)
        self.pretrain_info: dict[str, Any] | None = None
        if env is not None and config.features.pretrain_epochs:
            # Cached next-item pretraining of the sequence encoder, before any RL; a resumed run repeats
            # it (a cache hit) and the checkpoint's weights are then restored over it. It forks the
            # global RNG, so SB3's seeded draws are the same with or without it.
            self.pretrain_info = pretrain_policy_encoders(self.model.policy, env, config.features, self.seed)

    # ---------------------------------------------------------------- construction helpers

    def _policy_keys(self, observation_space: spaces.Dict) -> list[str]:
        keys = ["history", "responses"] if self.config.features.state == "sequence" else ["history", "responses", "llm_state"]
        return [k for k in keys if k in observation_space.spaces]

    def _policy_kwargs(self) -> dict[str, Any]:
        features = self.config.features
        if features.state == "sequence":
            return {
                "features_extractor_class": SequenceFeaturesExtractor,
                "features_extractor_kwargs": {"item_embeddings": self.item_embeddings, "encoder": features.encoder},
                "net_arch": list(self.config.net_arch),
            }
        return {
            "features_extractor_class": HistoryFeaturesExtractor,
            "features_extractor_kwargs": {
                "item_embeddings": self.item_embeddings,
                "embed_dim": features.embed_dim,
                "pooler": features.pooler,
                "use_llm_state": features.use_llm_state,
            },
            "net_arch": list(self.config.net_arch),
        }

    def _policy(self) -> str | type:
        """The SB3 policy to build: the item-vector head's class, or SB3's stock one."""
        return self.item_dot_policy if self.config.features.head == "item_dot" else "MultiInputPolicy"

    def _build_model(self, placeholder: VecEnv, device: str) -> Any:
        raise NotImplementedError

    # ---------------------------------------------------------------- Agent interface

    @property
    def steps_done(self) -> int:
        """User-steps trained so far (SB3's ``num_timesteps``)."""
        return int(self.model.num_timesteps)

    @torch.no_grad()
    def scores(self, observation: Observation) -> torch.Tensor:
        """Float [B, n_items]: Q-values (DQN) or policy logits (PPO) for a batch of observations."""
        policy = self.model.policy
        policy.set_training_mode(False)
        obs = {k: torch.as_tensor(observation[k]).to(policy.device) for k in self.policy_keys}
        return self._scores(policy, obs)

    def _scores(self, policy: Any, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def step_unit(self, num_envs: int) -> int:
        """SB3 collects whole rollouts: ``train_freq`` (DQN) or ``n_steps`` (PPO) vector steps."""
        return self._rollout_steps() * int(num_envs)

    def _rollout_steps(self) -> int:
        raise NotImplementedError

    def learn(self, env: Any, steps: int, logger: ScalarLogger | None = None) -> None:
        """Train for ``steps`` more user-steps (rounded up to :meth:`step_unit`) on ``env`` (a
        RecommendationVectorEnv), continuing its sessions, logging to ``logger``."""
        if steps <= 0:
            return
        self._attach(env)
        logger = logger or NullLogger()
        self._writer.target = logger
        self.model.learn(
            total_timesteps=int(steps),
            callback=_EpisodeStats(self, logger),
            reset_num_timesteps=False,
            log_interval=1,
            progress_bar=False,
            **self._learn_kwargs(),
        )

    def _learn_kwargs(self) -> dict[str, Any]:
        return {}

    def _attach(self, env: Any) -> None:
        """Hand ``env`` to SB3 (through the VecEnv adapter) the first time it is seen."""
        if env is self._env:
            return
        from recarena.envs.sb3 import SB3VecEnvAdapter

        if env.num_envs != self.num_envs:
            raise ConfigError(f"this agent was built for {self.num_envs} users per step, the env has {env.num_envs}")
        venv: VecEnv = env if isinstance(env, VecEnv) else SB3VecEnvAdapter(env)
        if list(venv.observation_space.spaces) != self.policy_keys:
            venv = _SelectKeys(venv, self.policy_keys)
        fresh = self.model._last_obs is None or env_needs_reset(env)
        if fresh:
            venv.seed(self.seed)  # SB3 resets the env on the next learn(): make that reset seeded
        # Otherwise (the env this agent stepped, or one restored with it from a checkpoint) SB3
        # continues the sessions from its last observation.
        self.model.set_env(venv, force_reset=fresh)
        self._env = env
        if self.config.next_item_coef > 0 and self.logged is None:
            self.logged = LoggedNextItems.from_env(env, self.config.next_item_min_rating)
            self.model.after_update = self._next_item_update

    def _gradient_steps_per_update(self) -> int:
        """Gradient steps SB3 takes in one update (``train()`` call)."""
        raise NotImplementedError

    def _next_item_update(self) -> None:
        """SGD steps on the next-item cross-entropy, one per gradient step of the update just made."""
        policy, config = self.model.policy, self.config
        policy.set_training_mode(True)
        losses = []
        for _ in range(self._gradient_steps_per_update()):
            observation, target = self.logged.sample(config.next_item_batch_size, self.next_item_generator)
            obs = {k: observation[k].to(policy.device) for k in self.policy_keys}
            scores = self._scores(policy, obs)
            loss = config.next_item_coef * next_item_loss(scores, obs["history"], target.to(policy.device))
            policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            policy.optimizer.step()
            losses.append(loss.detach())
        self.model.logger.record("train/next_item_loss", float(torch.stack(losses).mean()) / config.next_item_coef)

    # ---------------------------------------------------------------- save / load

    def _spaces_record(self) -> dict[str, Any]:
        space = self.env_observation_space
        return {
            "keys": list(space.spaces),
            "history_length": int(space["history"].shape[0]),
            "embedding_dim": int(self.item_embeddings.shape[1]),
        }

    @staticmethod
    def _space_from_record(n_items: int, record: dict[str, Any]) -> spaces.Dict:
        full = full_observation_space(n_items, record["history_length"], record["embedding_dim"])
        return spaces.Dict({k: full[k] for k in record["keys"]})

    def save(self, directory: str | Path) -> None:
        tensors = {f"policy/{k}": v for k, v in self.model.policy.state_dict().items()}
        tensors["item_embeddings"] = self.item_embeddings
        save_agent_files(
            directory,
            self.name,
            self.config,
            tensors,
            extra={"n_items": self.n_items, "observation_space": self._spaces_record(), "seed": self.seed},
        )

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu", **context: Any) -> SB3Agent:
        config_data, tensors, extra = load_agent_files(directory, cls.name, cls.config_class)
        config = from_dict(cls.config_class, config_data, prefix=f"{directory}: config.")
        if "item_embeddings" not in tensors:
            raise CheckpointError(f"{directory}: saved agent has no item_embeddings")
        n_items = int(extra["n_items"])
        with warnings.catch_warnings():
            # Loaded for one user per step (a rollout buffer sized for the training users could take
            # gigabytes), SB3's PPO warns that n_steps x 1 is not a multiple of batch_size: advice
            # about training, and nothing is trained here, so exactly that warning is silenced.
            warnings.filterwarnings("ignore", message=r"You have specified a mini-batch size of", category=UserWarning)
            agent = cls(
                n_items,
                config,
                item_embeddings=tensors["item_embeddings"],
                observation_space=cls._space_from_record(n_items, extra["observation_space"]),
                num_envs=1,
                seed=int(extra.get("seed", 0)),
                device=device,
            )
        weights = {k[len("policy/"):]: v for k, v in tensors.items() if k.startswith("policy/")}
        agent._load_policy(weights, directory)
        return agent

    def _load_policy(self, weights: dict[str, torch.Tensor], where: Any) -> None:
        policy = self.model.policy
        expected = policy.state_dict()
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{where}: policy weights do not match (missing {missing}, unexpected {unexpected})")
        for key, value in weights.items():
            if value.shape != expected[key].shape:
                raise CheckpointError(
                    f"{where}: policy weight {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
                )
        policy.load_state_dict({k: v.to(policy.device) for k, v in weights.items()})

    # ---------------------------------------------------------------- checkpoints

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be restored into this agent."""
        return {
            "agent": self.name,
            "n_items": self.n_items,
            "num_envs": self.num_envs,
            "policy_keys": list(self.policy_keys),
            "config": to_dict(self.config),
        }

    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        model = self.model
        state: dict[str, Any] = {
            "policy": model.policy.state_dict(),
            "optimizer": model.policy.optimizer.state_dict(),
            "last_obs": model._last_obs,
            "last_episode_starts": model._last_episode_starts,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "action_space": model.action_space.np_random.bit_generator.state,
            },
            "counters": {
                "num_timesteps": int(model.num_timesteps),
                "n_updates": int(model._n_updates),
                "episode_num": int(model._episode_num),
                "current_progress_remaining": float(model._current_progress_remaining),
            },
            "stats": {**self.stats.state(), "next_log": self.next_log},
            "writer_next_step": dict(self._writer.next_step),
            "next_item_generator": self.next_item_generator.get_state(),
        }
        state.update(self._extra_state())
        tensors, skeleton = flatten_state(state)
        return tensors, {"identity": self.identity(), "state": skeleton}

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def restore_checkpoint_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        if "identity" not in metadata or "state" not in metadata:
            raise CheckpointError("checkpoint metadata lacks 'identity'/'state'; not an SB3 agent checkpoint")
        check_identity(self.identity(), self._migrated_identity(metadata["identity"]), "agent checkpoint")
        state = unflatten_state(tensors, metadata["state"])
        model = self.model
        self._load_policy(state["policy"], "agent checkpoint")
        model.policy.optimizer.load_state_dict(state["optimizer"])
        model._last_obs = state["last_obs"]
        model._last_episode_starts = state["last_episode_starts"]
        counters = state["counters"]
        model.num_timesteps = counters["num_timesteps"]
        model._n_updates = counters["n_updates"]
        model._episode_num = counters["episode_num"]
        model._current_progress_remaining = counters["current_progress_remaining"]
        self._restore_extra_state(state)
        stats = dict(state["stats"])
        self.next_log = int(stats.pop("next_log"))
        self.stats.load_state(stats if "sums" in stats else _session_stats_of_old_layout(stats))
        next_step = state["writer_next_step"]
        # An int in checkpoints written when every tag shared one next step.
        self._writer.next_step = dict(next_step) if isinstance(next_step, dict) else dict.fromkeys(self._writer.tags.values(), int(next_step))
        self.next_item_generator.set_state(state["next_item_generator"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        model.action_space.np_random.bit_generator.state = rng["action_space"]

    def _restore_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _migrated_identity(self, identity: Any) -> Any:
        """A checkpoint's identity with its config as this version reads it: old key names as the new
        ones (``migrate_renamed_keys``, over the run's planned total steps: what the run's config.yaml
        migrates to) and options added since at their defaults, so an older checkpoint of this run matches."""
        config = identity.get("config") if isinstance(identity, dict) else None
        if not isinstance(config, dict):
            return identity
        migrated, _ = migrate_renamed_keys(config, self.config_class, self.model.planned_total_steps or None)
        try:
            return {**identity, "config": to_dict(from_dict(self.config_class, migrated))}
        except ConfigError:
            return identity  # check_identity names what differs


def _session_stats_of_old_layout(stats: dict[str, Any]) -> dict[str, torch.Tensor]:
    """SessionStats' state from the SB3 session statistics checkpointed before SessionStats (NumPy
    running return/length, previous item, shown mask and window sums, named as SessionStats' sums):
    each maps to one field."""
    window = stats.get("window")
    sums = [float(window.get(k, 0.0)) for k in SUMS] if isinstance(window, dict) else [0.0] * len(SUMS)
    return {"episode_return": torch.as_tensor(stats["return"], dtype=torch.float32),
            "episode_length": torch.as_tensor(stats["length"], dtype=torch.float32),
            "previous_item": torch.as_tensor(stats["previous"], dtype=torch.int64),
            "sums": torch.tensor(sums, dtype=torch.float32),
            "shown": torch.as_tensor(stats["shown"], dtype=torch.bool)}


class DQNAgent(SB3Agent):
    """Stable-Baselines3 DQN; ``scores`` are the Q-values of every item."""

    name = "dqn"
    config_class = DQNConfig
    algorithm = _DQN
    item_dot_policy = ItemDotDQNPolicy
    loss_tag = "losses/td_loss"

    def _policy_keys(self, observation_space: spaces.Dict) -> list[str]:
        keys = super()._policy_keys(observation_space)
        if not self.config.replay_llm_state and "llm_state" in keys:
            keys.remove("llm_state")
        return keys

    def _build_model(self, placeholder: VecEnv, device: str) -> Any:
        c = self.config
        return _DQN(
            self._policy(),
            placeholder,
            learning_rate=c.learning_rate,
            buffer_size=c.buffer_size,
            learning_starts=c.learning_starts,
            batch_size=c.batch_size,
            gamma=c.gamma,
            train_freq=c.train_freq,
            gradient_steps=c.gradient_steps,
            target_update_interval=c.target_update_interval,
            exploration_fraction=1.0,  # set from exploration_steps when learning starts (_DQN._setup_learn)
            exploration_initial_eps=c.exploration_initial_eps,
            exploration_final_eps=c.exploration_final_eps,
            max_grad_norm=c.max_grad_norm,
            policy_kwargs=self._policy_kwargs(),
            seed=self.seed,
            device=device,
            verbose=0,
        )

    def _scores(self, policy: Any, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return policy.q_net(obs)

    def _gradient_steps_per_update(self) -> int:
        return self.config.gradient_steps

    def _rollout_steps(self) -> int:
        return self.config.train_freq

    def _attach(self, env: Any) -> None:
        super()._attach(env)
        self.model.mask_actions = self.config.mask == "env"
        self.model.exploration_steps = self.config.exploration_steps

    def _extra_state(self) -> dict[str, Any]:
        buffer = self.model.replay_buffer
        filled = buffer.buffer_size if buffer.full else buffer.pos
        return {
            "dqn": {"n_calls": int(self.model._n_calls), "exploration_rate": float(self.model.exploration_rate)},
            "replay": {
                "pos": int(buffer.pos),
                "full": bool(buffer.full),
                "observations": {k: v[:filled] for k, v in buffer.observations.items()},
                "next_observations": {k: v[:filled] for k, v in buffer.next_observations.items()},
                "actions": buffer.actions[:filled],
                "rewards": buffer.rewards[:filled],
                "dones": buffer.dones[:filled],
                "timeouts": buffer.timeouts[:filled],
            },
        }

    def _restore_extra_state(self, state: dict[str, Any]) -> None:
        self.model._n_calls = state["dqn"]["n_calls"]
        self.model.exploration_rate = state["dqn"]["exploration_rate"]
        buffer, replay = self.model.replay_buffer, state["replay"]
        filled = len(replay["rewards"])
        if filled > buffer.buffer_size:
            raise CheckpointError(f"replay buffer holds {filled} rows, this agent's buffer has {buffer.buffer_size}")

        def put(target: np.ndarray, source: np.ndarray, name: str) -> None:
            if source.shape[1:] != target.shape[1:] or source.dtype != target.dtype:
                raise CheckpointError(f"replay buffer '{name}' has {source.dtype} {source.shape}, expected {target.dtype}")
            target[:filled] = source

        for key in buffer.observations:
            put(buffer.observations[key], replay["observations"][key], f"observations/{key}")
            put(buffer.next_observations[key], replay["next_observations"][key], f"next_observations/{key}")
        for name in ("actions", "rewards", "dones", "timeouts"):
            put(getattr(buffer, name), replay[name], name)
        buffer.pos, buffer.full = replay["pos"], replay["full"]


class PPOAgent(SB3Agent):
    """Stable-Baselines3 PPO; ``scores`` are the policy's logits over items."""

    name = "ppo"
    config_class = PPOConfig
    algorithm = _PPO
    item_dot_policy = ItemDotActorCriticPolicy

    def _build_model(self, placeholder: VecEnv, device: str) -> Any:
        c = self.config
        return self.algorithm(
            self._policy(),
            placeholder,
            learning_rate=c.learning_rate,
            n_steps=c.n_steps,
            batch_size=c.batch_size,
            n_epochs=c.n_epochs,
            gamma=c.gamma,
            gae_lambda=c.gae_lambda,
            clip_range=c.clip_range,
            ent_coef=c.ent_coef,
            vf_coef=c.vf_coef,
            max_grad_norm=c.max_grad_norm,
            normalize_advantage=c.normalize_advantage,
            policy_kwargs=self._policy_kwargs(),
            seed=self.seed,
            device=device,
            verbose=0,
        )

    def _scores(self, policy: Any, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        features = policy.extract_features(obs)
        if isinstance(features, tuple):  # separate actor/critic extractors
            features = features[0]
        return policy.action_net(policy.mlp_extractor.forward_actor(features))

    def _gradient_steps_per_update(self) -> int:
        rollout = self.config.n_steps * self.num_envs
        return self.config.n_epochs * math.ceil(rollout / self.config.batch_size)

    def _rollout_steps(self) -> int:
        return self.config.n_steps


class MaskablePPOAgent(PPOAgent):
    """sb3-contrib MaskablePPO: never recommends an item the env's action mask rules out."""

    name = "maskable_ppo"
    algorithm = _MaskablePPO
    item_dot_policy = ItemDotMaskableActorCriticPolicy

    def _learn_kwargs(self) -> dict[str, Any]:
        return {"use_masking": True}
