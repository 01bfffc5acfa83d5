"""What the native (device-resident) DQN and PPO agents share: construction from train.py's context,
scoring under the configured precision, and saving/loading their network.

Each algorithm still reads top to bottom in its own file; this base holds only the plumbing that
would otherwise be copied between them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recarena.agents.base import Observation, TrainableAgent, env_needs_reset
from recarena.agents.item_scorer import autocast
from recarena.agents.sequence_state import pretrain_encoder
from recarena.agents.serialization import (
    generator_state,
    load_agent_files,
    require_tensors,
    save_agent_files,
    set_generator_state,
)
from recarena.agents.session_stats import SessionStats
from recarena.core.checkpoint import flatten_state, unflatten_state
from recarena.core.config import from_dict
from recarena.core.errors import CheckpointError

TORCHSCRIPT_DEPRECATION = r"`torch\.jit\.script_method` is deprecated"
"""The one warning :func:`compile_module` silences: the first ``torch.compile`` of a process imports
``torch._inductor``, which imports torch's own ``torch/utils/mkldnn.py``, whose 14 ``@torch.jit.script_method``
decorators each raise this DeprecationWarning (torch 2.13). Nothing of recarena uses TorchScript."""


def compile_module(module: Any) -> Any:
    """``torch.compile(module)`` without torch's TorchScript deprecation warnings from its own
    ``torch.utils.mkldnn`` (:data:`TORCHSCRIPT_DEPRECATION`); every other warning passes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCHSCRIPT_DEPRECATION, category=DeprecationWarning)
        return torch.compile(module)


