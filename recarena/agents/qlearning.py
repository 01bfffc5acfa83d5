"""Q-learning on the LLM-encoded (or sequence-encoded) state: a tabular agent over a k-means codebook and a linear agent.

Both learn online from a recarena vector env (``recarena.envs.RecommendationVectorEnv``, same-step autoreset,
slate size 1) with epsilon-greedy exploration drawn from the agent's own torch generator, and
update on the whole batch of N user transitions of each env step ("batched TD updates").

* :class:`TabularQAgent` discretises the state into ``n_states`` codes with a k-means codebook
  fitted on the states seen during a short uniform-random warm-up, then runs tabular Q-learning on
  ``Q[code, item]``. The warm-up transitions are replayed into the table once the codebook exists,
  so no step is wasted.
* :class:`LinearQAgent` uses ``Q(s, a) = phi(s) . w_a`` (``per_item``) or the bilinear
  ``Q(s, a) = phi(s)^T W e_a + b_a`` (``bilinear``; ``e_a`` = the frozen LLM item encoding), with
  ``phi(s) = [state, 1]``. The bilinear form has ``(d + 1) x d_e + n_items`` parameters, so it
  scales to large catalogues and generalises across items with similar text.

The state. ``state: pooled`` (default) is the env's ``llm_state`` (the response-weighted pool of the
history's LLM item encodings: order-blind). ``state: sequence`` (the native agents' option names,
:class:`recarena.agents.sequence_state.SequenceStateOptions`) is the causal sequence encoder's
``encode_last(history, responses)`` [hidden_dim], pretrained on the env's logged training sequences
(``pretrain_epochs``; cached) and then *frozen*: the codebook is fitted on, and linear Q's features
are, those states, and no update backpropagates into the encoder. Its weights go into the
checkpoint, so a resumed or loaded agent does not depend on the pretraining cache.

The k-means is a small torch implementation (k-means++ seeding + Lloyd iterations) rather than
scikit-learn's: it draws from the agent's explicit ``torch.Generator`` (so a seed fixes it and
``checkpoint_state`` captures it), runs on the env's device with no NumPy round trip, and does not
start its own thread pool on small shared machines.

Training and resumption. ``learn(env, steps, logger)`` runs ``ceil(steps / N)`` env steps and
leaves the env where it stopped: the next call continues the same sessions from the agent's
current observation (only an env the agent has not stepped is reset, with a seed derived from
``config.seed``), so chunk boundaries change nothing. ``checkpoint_state`` holds the current
observation and the sessions' statistics (:class:`SessionStats`, the native agents' bookkeeping:
running returns and lengths, the window's sums); with the env's own state (train.py checkpoints both)
a resumed run repeats the uninterrupted one exactly on CPU. Scalars (SessionStats' ``charts/*`` and
``sim/*``, plus ``charts/epsilon`` and ``losses/td_loss``) are logged at each multiple of
``log_every`` user-steps (train.py's ``train.log_every``; 2,000 outside train.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from recarena.agents.base import (
    NullLogger,
    Observation,
    ScalarLogger,
    TrainableAgent,
    checkpoint_steps,
    env_needs_reset,
)
from recarena.agents.baselines import _exclude_history
from recarena.agents.item_scorer import IGNORED_TARGET, LoggedNextItems, logged_sequences_of, next_item_loss
from recarena.agents.returns import linear_schedule, td_target
from recarena.agents.sequence_encoder import SequenceEncoder
from recarena.agents.sequence_state import SequenceStateOptions, pretrain_encoder
from recarena.agents.serialization import (
    generator_state,
    load_agent_files,
    require_tensors,
    save_agent_files,
    set_generator_state,
)
from recarena.agents.session_stats import SessionStats
from recarena.core.checkpoint import OldCheckpointWarning
from recarena.core.clustering import kmeans, nearest
from recarena.core.config import config_dataclass, from_dict
from recarena.core.errors import CheckpointError, ConfigError
from recarena.core.seeding import torch_generator

# ----------------------------------------------------------------------------- shared TD machinery


@config_dataclass
class _ExplorationConfig(SequenceStateOptions):
    """Options shared by both Q agents (documented on the concrete configs). The state options
    (``state``, ``encoder``, ``pretrain_*``) are the native agents' :class:`SequenceStateOptions`:
    ``state: sequence`` makes the state vector the (pretrained, frozen) sequence encoder's."""

    gamma: Annotated[float, Field(ge=0, le=1)] = 0.9
    """Discount factor."""
    exploration_initial_eps: Annotated[float, Field(ge=0, le=1)] = 1.0
    exploration_final_eps: Annotated[float, Field(ge=0, le=1)] = 0.05
    exploration_steps: Annotated[int, Field(ge=1)] = 20_000
    """User-steps over which epsilon falls linearly from the initial to the final value."""
    exclude_history: bool = True
    """In :meth:`scores`, score items in the observed history -inf (acting while learning uses the
    env's action mask instead)."""
    next_item_coef: Annotated[float, Field(ge=0)] = 0.0
    """> 0: after each TD update, also step ``learning_rate * next_item_coef`` along the gradient of
    the softmax cross-entropy of real users' next logged items under Q (the native agents'
    auxiliary next-item loss; needs a simulator with logged sequences). 0 = off."""
    next_item_batch_size: Annotated[int, Field(ge=1)] = 256
    """Logged (history prefix, next item) examples per update of that loss."""
    next_item_min_rating: Annotated[float, Field(ge=0)] = 0.0
    """> 0: only next events rated at least this (e.g. 4 = liked) count."""
    candidates: Annotated[int, Field(ge=0)] = 0
    """> 0: act on, and learn Q for, only the ``candidates`` most logged items of the simulator's
    training log (the candidate stage of a two-stage recommender); every other item scores below
    all of them, in popularity order, and the next-item loss keeps only examples whose next item
    is a candidate. Q over thousands of items per state is explored too thinly for its values to
    rise above noise. 0 = every item is a candidate."""
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0


