"""Native PyTorch DQN on the batched recarena vector env, every tensor on the env's device.

Reads top to bottom like a CleanRL script, but is driven in chunks by train.py through the
``TrainableAgent`` interface (``learn`` / ``checkpoint_state`` / ``restore_checkpoint_state``).
Nothing inside the loop leaves the device: observations, actions, rewards, the replay buffer and the
masks are tensors, and there is no per-user Python work. Scalars are synchronised to the host only
at log points (every ``log_every`` user-steps: train.py's ``train.log_every``, else 5,000).

**Q head.** ``Q(s, a) = encode(s) . e_a + b_a`` (``recarena.agents.item_scorer.ItemScorer``): the item
representations start from the LLM encodings of the item texts, so scoring a catalogue of 1e5 items
is one matmul. With ``state: sequence`` the state is the causal sequence encoder's and the item
representations its item vectors (``recarena.agents.sequence_state``), optionally pretrained on the
logs (``pretrain_epochs``) and fine-tuned here by the TD loss (plus the auxiliary next-item loss).

**Slates (per-item decomposition).** The slate is the top-k items by Q (epsilon-greedy: a uniformly
random valid slate with probability epsilon). Training treats each slot as its own action: the item
the user picked is regressed to ``r + gamma * max_a' Q_target(s', a')`` and every other item shown
to ``0 + gamma * max_a' Q_target(s', a')`` -- with a slate of one this is exactly DQN. The target's
max is taken over items outside the next state's history window (the full consumed-item mask is not
stored in the replay buffer; it is used when acting).

**Auxiliary next-item loss** (``next_item_coef > 0``, off by default), as in the native PPO and in
SQN (Xin et al., SIGIR 2020): each gradient step also takes ``next_item_coef * cross-entropy`` of
the next logged item of ``next_item_batch_size`` real users' training-log prefixes, on the Q scores.
The TD loss fixes the values of the items tried; the cross-entropy, which is blind to a per-state
shift of all scores, orders the rest by what real users pick next. Needs a logged-user simulator.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from recarena.agents.base import Observation, ScalarLogger, checkpoint_steps
from recarena.agents.item_scorer import LoggedNextItems, history_mask, mask_scores, next_item_loss
from recarena.agents.native_base import NativeAgent, compile_module
from recarena.agents.returns import linear_schedule, td_target
from recarena.agents.sequence_state import SequenceStateOptions, build_scorer
from recarena.agents.session_stats import SessionStats
from recarena.core.config import config_dataclass


@config_dataclass
class NativeDQNConfig(SequenceStateOptions):
    """Hyperparameters of the native DQN (steps count user-steps of the batched env); the state
    encoder's options (``state``, ``encoder``, ``pretrain_*``) are :class:`SequenceStateOptions`'."""

    hidden_dim: Annotated[int, Field(ge=1)] = 64  # width of the pooled state (state: pooled)
    learning_rate: float = 1e-3
    gamma: Annotated[float, Field(ge=0, le=1)] = 0.9
    buffer_size: Annotated[int, Field(ge=1)] = 100_000  # transitions kept on the device
    batch_size: Annotated[int, Field(ge=1)] = 256
    learning_starts: int = 1_000
    gradient_steps: Annotated[int, Field(ge=1)] = 1  # gradient steps per vector-env step
    target_update_interval: int = 2_000  # env steps between target-network syncs
    tau: Annotated[float, Field(gt=0, le=1)] = 1.0  # 1.0 = hard copy at each sync; < 1 = Polyak averaging
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.05
    exploration_steps: int = 20_000  # user-steps over which epsilon decays linearly
    double_q: bool = True
    max_grad_norm: float = 10.0
    mask: Literal["env", "none"] = "env"  # env: never recommend an item the env's action mask rules out (consumed); none: any item
    next_item_coef: Annotated[float, Field(ge=0)] = 0.0  # weight of the auxiliary next-item cross-entropy on logged prefixes (0 = off)
    next_item_batch_size: Annotated[int, Field(ge=1)] = 256  # logged examples per gradient step for that loss
    next_item_min_rating: float = 0.0  # > 0: only next events rated at least this (e.g. 4 = liked) count
    mixed_precision: Literal["auto", "bf16", "off"] = "auto"  # auto = bf16 on CUDA, off on CPU
    compile: bool = False  # torch.compile the Q network (the first steps are slow while it compiles)
    seed: int = 0
    device: str = "cpu"


class ReplayBuffer:
    """A ring buffer of transitions as preallocated device tensors."""

    def __init__(self, capacity: int, example: Observation, slate_size: int, device: torch.device):
        self.capacity = capacity
        self.observations = {k: torch.zeros((capacity, *v.shape[1:]), dtype=v.dtype, device=device) for k, v in example.items()}
        self.next_observations = {k: torch.zeros_like(v) for k, v in self.observations.items()}
        self.actions = torch.zeros((capacity, slate_size), dtype=torch.int64, device=device)
        self.slot_rewards = torch.zeros((capacity, slate_size), dtype=torch.float32, device=device)
        self.terminated = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.position = 0
        self.size = 0

    def add(self, obs: Observation, actions: torch.Tensor, slot_rewards: torch.Tensor,
            next_obs: Observation, terminated: torch.Tensor) -> None:
        """Append a batch of N transitions (wrapping around)."""
        n = actions.shape[0]
        index = (torch.arange(n, device=actions.device) + self.position) % self.capacity
        for key in self.observations:
            self.observations[key][index] = obs[key]
            self.next_observations[key][index] = next_obs[key]
        self.actions[index] = actions
        self.slot_rewards[index] = slot_rewards
        self.terminated[index] = terminated.to(torch.float32)
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Any, ...]:
        index = torch.randint(0, self.size, (batch_size,), device=self.actions.device, generator=generator)
        return (
            {k: v[index] for k, v in self.observations.items()},
            self.actions[index],
            self.slot_rewards[index],
            {k: v[index] for k, v in self.next_observations.items()},
            self.terminated[index],
        )

    def state(self) -> dict[str, Any]:
        return {"observations": self.observations, "next_observations": self.next_observations,
                "actions": self.actions, "slot_rewards": self.slot_rewards, "terminated": self.terminated,
                "position": self.position, "size": self.size}

    def load_state(self, state: dict[str, Any]) -> None:
        for key in self.observations:
            self.observations[key].copy_(state["observations"][key])
            self.next_observations[key].copy_(state["next_observations"][key])
        for name in ("actions", "slot_rewards", "terminated"):
            getattr(self, name).copy_(state[name])
        self.position, self.size = int(state["position"]), int(state["size"])


def random_slates(mask: torch.Tensor | None, batch: int, n_items: int, k: int,
                  generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Int64 [batch, k]: k distinct items drawn uniformly from the allowed ones in each row."""
    noise = torch.rand((batch, n_items), device=device, generator=generator)
    return torch.topk(mask_scores(noise, mask), k, dim=-1).indices


