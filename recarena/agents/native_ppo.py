"""Native PyTorch PPO on the batched recarena vector env, every tensor on the env's device.

Reads top to bottom like a CleanRL script, driven in chunks by train.py through the
``TrainableAgent`` interface. Each chunk collects whole rollouts of ``n_steps`` vector steps
(``n_steps * N`` user-steps) into device tensors, computes GAE, and runs ``n_epochs`` epochs
of clipped-surrogate minibatch updates. No numpy round trips, no per-user Python work.

**Policy.** Logits over the whole catalogue are ``encode(s) . e_a + b_a`` (``ItemScorer``: item
representations start from the LLM item encodings; 1e5 items cost one matmul). Masked items get a
large negative score (``MASKED_SCORE``). **Slates** of k items are drawn without replacement by Gumbel-top-k, i.e. from the
Plackett-Luce distribution of the logits; the slate's log-probability is the sum over slots of
``logit[a_j] - logsumexp(logits over items not yet placed)``, which is exact for that distribution.
The entropy bonus uses the first slot's distribution. With k = 1 this is ordinary categorical PPO.

**Masks.** ``mask="env"`` stores the env's consumed-item mask with each rollout step (exact,
[n_steps, N, n_items] bools); ``"history"`` derives the mask from the observation's history window
(no storage, for very large catalogues); ``"none"`` disables masking.

**Auxiliary next-item loss** (``next_item_coef > 0``, off by default). The simulated reward says
what a user would like; it says nothing about which items real users actually pick (exposure,
popularity), which is what held-out ranking measures. With this option each minibatch also takes
``next_item_coef * cross-entropy`` of the next logged item given a real user's training-log prefix
(``recarena.agents.item_scorer.LoggedNextItems``, ``next_item_batch_size`` examples) on the actor's logits,
as SQN (Xin et al., SIGIR 2020) adds a supervised head to RL recommenders; with
``next_item_min_rating`` (e.g. 4) only next events the user rated that well count, which aligns the
term with a "like" reward. Needs a logged-user simulator.

**Hierarchical head** (``head="hierarchical"``, single items only). ``pi(a) = pi(c(a)) pi(a | c(a))``
over ~sqrt(n_items) clusters of similar items (``recarena.agents.hierarchical_head``): an update sample costs
``O(sqrt(n_items) D)`` instead of ``O(n_items D)``. The rollout stores each step's cluster mask and
the taken cluster's member mask instead of an ``n_items`` mask; the entropy bonus is
``H(c) + H(a | c_taken)``; ``scores()`` give the full ``log pi(a)``.

**Truncation.** When a session hits the env's step cap (truncated, not terminated), the value of
its final observation is bootstrapped into the last reward, as in Stable-Baselines3.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from recarena.agents.base import Observation, ScalarLogger, checkpoint_steps
from recarena.agents.categorical_head import (
    Workspace,
    categorical_entropy,
    categorical_head,
    sample_categorical,
)
from recarena.agents.hierarchical_head import HierarchicalHead
from recarena.agents.item_scorer import (
    MASKED_SCORE,
    POOLED_TEXT,
    LoggedNextItems,
    StateEncoder,
    allowed_items,
    history_mask,
    next_item_loss,
    with_pooled_text,
)
from recarena.agents.native_base import NativeAgent, compile_module
from recarena.agents.returns import gae
from recarena.agents.sequence_state import SequenceStateOptions, build_scorer, state_dim
from recarena.agents.session_stats import SessionStats
from recarena.core.config import config_dataclass
from recarena.core.errors import ConfigError


@config_dataclass
class NativePPOConfig(SequenceStateOptions):
    """Hyperparameters of the native PPO (steps count user-steps of the batched env); the state
    encoder's options (``state``, ``encoder``, ``pretrain_*``) are :class:`SequenceStateOptions`'."""

    hidden_dim: Annotated[int, Field(ge=1)] = 64  # width of the pooled state (state: pooled)
    learning_rate: float = 3e-4
    n_steps: Annotated[int, Field(ge=1)] = 16  # vector steps per rollout
    num_minibatches: Annotated[int, Field(ge=1)] = 4
    n_epochs: Annotated[int, Field(ge=1)] = 4
    gamma: Annotated[float, Field(ge=0, le=1)] = 0.9
    gae_lambda: Annotated[float, Field(ge=0, le=1)] = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_advantage: bool = True
    mask: Literal["env", "history", "none"] = "env"
    head: Literal["full", "hierarchical"] = "full"  # hierarchical: two-level softmax over item clusters (slate 1)
    next_item_coef: Annotated[float, Field(ge=0)] = 0.0  # weight of the auxiliary next-item cross-entropy on logged prefixes (0 = off)
    next_item_batch_size: Annotated[int, Field(ge=1)] = 256  # logged examples per minibatch for that loss
    next_item_min_rating: float = 0.0  # > 0: only next events rated at least this (e.g. 4 = liked) count
    mixed_precision: Literal["auto", "bf16", "off"] = "auto"  # auto = bf16 on CUDA, off on CPU
    compile: bool = False  # torch.compile the policy scoring (the first steps are slow while it compiles)
    seed: int = 0
    device: str = "cpu"


class ActorCritic(nn.Module):
    """Item-scoring actor and a state-value critic; with ``head="hierarchical"`` the actor's items are
    also grouped into clusters (``hierarchy``).

    ``state: pooled``: the critic has its own pooled state encoder. ``state: sequence``: actor and
    critic share the sequence encoder (the critic is a linear head on the actor's state).
    """

    def __init__(self, item_embeddings: torch.Tensor, hidden_dim: int, head: str = "full", seed: int = 0,
                 options: SequenceStateOptions | None = None):
        super().__init__()
        options = options or SequenceStateOptions()
        self.actor = build_scorer(options, hidden_dim, item_embeddings)
        self.shared_state = options.state == "sequence"
        width = state_dim(options, hidden_dim)
        self.critic_encoder = None if self.shared_state else StateEncoder(item_embeddings.shape[1], hidden_dim)
        self.critic_head = nn.Linear(width, 1)
        self.hierarchy = HierarchicalHead(item_embeddings, width, seed) if head == "hierarchical" else None

    def value(self, observation: Observation, actor_state: torch.Tensor | None = None,
              item_representations: torch.Tensor | None = None) -> torch.Tensor:
        """Float [B] state values. When the state is shared (ignored otherwise): ``actor_state``, the
        actor's :meth:`encode_state` of ``observation`` where already computed, or else the actor's
        precomputed ``item_representations`` to encode it with."""
        if self.critic_encoder is not None:
            state = self.critic_encoder(observation, self.actor.item_text)
        elif actor_state is None:
            state = self.actor.encode_state(observation, item_representations)
        else:
            state = actor_state
        return self.critic_head(torch.relu(state).to(self.critic_head.weight.dtype)).squeeze(-1)

    def hierarchical_log_probs(self, observation: Observation) -> torch.Tensor:
        """Float [B, n_items] log pi(a | s) of the hierarchical policy (unmasked), for ranking."""
        actor = self.actor
        return self.hierarchy.log_probs(actor.encode_state(observation), actor.item_representations(), actor.item_bias)


def slate_log_prob(logits: torch.Tensor, slate: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """Plackett-Luce log-probability [B] of ``slate`` [B, k] under masked ``logits`` [B, n_items].

    ``normalized=True`` says ``logits`` are already log-probabilities (``log_softmax``), which saves
    the first slot's normaliser.
    """
    total = torch.zeros(logits.shape[0], device=logits.device)
    remaining = logits
    for slot in range(slate.shape[1]):
        item = slate[:, slot : slot + 1]
        total = total + remaining.gather(1, item).squeeze(1)
        if slot > 0 or not normalized:
            total = total - torch.logsumexp(remaining, dim=1)
        if slot + 1 < slate.shape[1]:
            remaining = remaining.scatter(1, item, float("-inf"))
    return total


class NativePPOAgent(NativeAgent):
    """PPO whose whole training loop runs on the vector env's device (see the module docstring)."""

    name: ClassVar[str] = "native_ppo"
    config_class: ClassVar[type] = NativePPOConfig

    def build(self, item_embeddings: torch.Tensor) -> None:
        config = self.config
        if config.head == "hierarchical" and self.slate_size != 1:
            raise ConfigError(f"native_ppo head='hierarchical' recommends single items; slate_size={self.slate_size} "
                              "needs head='full' (Plackett-Luce slates over the whole catalogue)")
        self.network = ActorCritic(item_embeddings, config.hidden_dim, config.head, config.seed, config).to(self.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.learning_rate, eps=1e-5)
        self.hierarchy = self.network.hierarchy  # None for the full head
        score = self.network.actor if self.hierarchy is None else self.network.hierarchical_log_probs
        self._score = compile_module(score) if config.compile else score
        self.observation: Observation | None = None
        self.logged: LoggedNextItems | None = None  # logged examples of the auxiliary next-item loss
        self._steps_done = 0
        self.last_log = 0
        self._loss_sum = torch.zeros(6, device=self.device)  # mean losses of the updates since the last log, summed
        self._updates_since_log = 0
        self.stats: SessionStats | None = None  # episode bookkeeping and sim/ diagnostics, on device
        self._workspace = Workspace()  # the fused policy head's buffers, reused across minibatches
        self._rollout_workspace = Workspace()  # the hierarchical head's gather buffer while acting

    # ----------------------------------------------------------------------------- acting

    def state_scorer(self) -> nn.Module:
        return self.network.actor

    def _blocked(self, observation: Observation, env_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Bool [B, n_items], True for the items the policy may not pick (None: no masking).

        ``env_mask`` is the env's action mask (``mask="env"``); with ``mask="history"`` the mask is
        derived from the observation. A row that would block everything blocks nothing.
        """
        if self.config.mask == "none":
            return None
        if self.config.mask == "history":
            env_mask = history_mask(observation["history"], self.n_items)
        return None if env_mask is None else ~allowed_items(env_mask)

    def _logits(self, observation: Observation, blocked: torch.Tensor | None,
                item_representations: torch.Tensor | None = None, state: torch.Tensor | None = None) -> torch.Tensor:
        """Masked logits [B, n_items]: blocked items get ``MASKED_SCORE``. ``state``: the actor's
        :meth:`encode_state` of ``observation`` where already computed (with ``item_representations``)."""
        with self._autocast():
            if state is None:
                logits = self._score(observation, item_representations).float()
            else:
                logits = torch.addmm(self.network.actor.item_bias, state, item_representations.T).float()
        return logits if blocked is None else logits.masked_fill_(blocked, MASKED_SCORE)

    def _sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(slate [B, k] of distinct items from the Plackett-Luce distribution of ``logits``, its
        log-probability [B]).

        One item is drawn from the softmax by inverse CDF: one uniform per row and a binary search
        of the cumulative probabilities (masked items have probability 0, so they are never the
        first to exceed it). A slate is drawn by Gumbel-top-k, the Gumbel noise ``-log(-log U)``
        built in place (``U = 0`` gives ``-inf``: never picked).
        """
        if self.slate_size == 1:
            log_probs = torch.log_softmax(logits, dim=1)
            uniform = torch.rand(logits.shape[0], device=logits.device, generator=self.generator)
            item = sample_categorical(log_probs, uniform).clamp_(max=logits.shape[1] - 1).unsqueeze(1)
            return item, log_probs.gather(1, item).squeeze(1)
        minus_gumbel = torch.rand(logits.shape, device=logits.device, generator=self.generator).log_().neg_().log_()
        slate = torch.topk(logits - minus_gumbel, self.slate_size, dim=1).indices
        return slate, slate_log_prob(logits, slate)

    def _mask_source(self, observation: Observation, env_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """What the hierarchical head masks with: the env's allowed items (``mask="env"``), the
        observation's history window (``"history"``), or nothing."""
        if self.config.mask == "env" and env_mask is not None:  # (a row allowing nothing allows everything)
            return {"allowed": env_mask}
        if self.config.mask == "history":
            return {"history": observation["history"]}
        return {}

    def _sample_hierarchical(self, observation: Observation, env_mask: torch.Tensor | None, tables: Any):
        """(item [B, 1], its log-probability [B], (blocked clusters [B, C] or None, blocked members
        [B, M] of the drawn cluster)) from the hierarchical head: a cluster, then one of its
        members, each by inverse CDF. The masks are what the update needs to re-score the item."""
        with self._autocast():
            state = self.network.actor.encode_state(observation)
        uniform = torch.rand((state.shape[0], 2), device=state.device, generator=self.generator)
        item, log_prob, *blocked = self.hierarchy.sample(state, tables, uniform, **self._mask_source(observation, env_mask),
                                                         workspace=self._rollout_workspace)
        return item.unsqueeze(1), log_prob, tuple(blocked)

    # ----------------------------------------------------------------------------- learning

    def step_unit(self, num_envs: int) -> int:
        """One rollout: ``n_steps`` vector steps of ``num_envs`` users."""
        return self.config.n_steps * int(num_envs)

    def learn(self, env: Any, steps: int, logger: ScalarLogger) -> None:
        """Run whole rollouts until at least ``steps`` more user-steps are done, updating after each;
        log when a multiple of ``log_every`` is reached (default: after every rollout)."""
        config, n = self.config, env.num_envs
        self.check_env(env)
        if self.start_sessions(env) or self.stats is None:
            self.stats = SessionStats(n, self.item_embeddings, self.device)
        if config.next_item_coef > 0 and self.logged is None:
            self.logged = LoggedNextItems.from_env(env, config.next_item_min_rating)
        end = self._steps_done + steps
        while self._steps_done < end:
            batch = self._collect(env)
            self._loss_sum += self._update(batch)
            self._updates_since_log += 1
            if self.log_due(self.last_log):
                self._log(logger, self._loss_sum / self._updates_since_log)
                self._loss_sum.zero_()
                self._updates_since_log = 0
                self.last_log = self._steps_done

    def _collect(self, env: Any) -> dict[str, Any]:
        """One rollout of ``n_steps`` vector steps into device tensors, with GAE advantages."""
        config, n, t_max = self.config, env.num_envs, self.config.n_steps
        pool = not self.network.shared_state  # the pooled critic and actor read the pooled history text
        observations: dict[str, list[torch.Tensor]] = {k: [] for k in self.observation}
        if pool:
            observations[POOLED_TEXT] = []
        masks, actions, log_probs, values, rewards, dones = [], [], [], [], [], []
        actor = self.network.actor
        with torch.no_grad(), self._autocast():  # the weights are fixed during a rollout: project the catalogue once
            item_representations = actor.item_representations()
            tables = None if self.hierarchy is None else self.hierarchy.tables(item_representations, actor.item_bias)
        for _ in range(t_max):
            # The history's pooled text depends on no parameter: pool it once per observation for the
            # actor, the critic and every update epoch.
            obs = with_pooled_text(self.observation, actor.item_text) if pool else self.observation
            env_mask = env.action_masks() if config.mask == "env" else None
            with torch.no_grad():
                shared = None  # a shared (sequence) state is encoded once for the actor and the critic
                if self.network.shared_state and self.hierarchy is None:
                    with self._autocast():
                        shared = actor.encode_state(obs, item_representations)
                if self.hierarchy is None:
                    blocked = self._blocked(obs, env_mask)
                    slate, log_prob = self._sample(self._logits(obs, blocked, item_representations, shared))
                else:  # blocked = (clusters [N, C], the drawn cluster's members [N, M]): no [N, n_items] mask kept
                    slate, log_prob, blocked = self._sample_hierarchical(obs, env_mask, tables)
                value = self.network.value(obs, shared, item_representations)
            next_obs, reward, terminated, truncated, info = env.step(slate)  # [N, k]; the env takes [N, 1] for single items
            env_reward = reward.to(torch.float32)
            # Bootstrap cut-off sessions from their final observation.
            with torch.no_grad():
                cut_value = self._cut_values(info["final_obs"], truncated & ~terminated, item_representations)
            train_reward = env_reward + config.gamma * cut_value
            for key in observations:
                observations[key].append(obs[key])
            if config.mask == "env":  # "history" masks are rebuilt from the observations
                masks.append(blocked)
            actions.append(slate)
            log_probs.append(log_prob)
            values.append(value)
            rewards.append(train_reward)
            done = terminated | truncated
            dones.append(done.to(torch.float32))
            self.observation = next_obs
            self._steps_done += n

            self.stats.update(slate, env_reward, terminated, truncated, info["clicked"])

        with torch.no_grad():
            next_value = self.network.value(self.observation, None, item_representations)
        values_t = torch.stack(values)
        advantages = gae(torch.stack(rewards), values_t, torch.stack(dones), next_value, config.gamma, config.gae_lambda)
        if masks and self.hierarchy is not None:
            stored_masks = tuple(torch.cat(part) for part in zip(*masks, strict=True))
        else:
            stored_masks = torch.cat(masks) if masks else None
        batch = {
            "obs": {k: torch.cat(v) for k, v in observations.items()},
            "blocked": stored_masks,
            "actions": torch.cat(actions),
            "log_probs": torch.cat(log_probs),
            "advantages": advantages.reshape(-1),
            "returns": (advantages + values_t).reshape(-1),
        }
        return batch

    def _cut_values(self, final_obs: Observation, cut: torch.Tensor,
                    item_representations: torch.Tensor) -> torch.Tensor:
        """Float [N]: the critic's value of the final observation on the rows whose session was cut
        off (``cut``, bool [N]), 0 on the others.

        On CPU only the cut rows (a few per step) are encoded: for the sequence state this saves a
        second encoder pass over every user each step. On an accelerator every row is encoded and
        the others zeroed, since selecting rows by a data-dependent count would synchronise the
        device every step."""
        if cut.device.type != "cpu":
            return self.network.value(final_obs, None, item_representations) * cut.to(torch.float32)
        values = torch.zeros(cut.shape[0], device=cut.device)
        rows = cut.nonzero().squeeze(1)
        if rows.numel():
            values[rows] = self.network.value({k: v[rows] for k, v in final_obs.items()}, None,
                                              item_representations).to(values.dtype)
        return values

    def _update(self, batch: dict[str, Any]) -> torch.Tensor:
        config = self.config
        size = batch["actions"].shape[0]
        minibatch = max(1, size // config.num_minibatches)
        totals = torch.zeros(6, device=self.device)  # policy, value, entropy, approx_kl, clip fraction, next-item
        count = 0
        for _ in range(config.n_epochs):
            order = torch.randperm(size, device=self.device, generator=self.generator)
            for start in range(0, size, minibatch):
                index = order[start : start + minibatch]
                obs = {k: v[index] for k, v in batch["obs"].items()}
                actor = self.network.actor
                if self.hierarchy is not None:  # the two-level head: O(sqrt(n_items) D) per sample
                    with self._autocast():
                        state = actor.encode_state(obs)
                        tables = self.hierarchy.tables(actor.item_representations(), actor.item_bias)
                    action = batch["actions"][index, 0]
                    blocked = (tuple(part[index] for part in batch["blocked"]) if batch["blocked"] is not None
                               else self.hierarchy.masks_for(action, **self._mask_source(obs, None)))
                    new_log_prob, entropies = self.hierarchy.log_prob_and_entropy(state, tables, action, *blocked,
                                                                                  self._workspace)
                else:
                    blocked = batch["blocked"][index] if batch["blocked"] is not None else self._blocked(obs, None)
                    with self._autocast():
                        items = actor.item_representations()
                    if self.slate_size == 1:  # the fused head: same values and gradients, far fewer sweeps
                        with self._autocast():
                            state = actor.encode_state(obs, items)
                        new_log_prob, entropies = categorical_head(state, items, actor.item_bias, blocked,
                                                                   batch["actions"][index, 0], self._workspace)
                    else:
                        state = None
                        log_probs = torch.log_softmax(self._logits(obs, blocked, items), dim=1)  # one normaliser for both uses
                        new_log_prob = slate_log_prob(log_probs, batch["actions"][index], normalized=True)
                        entropies = categorical_entropy(log_probs)
                log_ratio = new_log_prob - batch["log_probs"][index]
                ratio = log_ratio.exp()
                advantages = batch["advantages"][index]
                if config.normalize_advantage and advantages.numel() > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                policy_loss = torch.max(-advantages * ratio,
                                        -advantages * ratio.clamp(1 - config.clip_range, 1 + config.clip_range)).mean()
                value_loss = 0.5 * (self.network.value(obs, state) - batch["returns"][index]).pow(2).mean()
                entropy_bonus = entropies.mean()
                loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy_bonus
                supervised = torch.zeros((), device=self.device)
                if self.logged is not None:
                    logged_obs, next_item = self.logged.sample(config.next_item_batch_size, self.generator)
                    if self.hierarchy is not None:  # -log pi(c(t)) - log pi(t | c(t)), at O(sqrt(n_items)) too
                        with self._autocast():
                            logged_state = actor.encode_state(logged_obs)
                        supervised = self.hierarchy.next_item_loss(logged_state, tables, logged_obs["history"], next_item)
                    else:  # the catalogue projected once per minibatch serves both losses
                        with self._autocast():
                            logged_scores = self._score(logged_obs, items).float()
                        supervised = next_item_loss(logged_scores, logged_obs["history"], next_item)
                    loss = loss + config.next_item_coef * supervised
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.network.parameters(), config.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipped = ((ratio - 1).abs() > config.clip_range).float().mean()
                totals += torch.stack([policy_loss.detach(), value_loss.detach(), entropy_bonus.detach(), approx_kl, clipped,
                                       supervised.detach()])
                count += 1
        return totals / max(count, 1)

    def _log(self, logger: ScalarLogger, losses: torch.Tensor) -> None:
        step = self._steps_done
        self.stats.log(logger, step)  # one device sync per log point for the stats, one for the losses
        policy, value, entropy_value, approx_kl, clip_fraction, next_item = losses.tolist()
        logger.log_scalar("losses/policy_loss", policy, step)
        logger.log_scalar("losses/value_loss", value, step)
        logger.log_scalar("losses/entropy", entropy_value, step)
        logger.log_scalar("losses/approx_kl", approx_kl, step)
        logger.log_scalar("losses/clip_fraction", clip_fraction, step)
        if self.logged is not None:
            logger.log_scalar("losses/next_item", next_item, step)

    # ----------------------------------------------------------------------------- persistence

    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return self._pack_checkpoint({"steps_done": self._steps_done, "last_log": self.last_log,
                                      "loss_sum": self._loss_sum, "updates_since_log": self._updates_since_log})

    def restore_checkpoint_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        state = self._unpack_checkpoint(tensors, metadata)
        self._steps_done = checkpoint_steps(state)
        # Checkpoints written before log_every logged after every rollout: start a fresh window.
        self.last_log = state.get("last_log", self._steps_done)
        self._loss_sum = state["loss_sum"].to(self.device).clone() if "loss_sum" in state else torch.zeros(6, device=self.device)
        self._updates_since_log = state.get("updates_since_log", 0)