DEFAULT_LOG_EVERY = 2_000
"""User-steps between scalar logs when the agent is used outside train.py without ``log_every``."""


def _env_item_embeddings(env: Any) -> torch.Tensor:
    embeddings = getattr(env, "item_embeddings", None)
    if embeddings is None:
        raise ConfigError("the env exposes no item embeddings (env.item_embeddings)")
    return torch.as_tensor(embeddings, dtype=torch.float32)


def _restarted_stats(n_users: int, n_items: int) -> dict[str, torch.Tensor]:
    """SessionStats' state of ``n_users`` sessions counted from now (nothing accumulated; the item
    encodings only shape it)."""
    return SessionStats(n_users, torch.zeros(n_items, 1), torch.device("cpu")).state()


def _empty_window() -> dict[str, float]:
    """Sums over one logging window of the TD updates and their mean squared error (the sessions'
    sums are the agent's :class:`SessionStats`)."""
    return {"updates": 0, "td_loss": 0.0}


OUTSIDE_CANDIDATES = -1.0e4
"""Score offset of the items outside a Q agent's candidate set (plus their log-popularity): far
below any Q value, which stays within about max reward / (1 - gamma)."""


def _llm_state(observation: Observation) -> torch.Tensor:
    if "llm_state" not in observation:
        raise ConfigError("Q-learning agents need the 'llm_state' observation key (see env observation_keys)")
    return torch.as_tensor(observation["llm_state"]).to(torch.float32)


ENCODER_PREFIX = "encoder."
"""Checkpoint tensor names of the sequence encoder's weights (``state: sequence``)."""