class NativeDQNAgent(NativeAgent):
    """DQN whose whole training loop runs on the vector env's device (see the module docstring)."""

    name: ClassVar[str] = "native_dqn"
    config_class: ClassVar[type] = NativeDQNConfig

    def build(self, item_embeddings: torch.Tensor) -> None:
        config = self.config
        # The online and target Q networks: two copies of the configured scorer (pooled or sequence state).
        self.network = build_scorer(config, config.hidden_dim, item_embeddings).to(self.device)
        self.target_network = build_scorer(config, config.hidden_dim, item_embeddings).to(self.device)
        self.target_network.load_state_dict(self.network.state_dict())
        self._target_item_cache: torch.Tensor | None = None  # see _target_items
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.learning_rate)
        self._score = compile_module(self.network) if config.compile else self.network
        self.buffer: ReplayBuffer | None = None
        self.observation: Observation | None = None  # the env's current observation between chunks
        self._steps_done = 0
        self.last_target_sync = 0
        self.last_log = 0
        self.stats: SessionStats | None = None  # episode bookkeeping and sim/ diagnostics, on device
        self.logged: LoggedNextItems | None = None  # logged examples of the auxiliary next-item loss
        self._loss_sum = torch.zeros(3, device=self.device)  # TD loss, mean Q, next-item loss (sums)
        self._updates_since_log = 0

    # ----------------------------------------------------------------------------- acting

    def epsilon(self) -> float:
        config = self.config
        return linear_schedule(config.exploration_initial_eps, config.exploration_final_eps, config.exploration_steps,
                               self._steps_done)

    def _select(self, observation: Observation, mask: torch.Tensor | None) -> torch.Tensor:
        batch = observation["history"].shape[0]
        greedy = torch.topk(mask_scores(self.scores(observation), mask), self.slate_size, dim=-1).indices
        explore = random_slates(mask, batch, self.n_items, self.slate_size, self.generator, self.device)
        use_random = torch.rand(batch, device=self.device, generator=self.generator) < self.epsilon()
        return torch.where(use_random.unsqueeze(1), explore, greedy)

    # ----------------------------------------------------------------------------- learning

    def default_log_every(self) -> int:
        return 5_000  # outside train.py; each log syncs the device once

    def learn(self, env: Any, steps: int, logger: ScalarLogger) -> None:
        """Collect ``steps`` user-steps (rounded up to whole vector steps), training as it goes."""
        config, n = self.config, env.num_envs
        self.check_env(env)
        self.start_sessions(env)
        if self.buffer is None:
            self.buffer = ReplayBuffer(config.buffer_size, self.observation, self.slate_size, self.device)
        if self.stats is None:
            self.stats = SessionStats(n, self.item_embeddings, self.device)
        if config.next_item_coef > 0 and self.logged is None:
            self.logged = LoggedNextItems.from_env(env, config.next_item_min_rating)
        slot_index = torch.arange(self.slate_size, device=self.device)
        end = self._steps_done + steps
        while self._steps_done < end:
            obs = self.observation
            mask = env.action_masks() if config.mask == "env" else None
            actions = self._select(obs, mask)
            next_obs, reward, terminated, truncated, info = env.step(actions)  # [N, k]; the env takes [N, 1] for single items
            done = terminated | truncated
            real_next = {k: torch.where(_rows_like(done, v), info["final_obs"][k], v) for k, v in next_obs.items()}
            chosen = info.get("chosen_slot")
            if chosen is None:  # the env reports the chosen item; find its slot in the slate
                chosen = torch.where(actions == info["item"].unsqueeze(1), slot_index, -1).max(dim=1).values
            slot_rewards = torch.where(slot_index.unsqueeze(0) == chosen.unsqueeze(1), reward.unsqueeze(1), 0.0)
            self.buffer.add(obs, actions, slot_rewards, real_next, terminated)
            self.observation = next_obs
            self._steps_done += n
            self.stats.update(actions, reward, terminated, truncated, info["clicked"])

            if self._steps_done >= config.learning_starts:
                for _ in range(config.gradient_steps):
                    self._train_step()
                if self._steps_done - self.last_target_sync >= config.target_update_interval:
                    self._sync_target()
                    self.last_target_sync = self._steps_done
            if self.log_due(self.last_log):
                self._log(logger)

    def _train_step(self) -> None:
        config = self.config
        obs, actions, slot_rewards, next_obs, terminated = self.buffer.sample(config.batch_size, self.generator)
        # Projecting the catalogue costs more than scoring a batch against it: the online network
        # projects once per step (its detached copy serves the double-Q argmax), the target network
        # once per sync.
        with self._autocast():
            items = self.network.item_representations()
        with torch.no_grad(), self._autocast():
            next_mask = history_mask(next_obs["history"], self.n_items) if config.mask == "env" else None
            target_q = mask_scores(self.target_network(next_obs, self._target_items()).float(), next_mask)
            if config.double_q:
                best = mask_scores(self._score(next_obs, items.detach()).float(), next_mask).argmax(dim=1, keepdim=True)
                next_value = target_q.gather(1, best).squeeze(1)
            else:
                next_value = target_q.max(dim=1).values
            target = td_target(slot_rewards, next_value.unsqueeze(1), terminated.bool().unsqueeze(1), config.gamma)
        with self._autocast():
            q_taken = self._score(obs, items).float().gather(1, actions)
            td_loss = F.smooth_l1_loss(q_taken, target)
        loss, supervised = td_loss, torch.zeros((), device=self.device)
        if self.logged is not None:
            logged_obs, next_item = self.logged.sample(config.next_item_batch_size, self.generator)
            with self._autocast():
                logged_scores = self._score(logged_obs, items).float()
            supervised = next_item_loss(logged_scores, logged_obs["history"], next_item)
            loss = loss + config.next_item_coef * supervised
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self._loss_sum += torch.stack([td_loss.detach(), q_taken.detach().mean(), supervised.detach()])
        self._updates_since_log += 1

    def _sync_target(self) -> None:
        with torch.no_grad():
            for target, online in zip(self.target_network.parameters(), self.network.parameters(), strict=True):
                target.lerp_(online, self.config.tau)
        self._target_item_cache = None

    def _target_items(self) -> torch.Tensor:
        """The target network's item representations, computed once per target sync."""
        if self._target_item_cache is None:
            with torch.no_grad(), self._autocast():
                self._target_item_cache = self.target_network.item_representations()
        return self._target_item_cache

    def _log(self, logger: ScalarLogger) -> None:
        step = self._steps_done
        self.stats.log(logger, step)
        if self._updates_since_log:
            loss_sum, q_sum, next_item_sum = self._loss_sum.tolist()
            logger.log_scalar("losses/td_loss", loss_sum / self._updates_since_log, step)
            logger.log_scalar("losses/q_values", q_sum / self._updates_since_log, step)
            if self.logged is not None:
                logger.log_scalar("losses/next_item", next_item_sum / self._updates_since_log, step)
        logger.log_scalar("charts/exploration_rate", self.epsilon(), step)
        self._loss_sum.zero_()
        self._updates_since_log = 0
        self.last_log = step

    # ----------------------------------------------------------------------------- persistence

    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return self._pack_checkpoint({
            "target_network": self.target_network.state_dict(),
            "buffer": self.buffer.state() if self.buffer is not None else None,
            "loss_sum": self._loss_sum,
            "counters": {"steps_done": self._steps_done, "last_target_sync": self.last_target_sync,
                         "last_log": self.last_log, "updates_since_log": self._updates_since_log},
        })

    def restore_checkpoint_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        state = self._unpack_checkpoint(tensors, metadata)
        self.target_network.load_state_dict(state["target_network"])
        self._target_item_cache = None
        if state["buffer"] is not None:
            self.buffer = ReplayBuffer(self.config.buffer_size, self.observation, self.slate_size, self.device)
            self.buffer.load_state(state["buffer"])
        self._loss_sum = torch.zeros(3, device=self.device)
        self._loss_sum[: len(state["loss_sum"])] = state["loss_sum"].to(self.device)  # older checkpoints kept 2 sums
        counters = state["counters"]
        self._steps_done, self.last_target_sync = checkpoint_steps(counters), counters["last_target_sync"]
        self.last_log, self._updates_since_log = counters["last_log"], counters["updates_since_log"]

    def after_load(self) -> None:
        self.target_network.load_state_dict(self.network.state_dict())
        self._target_item_cache = None


def _rows_like(rows: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Reshape a bool [N] row selector to broadcast against ``value`` [N, ...]."""
    return rows.view(-1, *([1] * (value.dim() - 1)))