class NativeAgent(TrainableAgent):
    """Base of the native agents. Subclasses build ``self.network`` (whose state is saved) in
    :meth:`build`, set ``self._score`` (observation -> [B, n_items] scores), and implement learning."""

    network: nn.Module
    optimizer: torch.optim.Optimizer
    observation: Observation | None  # the env's current observation between learn() chunks
    stats: SessionStats | None
    _score: Any

    def __init__(self, n_items: int, config: Any, *, item_embeddings: torch.Tensor | None = None,
                 slate_size: int | None = None, env: Any = None, device: str | None = None,
                 seed: int | None = None, log_every: int | None = None) -> None:
        """``env`` (train.py passes it) supplies the item encodings and slate size where they are not
        given; ``device``/``seed`` from the run override the config's, so seeding stays in one place.
        ``log_every`` (train.py passes ``train.log_every``): user-steps between log points; None
        keeps the agent's own default (:meth:`default_log_every`)."""
        if env is not None:
            item_embeddings = env.item_embeddings if item_embeddings is None else item_embeddings
            slate_size = env.slate_size if slate_size is None else slate_size
        if item_embeddings is None:
            raise ValueError(f"{self.name} needs item_embeddings (or an env to take them from)")
        if item_embeddings.shape[0] != n_items:
            raise ValueError(f"item_embeddings has {item_embeddings.shape[0]} rows, expected {n_items}")
        overrides = {k: v for k, v in (("device", device), ("seed", seed)) if v is not None}
        self.n_items = n_items
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self.slate_size = 1 if slate_size is None else slate_size
        self.device = torch.device(self.config.device)
        self.item_embeddings = item_embeddings
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching global state
            torch.manual_seed(self.config.seed)
            self.build(item_embeddings)
        self.pretrain_info: dict[str, Any] | None = None
        if env is not None and getattr(self.config, "pretrain_epochs", 0):
            self.pretrain(env)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.config.seed)
        self.log_every = int(log_every) if log_every is not None else self.default_log_every()
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")

    _steps_done: int

    @property
    def steps_done(self) -> int:
        """User-steps trained so far (the one step counter: every family has it, train.py reads it)."""
        return int(self._steps_done)

    def default_log_every(self) -> int:
        """The log cadence when none is given (outside train.py)."""
        return 1

    def log_due(self, last_log: int) -> bool:
        """Whether ``steps_done`` has reached a multiple of ``log_every`` past ``last_log``."""
        return self._steps_done // self.log_every > last_log // self.log_every

    def start_sessions(self, env: Any) -> bool:
        """Reset ``env`` (seeded by the config) when the agent has no current observation or the env was
        never reset; True when it did. Otherwise ``learn`` continues the sessions where they were."""
        if self.observation is not None and not env_needs_reset(env):
            return False
        self.observation, _ = env.reset(seed=self.config.seed)
        return True

    def build(self, item_embeddings: torch.Tensor) -> None:
        """Create the networks and optimiser (called once, under the config's seed)."""
        raise NotImplementedError

    def state_scorer(self) -> nn.Module:
        """The item scorer whose state encoder is pretrained (``pretrain_epochs``)."""
        return self.network

    def pretrain(self, env: Any) -> None:
        """Next-item pretraining of the sequence state on ``env.logged_sequences`` (cached; see
        ``recarena.agents.sequence_state.pretrain_encoder``), before any RL. A resumed run repeats it
        (a cache hit) and then restores the checkpoint's weights over it."""
        self.pretrain_info = pretrain_encoder(self.state_scorer().encoder, env, self.config, self.config.seed)
        self.after_load()

    def check_env(self, env: Any) -> None:
        """Refuse an env whose catalogue or slate size differs from the one the agent was built for,
        or that does not report finished sessions' last observations (needed for bootstrapping)."""
        if env.slate_size != self.slate_size or env.n_items != self.n_items:
            raise ValueError(f"env has slate_size={env.slate_size}, n_items={env.n_items}; the agent was "
                             f"built for slate_size={self.slate_size}, n_items={self.n_items}")
        if not getattr(env, "final_observation", True) or not getattr(env, "autoreset", True):
            raise ValueError(f"{self.name} trains on an autoresetting vector env with final_observation=True "
                             "(info['final_obs'] holds the last observation of each finished session)")

    # Checkpoints: what both agents keep (network, optimiser, generator, current observation and
    # session statistics); each adds its own entries (replay buffer, counters, ...).

    def _pack_checkpoint(self, extra: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, metadata) of the shared state plus ``extra``, for ``checkpoint_state``."""
        state = {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": generator_state(self.generator),
            "observation": self.observation,
            "stats": self.stats.state() if self.stats is not None else None,
            **extra,
        }
        tensors, skeleton = flatten_state(state)
        return tensors, {"skeleton": skeleton, "agent": self.name}

    def _unpack_checkpoint(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> dict[str, Any]:
        """Restore the shared state from a :meth:`_pack_checkpoint` result; returns the whole state."""
        if metadata.get("agent") != self.name:
            raise CheckpointError(f"checkpoint holds a '{metadata.get('agent')}' agent, not '{self.name}'")
        state = unflatten_state(tensors, metadata["skeleton"])
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_generator_state(self.generator, state["generator"])
        self.observation = None if state["observation"] is None else {
            k: v.to(self.device) for k, v in state["observation"].items()}
        if state["stats"] is not None:
            self.stats = SessionStats(len(state["stats"]["episode_return"]), self.item_embeddings, self.device)
            self.stats.load_state(state["stats"])
        return state

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.config.mixed_precision)

    def scores(self, observation: Observation) -> torch.Tensor:
        observation = {k: v.to(self.device) for k, v in observation.items()}
        with torch.no_grad(), self._autocast():
            return self._score(observation).float()

    def save(self, directory: str | Path) -> None:
        tensors = {f"net.{k}": v for k, v in self.network.state_dict().items()}
        tensors["item_text"] = self.item_embeddings
        save_agent_files(directory, self.name, self.config, tensors,
                         {"n_items": self.n_items, "slate_size": self.slate_size})

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None, **_: Any) -> NativeAgent:
        config_data, tensors, extra = load_agent_files(directory, cls.name, cls.config_class)
        require_tensors(tensors, ["item_text"], directory)
        if device is None and str(config_data.get("device", "cpu")).startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"  # trained on a GPU, loaded where there is none: the weights work anywhere
        if device is not None:
            config_data = {**config_data, "device": device}
        config = from_dict(cls.config_class, config_data)
        agent = cls(extra["n_items"], config, item_embeddings=tensors["item_text"], slate_size=extra["slate_size"])
        try:
            agent.network.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        except RuntimeError as error:
            raise CheckpointError(f"{directory}: weights do not fit the network ({error})") from error
        agent.after_load()
        return agent

    def after_load(self) -> None:
        """Hook run after ``self.network``'s weights were replaced (:meth:`load`, :meth:`pretrain`),
        e.g. to sync a target network."""