class _OnlineQAgent(TrainableAgent):
    """The env loop, epsilon-greedy acting, episode statistics and counters shared by the Q agents.

    Subclasses implement ``_q_values(states) -> [B, n_items]`` (on the states [B, d] of :meth:`_state`),
    ``_td_update(state, action, target) -> td_error [B]``, ``_prepare(env)`` and the tensors of
    their parameters. The base adds the candidate set (``config.candidates``) on top:
    :meth:`_values` is ``_q_values`` with the items outside it scored below every candidate.
    """

    config: Any

    def __init__(self, n_items: int, config: Any, log_every: int | None = None, env: Any | None = None) -> None:
        if not isinstance(n_items, int) or n_items < 1:
            raise ConfigError(f"n_items must be a positive integer, got {n_items!r}")
        self.n_items = n_items
        self.config = config
        self.generator = torch_generator(config.seed)
        self.log_every = int(log_every) if log_every is not None else DEFAULT_LOG_EVERY
        if self.log_every < 1:
            raise ConfigError(f"log_every must be >= 1, got {self.log_every}")
        self._steps_done = 0
        self.env_resets = 0  # resets of an env the agent had not stepped (seeds the next one)
        self.episodes_done = 0
        self.last_log = 0
        self._window = _empty_window()  # sums since the last log point
        self.observation: Observation | None = None  # the env's current observation between learn() calls
        self.stats: SessionStats | None = None  # sessions in progress and the window's charts/ and sim/ sums
        self._restored_stats: dict[str, torch.Tensor] | None = None  # from a checkpoint, until an env is given
        self._stats_restarted = False  # restored from a checkpoint older than SessionStats: warn on resuming
        self.logged: LoggedNextItems | None = None  # next-item examples, built from the env when used
        # With ``config.candidates``: which items are candidates, and the scores of the others.
        self.candidate_mask: torch.Tensor | None = None
        self.outside_scores: torch.Tensor | None = None
        # ``state: sequence``: the frozen sequence encoder (built from ``env`` now or at the first learn).
        self.encoder: SequenceEncoder | None = None
        self.pretrain_info: dict[str, Any] | None = None
        if env is not None and config.state == "sequence":
            self._build_encoder(env)

    # -- the state -------------------------------------------------------------------------------
    def _build_encoder(self, env: Any) -> None:
        """``state: sequence``: the encoder over the env's item encodings, initialised under
        ``config.seed`` and pretrained on ``env.logged_sequences`` (``pretrain_epochs`` > 0; cached,
        see ``recarena.agents.sequence_state.pretrain_encoder``). It stays frozen: TD and next-item
        updates move the Q table / weights only, never the encoder."""
        self._check_env(env)
        embeddings = _env_item_embeddings(env)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            encoder = SequenceEncoder(self.n_items, self.config.encoder, embeddings)
        if self.config.pretrain_epochs:
            self.pretrain_info = pretrain_encoder(encoder, env, self.config, self.config.seed)
        self._set_encoder(encoder)

    def _set_encoder(self, encoder: SequenceEncoder) -> None:
        self.encoder = encoder.cpu().eval().requires_grad_(False)  # read without dropout, never trained here

    def _state(self, observation: Observation) -> torch.Tensor:
        """Float [B, d]: the state the agent reads: ``llm_state`` (``state: pooled``) or the frozen
        encoder's ``encode_last(history, responses)`` (``state: sequence``, d = encoder.hidden_dim)."""
        if self.config.state == "pooled":
            return _llm_state(observation)
        if self.encoder is None:
            raise ConfigError(f"{self.name} with state: sequence has no encoder yet: it is built from the env at "
                              "the first learn() (or pass env= when building the agent)")
        responses = observation.get("responses")
        with torch.no_grad():
            return self.encoder.encode_last(torch.as_tensor(observation["history"]).long().cpu(),
                                            None if responses is None else torch.as_tensor(responses).cpu())

    # -- subclass hooks ------------------------------------------------------------------------
    def _q_values(self, states: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _td_update(self, states: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _prepare(self, env: Any) -> None:
        """Called at the start of every ``learn`` with the env (e.g. to read item embeddings)."""

    # -- the candidate set -----------------------------------------------------------------------
    def _choose_candidates(self, env: Any) -> None:
        """The ``config.candidates`` items with the most events in the simulator's training log."""
        sequences = logged_sequences_of(env, f"{self.name} candidates={self.config.candidates} (item popularity)")
        counts = torch.bincount(sequences.item.cpu(), minlength=self.n_items)[: self.n_items].to(torch.float32)
        top = torch.argsort(counts, descending=True, stable=True)[: self.config.candidates]
        self.candidate_mask = torch.zeros(self.n_items, dtype=torch.bool)
        self.candidate_mask[top] = True
        self.outside_scores = torch.where(self.candidate_mask, 0.0, OUTSIDE_CANDIDATES + torch.log1p(counts))

    def _values(self, states: torch.Tensor) -> torch.Tensor:
        """``_q_values``, with the items outside the candidate set (if any) at ``outside_scores``."""
        q = self._q_values(states)
        if self.candidate_mask is None:
            return q
        return torch.where(self.candidate_mask.to(q.device), q, self.outside_scores.to(q.device))

    def _restrict_to_candidates(self, mask: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """``mask`` [B, n_items] & the candidates; rows with no allowed candidate get ``fallback``'s row."""
        if self.candidate_mask is None:
            return mask
        restricted = mask & self.candidate_mask.to(mask.device)
        return torch.where(restricted.any(dim=1, keepdim=True), restricted, fallback)

    def _observe_transition(
        self, states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
        next_states: torch.Tensor, terminated: torch.Tensor, next_mask: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """Learn from one batch of transitions; returns the TD errors (None while not learning)."""
        targets = self._targets(rewards, next_states, terminated, next_mask)
        td = self._td_update(states, actions, targets)
        if self.logged is not None:
            self._next_item_update()
        return td

    def _next_item_update(self) -> None:
        """One SGD step on the cross-entropy of logged next items under Q (history items excluded)."""
        observation, target = self.logged.sample(self.config.next_item_batch_size, self.generator)
        observation = {key: value.cpu() for key, value in observation.items()}
        target = target.cpu()
        if self.candidate_mask is not None:  # learn the order of the candidates only
            kept = (target >= 0) & self.candidate_mask[target.clamp(min=0)]
            target = torch.where(kept, target, IGNORED_TARGET)
        states = self._state(observation)
        scores = self._values(states).cpu().requires_grad_(True)
        loss = next_item_loss(scores, observation["history"], target)  # mean over the examples that count
        (gradient,) = torch.autograd.grad(loss, scores)
        if self.candidate_mask is not None:
            gradient = gradient * self.candidate_mask  # outside scores are constants
        self._apply_next_item_step(states, -gradient, self.config.learning_rate * self.config.next_item_coef)

    def _apply_next_item_step(self, states: torch.Tensor, step: torch.Tensor, rate: float) -> None:
        """Ascend the log-likelihood by ``rate``: ``step`` [B, n_items] is the gradient of the mean
        log-likelihood w.r.t. the scores of ``states`` (zero rows for examples that do not count)."""
        raise NotImplementedError

    # -- the common parts ----------------------------------------------------------------------
    def epsilon(self, steps: int | None = None) -> float:
        """Exploration rate after ``steps`` user-steps (default: the steps done so far)."""
        config = self.config
        steps = self.steps_done if steps is None else steps
        return linear_schedule(config.exploration_initial_eps, config.exploration_final_eps, config.exploration_steps, steps)

    def scores(self, observation: Observation) -> torch.Tensor:
        scores = self._values(self._state(observation)).to(observation["history"].device)
        return _exclude_history(scores, observation) if self.config.exclude_history else scores

    @torch.no_grad()
    def _targets(
        self, rewards: torch.Tensor, next_states: torch.Tensor, terminated: torch.Tensor,
        next_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``r + gamma * max_a' Q(s', a')`` over the allowed a' (no bootstrap where terminated).

        With a candidate set, a' ranges over the allowed candidates (every candidate where none is
        allowed): the items the policy can pick."""
        if self.candidate_mask is not None:
            every_candidate = self.candidate_mask.to(next_states.device).expand(len(next_states), -1)
            next_mask = (
                every_candidate if next_mask is None else self._restrict_to_candidates(next_mask, every_candidate)
            )
        next_q = self._values(next_states)
        if next_mask is not None:
            allowed = next_mask | ~next_mask.any(dim=1, keepdim=True)
            next_q = next_q.masked_fill(~allowed, float("-inf"))
        return td_target(rewards.to(torch.float32), next_q.max(dim=1).values, terminated, self.config.gamma)

    def _explore_or_exploit(self, q: torch.Tensor, mask: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Int64 [B]: a uniformly random allowed item with probability epsilon, else the best one.

        Ties among the best are broken at random (tiny noise), so an untrained agent does not always
        pick item 0. With a candidate set, both choices are among the allowed candidates (any allowed
        item for a user who has consumed every candidate)."""
        mask = self._restrict_to_candidates(mask, mask)
        batch = q.shape[0]
        allowed = mask | ~mask.any(dim=1, keepdim=True)
        noise = torch.rand((batch, self.n_items), generator=self.generator).to(q.device)
        explore = (torch.rand(batch, generator=self.generator) < epsilon).to(q.device)
        random_choice = noise.masked_fill(~allowed, -1.0).argmax(dim=1)
        greedy_choice = (q + 1e-6 * noise).masked_fill(~allowed, float("-inf")).argmax(dim=1)
        return torch.where(explore, random_choice, greedy_choice)

    def _check_env(self, env: Any) -> None:
        if int(env.n_items) != self.n_items:
            raise ConfigError(f"the env has {env.n_items} items but the agent was built for {self.n_items}")
        if int(getattr(env, "slate_size", 1)) != 1:
            raise ConfigError(
                f"{type(self).__name__} learns with slate_size=1 (the reward belongs to one item); the env "
                f"has slate_size={env.slate_size}. It can still act with k > 1 at evaluation."
            )

    @property
    def steps_done(self) -> int:
        """User-steps trained so far (every user of every env step)."""
        return self._steps_done

    def _start_sessions(self, env: Any) -> dict[str, torch.Tensor]:
        """The observation to continue from: the agent's current one, or (for an env it has not stepped
        yet) a reset with a seed derived from ``config.seed`` and the number of earlier resets."""
        n = int(env.num_envs)
        if self.observation is not None and not env_needs_reset(env) and self._session_users() == n:
            if self.stats is None:  # restored from a checkpoint: the env supplies the item encodings
                self.stats = SessionStats(n, _env_item_embeddings(env), torch.device("cpu"))
                self.stats.load_state(self._restored_stats)
                self._restored_stats = None
                if self._stats_restarted:
                    warnings.warn(f"{self.name}: the checkpoint's session statistics predate SessionStats; they start "
                                  f"again here (charts/ and sim/ of the sessions in progress count from the resume)",
                                  OldCheckpointWarning, stacklevel=3)
                    self._stats_restarted = False
            device = getattr(env, "device", None)  # restored from a checkpoint onto the CPU
            return {k: v.to(device) for k, v in self.observation.items()} if device is not None else self.observation
        reset_seed = (self.config.seed * 1_000_003 + self.env_resets) % (2**31 - 1)
        self.env_resets += 1
        self.stats, self._restored_stats = SessionStats(n, _env_item_embeddings(env), torch.device("cpu")), None
        observation, _ = env.reset(seed=reset_seed)
        return observation

    def _session_users(self) -> int:
        """Users of the sessions in progress (-1: none)."""
        state = self.stats.state() if self.stats is not None else self._restored_stats
        return -1 if state is None else int(state["episode_return"].shape[0])

    def learn(self, env: Any, steps: int, logger: ScalarLogger | None = None) -> None:
        """Train for ``steps`` more user-steps (``ceil(steps / env.num_envs)`` env steps) on ``env``,
        continuing its sessions where the previous call left them."""
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self._check_env(env)
        if self.config.candidates > 0 and self.candidate_mask is None:
            self._choose_candidates(env)
        if self.config.state == "sequence" and self.encoder is None:
            self._build_encoder(env)
        self._prepare(env)
        if self.config.next_item_coef > 0 and self.logged is None:
            self.logged = LoggedNextItems.from_env(env, self.config.next_item_min_rating)
        logger = logger or NullLogger()
        observation = self._start_sessions(env)
        n = int(env.num_envs)
        end = self._steps_done + steps
        carried = None  # state: sequence: the encoded next observation, this step's state (encoded once)
        while self._steps_done < end:
            states = carried if carried is not None else self._state(observation)
            mask = torch.as_tensor(env.action_masks())
            with torch.no_grad():
                q = self._values(states)
                actions = self._explore_or_exploit(q, mask.to(states.device), self.epsilon())
            next_observation, reward, terminated, truncated, info = env.step(actions.to(mask.device))
            reward = torch.as_tensor(reward, dtype=torch.float32)
            terminated = torch.as_tensor(terminated, dtype=torch.bool)
            truncated = torch.as_tensor(truncated, dtype=torch.bool)
            done = terminated | truncated
            encoded_next = self._state(next_observation)
            carried = encoded_next if self.config.state == "sequence" else None
            next_states = encoded_next.clone()
            next_mask = torch.as_tensor(env.action_masks()).to(states.device).clone()
            if bool(done.any()):
                final = info.get("final_obs")
                if final is None:
                    raise ConfigError("the env must put info['final_obs'] for finished users (final_observation=True)")
                rows = done.to(states.device)
                # Encode only the ended rows (a few per step; the sequence state's encoder pass is the cost).
                ended = {k: torch.as_tensor(v) for k, v in final.items()}
                ended = {k: v[done.to(v.device)] for k, v in ended.items()}
                next_states[rows] = self._state(ended).to(states.device)
                next_mask[rows] = True  # the ended session's mask is gone; bootstrap over every item
            td = self._observe_transition(
                states, actions.to(states.device), reward.to(states.device), next_states,
                terminated.to(states.device), next_mask,
            )
            window = self._window
            if td is not None:
                window["td_loss"] += float(td.square().mean())
                window["updates"] += 1
            self._steps_done += n
            self.stats.update(actions.reshape(n, 1).cpu(), reward.cpu(), terminated.cpu(), truncated.cpu(),
                              torch.as_tensor(info["clicked"]).cpu())
            self.episodes_done += int(done.sum())
            observation = next_observation
            self.observation = observation
            if self._steps_done // self.log_every > self.last_log // self.log_every:
                self._log(logger)

    def _log(self, logger: ScalarLogger) -> None:
        step, window = self._steps_done, self._window
        if self.stats is not None:
            self.stats.log(logger, step)
        if window["updates"]:
            logger.log_scalar("losses/td_loss", window["td_loss"] / window["updates"], step)
        logger.log_scalar("charts/epsilon", self.epsilon(), step)
        self._window = _empty_window()
        self.last_log = step

    # -- persistence -------------------------------------------------------------------------------
    def _parameter_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _restore_parameters(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        raise NotImplementedError

    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {key: value.detach().cpu().clone() for key, value in self._parameter_tensors().items()}
        tensors["generator"] = generator_state(self.generator)
        if self.encoder is not None:  # in the checkpoint: a resumed or loaded agent needs no pretraining
            tensors.update({ENCODER_PREFIX + k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()})
        if self.candidate_mask is not None:
            tensors["candidate_mask"] = self.candidate_mask.clone()
            tensors["outside_scores"] = self.outside_scores.clone()
        if self.observation is not None:
            tensors.update({f"observation.{k}": torch.as_tensor(v).detach().cpu().clone() for k, v in self.observation.items()})
            stats = self.stats.state() if self.stats is not None else self._restored_stats
            tensors.update({f"stats.{k}": v.detach().cpu().clone() for k, v in stats.items()})
        metadata = {"n_items": self.n_items, "steps_done": self._steps_done, "env_resets": self.env_resets,
                    "episodes_done": self.episodes_done, "last_log": self.last_log, "window": dict(self._window)}
        return tensors, metadata

    def restore_checkpoint_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        if int(metadata.get("n_items", -1)) != self.n_items:
            raise CheckpointError(f"checkpoint is for {metadata.get('n_items')} items, the agent has {self.n_items}")
        require_tensors(tensors, ["generator"], "checkpoint")
        self._restore_encoder(tensors, metadata)
        self._restore_parameters(tensors, metadata)
        if "candidate_mask" in tensors:
            require_tensors(tensors, ["outside_scores"], "checkpoint")
            shape = tuple(tensors["candidate_mask"].shape)
            if shape != (self.n_items,):
                raise CheckpointError(f"checkpoint candidate_mask has shape {shape}, expected ({self.n_items},)")
            self.candidate_mask = tensors["candidate_mask"].to(torch.bool).clone()
            self.outside_scores = tensors["outside_scores"].to(torch.float32).clone()
        elif self.config.candidates > 0 and int(metadata.get("steps_done", 0)) > 0:
            raise CheckpointError(
                f"checkpoint of a trained {self.name} with candidates={self.config.candidates} has no candidate_mask"
            )
        else:
            self.candidate_mask = self.outside_scores = None
        set_generator_state(self.generator, tensors["generator"])
        self._steps_done = checkpoint_steps(metadata)
        self.env_resets = int(metadata.get("env_resets", metadata.get("learn_calls", 0)))  # learn_calls: older files
        self.episodes_done = int(metadata.get("episodes_done", 0))
        self.last_log = int(metadata.get("last_log", self._steps_done))
        window = metadata.get("window")
        self._window = {k: window.get(k, v) for k, v in _empty_window().items()} if isinstance(window, dict) else _empty_window()
        observation = {k[len("observation."):]: v.clone() for k, v in tensors.items() if k.startswith("observation.")}
        stats = {k[len("stats."):]: v.clone() for k, v in tensors.items() if k.startswith("stats.")}
        self.stats = None
        if observation and not stats and "returns" in tensors:
            # Written before SessionStats: the sessions go on (so training does as it would have), their
            # statistics start again (the running returns alone are not SessionStats' state).
            stats = _restarted_stats(int(tensors["returns"].shape[0]), self.n_items)
            self._stats_restarted = True
        if observation and stats:  # still older checkpoints kept no sessions: the next learn() starts new ones
            self.observation, self._restored_stats = observation, stats
        else:
            self.observation, self._restored_stats = None, None

    def _restore_encoder(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        """The checkpoint's sequence encoder (``state: sequence``), rebuilt from its weights alone."""
        weights = {k[len(ENCODER_PREFIX):]: v for k, v in tensors.items() if k.startswith(ENCODER_PREFIX)}
        if not weights:
            if self.config.state == "sequence" and int(metadata.get("steps_done", 0)) > 0:
                raise CheckpointError(f"checkpoint of a trained {self.name} with state: sequence has no encoder weights")
            return
        if self.config.state != "sequence":
            raise CheckpointError(f"checkpoint holds a sequence encoder but the {self.name} config has state: "
                                  f"{self.config.state}")
        require_tensors(weights, ["item_text"], "checkpoint encoder")
        try:
            with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten just below
                encoder = SequenceEncoder(self.n_items, self.config.encoder, weights["item_text"])
            encoder.load_state_dict(weights)
        except (ValueError, RuntimeError) as error:
            raise CheckpointError(f"checkpoint encoder does not fit the config's encoder: {error}") from error
        self._set_encoder(encoder)

    def save(self, directory: str | Path) -> None:
        """Write the full training state (so a loaded agent also resumes training exactly)."""
        tensors, metadata = self.checkpoint_state()
        save_agent_files(directory, self.name, self.config, tensors, metadata)

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None, **context: Any) -> _OnlineQAgent:
        """Read a saved agent; ``device`` is accepted for symmetry and ignored (these agents run on CPU)."""
        config, tensors, metadata = load_agent_files(directory, cls.name, cls.config_class)
        agent = cls(int(metadata["n_items"]), from_dict(cls.config_class, config), **context)
        agent.restore_checkpoint_state(tensors, metadata)
        return agent


# ----------------------------------------------------------------------------------- tabular Q


@config_dataclass
class TabularQConfig(_ExplorationConfig):
    """Options of tabular Q-learning over a k-means codebook of the state (LLM or sequence encoder)."""

    n_states: Annotated[int, Field(ge=1)] = 32
    """Codebook size: the number of discrete states."""
    codebook_samples: Annotated[int, Field(ge=1)] = 2_048
    """User-steps of uniform-random warm-up whose states fit the codebook (then replayed)."""
    kmeans_iterations: Annotated[int, Field(ge=1)] = 25
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Step size alpha of ``Q <- Q + alpha (target - Q)`` (duplicate (s, a) pairs in a batch are averaged)."""
    initial_q: float = 0.0


class TabularQAgent(_OnlineQAgent):
    """Tabular Q-learning on ``Q[code(state), item]`` (see the module docstring); ``env``: build the
    sequence encoder (``state: sequence``) now rather than at the first :meth:`learn`."""

    name: ClassVar[str] = "tabular_q"
    config_class: ClassVar[type] = TabularQConfig

    def __init__(self, n_items: int, config: TabularQConfig | None = None, log_every: int | None = None,
                 env: Any | None = None) -> None:
        super().__init__(n_items, config or TabularQConfig(), log_every, env)
        self.centroids: torch.Tensor | None = None
        self.q_table = torch.full((self.config.n_states, n_items), float(self.config.initial_q))
        self.visits = torch.zeros(self.config.n_states, dtype=torch.int64)
        self._warmup: dict[str, list[torch.Tensor]] = {k: [] for k in ("s", "a", "r", "s2", "term")}

    @property
    def fitted(self) -> bool:
        return self.centroids is not None

    def states_of(self, states: torch.Tensor) -> torch.Tensor:
        """Int64 [B]: the codebook state of each state vector [B, d] (all 0 before the codebook exists)."""
        if self.centroids is None:
            return torch.zeros(states.shape[0], dtype=torch.int64, device=states.device)
        return nearest(states, self.centroids)

    def _q_values(self, states: torch.Tensor) -> torch.Tensor:
        return self.q_table.to(states.device)[self.states_of(states)]

    def _explore_or_exploit(self, q: torch.Tensor, mask: torch.Tensor, epsilon: float) -> torch.Tensor:
        return super()._explore_or_exploit(q, mask, 1.0 if self.centroids is None else epsilon)

    def _td_update(self, states: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        codes = self.states_of(states).cpu()
        actions, targets = actions.cpu(), targets.cpu()
        flat = codes * self.n_items + actions
        q = self.q_table.view(-1)
        td = targets - q[flat]
        # Average the TD errors of duplicate (s, a) pairs, so a batch acts like one step per pair.
        sums = torch.zeros_like(q).index_add_(0, flat, td)
        counts = torch.zeros_like(q).index_add_(0, flat, torch.ones_like(td))
        touched = counts > 0
        q[touched] += self.config.learning_rate * sums[touched] / counts[touched]
        self.visits += torch.bincount(codes, minlength=self.config.n_states)
        return td

    def _apply_next_item_step(self, states: torch.Tensor, step: torch.Tensor, rate: float) -> None:
        # scores = Q[code(s)]: each code's row moves by the mean over its own examples, not over the
        # batch (as the TD update averages duplicate pairs): rescale by examples / examples of the code.
        codes = self.states_of(states).cpu()
        rows = step.any(dim=1)
        counts = torch.bincount(codes[rows], minlength=self.config.n_states).clamp(min=1).to(torch.float32)
        share = rows.sum() / counts[codes]
        self.q_table.index_add_(0, codes, rate * step * share.unsqueeze(1))

    def _observe_transition(self, states, actions, rewards, next_states, terminated, next_mask):
        if self.centroids is not None:
            return super()._observe_transition(states, actions, rewards, next_states, terminated, next_mask)
        for key, value in zip(("s", "a", "r", "s2", "term"), (states, actions, rewards, next_states, terminated), strict=True):
            self._warmup[key].append(value.detach().cpu().clone())
        if sum(len(s) for s in self._warmup["s"]) >= self.config.codebook_samples:
            self._fit_codebook_and_replay()
        return None

    def _fit_codebook_and_replay(self) -> None:
        warm = {key: torch.cat(values) for key, values in self._warmup.items()}
        self.centroids = kmeans(warm["s"], self.config.n_states, self.generator, self.config.kmeans_iterations)
        targets = self._targets(warm["r"], warm["s2"], warm["term"], None)
        self._td_update(warm["s"], warm["a"], targets)
        self._warmup = {k: [] for k in self._warmup}

    def _parameter_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"q_table": self.q_table, "visits": self.visits}
        if self.centroids is not None:
            tensors["centroids"] = self.centroids
        for key, values in self._warmup.items():
            if values:
                tensors[f"warmup.{key}"] = torch.cat(values)
        return tensors

    def _restore_parameters(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        require_tensors(tensors, ["q_table", "visits"], "checkpoint")
        if tuple(tensors["q_table"].shape) != (self.config.n_states, self.n_items):
            raise CheckpointError(
                f"checkpoint q_table has shape {tuple(tensors['q_table'].shape)}, expected "
                f"({self.config.n_states}, {self.n_items})"
            )
        self.q_table = tensors["q_table"].to(torch.float32).clone()
        self.visits = tensors["visits"].to(torch.int64).clone()
        self.centroids = tensors["centroids"].clone() if "centroids" in tensors else None
        self._warmup = {k: ([tensors[f"warmup.{k}"].clone()] if f"warmup.{k}" in tensors else [])
                        for k in self._warmup}


# ------------------------------------------------------------------------------------ linear Q


@config_dataclass
class LinearQConfig(_ExplorationConfig):
    """Options of linear Q-learning on ``phi(s) = [state, 1]`` (state: LLM or sequence encoder)."""

    form: Literal["bilinear", "per_item"] = "bilinear"
    """``bilinear``: Q = phi^T W e_a + b_a (shared W, scales to big catalogues); ``per_item``:
    Q = phi . w_a (one weight vector per item)."""
    learning_rate: Annotated[float, Field(gt=0)] = 0.1
    """SGD step on the squared TD error. Shared weights (W) take the batch-mean gradient; per-item
    weights (w_a, b_a) the mean over that item's transitions in the batch."""
    init_scale: Annotated[float, Field(ge=0)] = 0.0
    """Std of the Gaussian initial weights (0: start from Q = 0)."""

    @model_validator(mode="after")
    def _next_item_needs_bilinear(self) -> LinearQConfig:
        if self.next_item_coef > 0 and self.form != "bilinear":
            raise ValueError("next_item_coef needs form='bilinear' (a per-item model has no shared weights to learn from)")
        return self


class LinearQAgent(_OnlineQAgent):
    """Linear (or bilinear) Q-learning with batched semi-gradient TD(0) updates.

    ``item_embeddings`` [n_items, d_e] (the LLM item encodings) are needed by the bilinear form;
    when not given they are read from the env at the first :meth:`learn`. The state width is the
    LLM encoding width (``state: pooled``) or ``encoder.hidden_dim`` (``state: sequence``). ``env``:
    build the sequence encoder now rather than at the first :meth:`learn`.
    """

    name: ClassVar[str] = "linear_q"
    config_class: ClassVar[type] = LinearQConfig

    def __init__(
        self, n_items: int, config: LinearQConfig | None = None, item_embeddings: torch.Tensor | None = None,
        log_every: int | None = None, env: Any | None = None,
    ) -> None:
        super().__init__(n_items, config or LinearQConfig(), log_every, env)
        self.item_embeddings: torch.Tensor | None = None
        if item_embeddings is not None:
            self._set_item_embeddings(torch.as_tensor(item_embeddings, dtype=torch.float32))
        self.weight: torch.Tensor | None = None  # [n_items, d + 1] (per_item) or [d + 1, d_e] (bilinear)
        self.item_bias = torch.zeros(n_items)  # bilinear only (per_item keeps its bias in weight)

    def _set_item_embeddings(self, embeddings: torch.Tensor) -> None:
        if embeddings.dim() != 2 or embeddings.shape[0] != self.n_items:
            raise ConfigError(f"item_embeddings must be [n_items={self.n_items}, d], got {tuple(embeddings.shape)}")
        self.item_embeddings = embeddings.detach().cpu().clone()

    def _prepare(self, env: Any) -> None:
        embeddings = _env_item_embeddings(env)
        if self.config.form == "bilinear" and self.item_embeddings is None:
            self._set_item_embeddings(embeddings)
        if self.weight is None:  # llm_state pools item encodings: the same width
            sequence = self.config.state == "sequence"
            self._init_weights(self.config.encoder.hidden_dim if sequence else int(embeddings.shape[1]))

    def _init_weights(self, state_dim: int) -> None:
        if self.config.form == "per_item":
            shape = (self.n_items, state_dim + 1)
        else:
            if self.item_embeddings is None:
                raise ConfigError("the bilinear LinearQAgent needs item_embeddings (or an env to read them from)")
            shape = (state_dim + 1, self.item_embeddings.shape[1])
        self.weight = torch.randn(shape, generator=self.generator) * self.config.init_scale

    @staticmethod
    def _features(states: torch.Tensor) -> torch.Tensor:
        return torch.cat([states, torch.ones(states.shape[0], 1, device=states.device)], dim=1)

    def _q_values(self, states: torch.Tensor) -> torch.Tensor:
        if self.weight is None:  # never trained: every item is worth 0
            return torch.zeros(states.shape[0], self.n_items, device=states.device)
        phi = self._features(states.to(torch.float32)).cpu()
        if self.config.form == "per_item":
            q = phi @ self.weight.T
        else:
            q = (phi @ self.weight) @ self.item_embeddings.T + self.item_bias
        return q.to(states.device)

    def _td_update(self, states: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        phi = self._features(states.to(torch.float32)).cpu()
        actions, targets = actions.cpu(), targets.cpu()
        lr = self.config.learning_rate
        per_item_count = torch.bincount(actions, minlength=self.n_items).clamp(min=1).to(torch.float32)
        if self.config.form == "per_item":
            q = (phi * self.weight[actions]).sum(dim=1)
            td = targets - q
            gradient = torch.zeros_like(self.weight).index_add_(0, actions, td.unsqueeze(1) * phi)
            self.weight += lr * gradient / per_item_count.unsqueeze(1)
        else:
            embedded = self.item_embeddings[actions]  # [B, d_e]
            q = ((phi @ self.weight) * embedded).sum(dim=1) + self.item_bias[actions]
            td = targets - q
            self.weight += lr * (phi.T @ (td.unsqueeze(1) * embedded)) / len(td)
            self.item_bias += lr * torch.zeros(self.n_items).index_add_(0, actions, td) / per_item_count
        return td

    def _apply_next_item_step(self, states: torch.Tensor, step: torch.Tensor, rate: float) -> None:
        phi = self._features(states)  # scores = phi W E^T + b
        self.weight += rate * phi.T @ (step @ self.item_embeddings)
        self.item_bias += rate * step.sum(dim=0)

    def _parameter_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"item_bias": self.item_bias}
        if self.weight is not None:
            tensors["weight"] = self.weight
        if self.item_embeddings is not None:
            tensors["item_embeddings"] = self.item_embeddings
        return tensors

    def _restore_parameters(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        require_tensors(tensors, ["item_bias"], "checkpoint")
        if "item_embeddings" in tensors:
            self._set_item_embeddings(tensors["item_embeddings"])
        self.item_bias = tensors["item_bias"].to(torch.float32).clone()
        self.weight = tensors["weight"].to(torch.float32).clone() if "weight" in tensors else None
        if self.weight is not None:
            ok = (self.config.form == "per_item" and self.weight.shape[0] == self.n_items) or (
                self.config.form == "bilinear" and self.item_embeddings is not None
                and self.weight.shape[1] == self.item_embeddings.shape[1]
            )
            if ok and self.config.state == "sequence":  # phi = [encoder state, 1]
                ok = self.weight.shape[1 if self.config.form == "per_item" else 0] == self.config.encoder.hidden_dim + 1
            if not ok:
                raise CheckpointError(f"checkpoint weight shape {tuple(self.weight.shape)} does not fit form="
                                      f"{self.config.form}, state={self.config.state}")
