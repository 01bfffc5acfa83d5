"""A natively batched Gymnasium vector env: N simulated users stepped at once as tensors."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from recarena.core.errors import CheckpointError, ConfigError
from recarena.envs.common import (
    INT64_MAX,
    SlateSpace,
    as_action_tensor,
    build_simulator,
    check_slates,
    parse_options,
    resolve_history_length,
    reward_function,
)
from recarena.envs.observation import MAX_RESPONSE, build_observation, clean_responses, observation_space
from recarena.envs.vector_incremental import IncrementalUsers, supported
from recarena.simulators.base import LoggedSequences, StepOutcome, UserState


class RecommendationVectorEnv(VectorEnv):
    """N users of one simulator stepped together as tensors on one device.

    Reached with ``gymnasium.make_vec("recarena/ML1M-v0", num_envs=N, vectorization_mode="vector_entry_point")``
    and takes the same keyword arguments as :class:`recarena.envs.RecommendationEnv` plus:

    - ``num_envs``: number of users N.
    - ``device``: ``"cpu"`` or ``"cuda[:i]"``; the simulator state and every returned tensor live there.
    - ``as_numpy``: return NumPy arrays instead of torch tensors (copies to the host every step).
    - ``final_observation``: put the last observation of finished episodes in ``info["final_obs"]``.
    - ``autoreset``: reset finished users inside ``step`` (default). ``False`` disables autoreset;
      then reset rows with ``reset(options={"reset_mask": mask})``.
    - ``autoreset_mode``: ``AutoresetMode.SAME_STEP`` (``"SameStep"``, the default),
      ``AutoresetMode.NEXT_STEP`` (``"NextStep"``, Gymnasium's default, which its vector observation
      wrappers require) or ``AutoresetMode.DISABLED`` (``"Disabled"``, the same as ``autoreset=False``);
      ``metadata["autoreset_mode"]`` says which.
    - ``incremental``: keep the learned choice's per-user parts between steps on the CPU (default
      ``True``; see "Flat in the history length" below); ``False`` recomputes them from the state every
      step (the reference computation, and what :class:`recarena.envs.RecommendationEnv`'s batch of
      one does, so that its observations stay bit-identical to its NumPy step's).

    **Autoreset (same-step).** ``metadata["autoreset_mode"]`` is ``AutoresetMode.SAME_STEP``: when a
    user's episode ends in ``step``, that step returns its reward, ``terminated``/``truncated``, and
    already the *first observation of the user's next session*; the last observation of the ended
    session is in ``info["final_obs"]`` (a batched dict like the observation; only rows where
    ``info["_final_obs"]`` is True are meaningful). The next action of that row acts in the new session.

    **Autoreset (next-step)**, with ``autoreset_mode="NextStep"``: the step in which a user's episode
    ends returns its last observation (no ``final_obs``); the next step ignores that row's action,
    starts the user's next session and returns its first observation with reward 0 and
    ``terminated``/``truncated`` False (and, in ``info``, no click: ``item`` -1). The other rows step
    as usual. Selecting the rows that step synchronises with the host, which is free on the CPU: this
    mode is there for Gymnasium's stock vector wrappers (with ``as_numpy=True``), not for CUDA speed.

    **Step cost.** ``step`` runs tensor ops only: no per-user Python loop and no host-device copy.
    The one host synchronisation left is action validation (``validate_actions=True``, the
    default: one ``bool`` read of the range/duplicate check); with ``validate_actions=False`` an
    autoreset ``step`` on CUDA performs none (checked under ``torch.cuda.set_sync_debug_mode("error")``
    by a test), as long as the actions are already a tensor on the device and ``as_numpy=False``
    (NumPy actions are copied to the device, and ``as_numpy=True`` copies every output back).
    On an accelerator, finished rows are reset and re-observed with static shapes (new sessions
    are drawn for all rows and merged in with ``where``); on the CPU only the finished rows are,
    which synchronises, for free there, and keeps the CPU random streams as they were.

    **Flat in the history length** (CPU, learned-choice users: ``-v1`` to ``-v3``). The env keeps per
    user the catalogue's log-normaliser, reads resets from the start table and keeps the
    observation's pooled LLM state as a running sum (:mod:`recarena.envs.vector_incremental`), so a
    step scores only the slate's logits and nothing in it replays the history; results agree with
    the full computation to float32 rounding. :attr:`user_state` is then read-only for callers
    (use :meth:`set_state` to replace it).

    **Info.** ``clicked``, ``liked``, ``from_log`` (bool [N]), ``item`` (int64 [N], -1 = none) and
    ``response`` (float32 [N]) every step; ``final_obs``/``_final_obs`` as above. The action mask is
    not copied into ``info`` (it is [N, n_items]); get it with :meth:`action_masks`.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        as_numpy: bool = False,
        final_observation: bool = True,
        autoreset: bool = True,
        autoreset_mode: AutoresetMode | str | None = None,
        incremental: bool = True,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Every option is checked before the simulator is built (data loaded, models fitted).
        num_envs = _check_count(num_envs)
        flags = (("as_numpy", as_numpy), ("final_observation", final_observation), ("autoreset", autoreset),
                 ("incremental", incremental))
        for name, flag in flags:
            if not isinstance(flag, (bool, np.bool_)):
                raise ConfigError(f"{name}: expected true or false, got {flag!r}")
        mode = _autoreset_mode(autoreset_mode, autoreset)
        if render_mode is not None:
            raise ValueError(f"recarena envs do not render; render_mode must be None, got {render_mode!r}")
        self.options = parse_options(**kwargs)
        self.simulator = build_simulator(self.options)
        self.device = torch.device(self.simulator.device)  # resolved ("auto" -> cuda|cpu)
        self.num_envs = int(num_envs)
        self.n_items = int(self.simulator.n_items)
        self.slate_size = self.options.slate_size
        if self.slate_size > self.n_items:
            raise ConfigError(f"slate_size: {self.slate_size} exceeds the number of items ({self.n_items})")
        self.history_length = resolve_history_length(self.options, self.simulator)
        self.max_steps = self.options.max_steps
        self.as_numpy = bool(as_numpy)
        self.final_observation = bool(final_observation)
        self.autoreset_mode = mode
        self.autoreset = mode != AutoresetMode.DISABLED
        self.render_mode = None
        self.metadata = dict(self.metadata)
        self.metadata["autoreset_mode"] = mode
        self._reward_fn = reward_function(self.options.reward)
        self._embeddings = self.simulator.item_embeddings.to(self.device, torch.float32)
        full_space = observation_space(self.n_items, self.history_length, int(self._embeddings.shape[1]))
        self.single_observation_space = spaces.Dict({k: full_space[k] for k in self.options.observation_keys})
        if self.slate_size == 1:
            self.single_action_space: spaces.Space = spaces.Discrete(self.n_items)
        else:
            self.single_action_space = SlateSpace(self.n_items, self.slate_size)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._observation_space: spaces.Space | None = None
        self._generator = torch.Generator(device=self.device)
        self._state: UserState = self.simulator.init_state(self.num_envs)
        self._steps = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self._all_rows = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        self._restart = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)  # next-step mode
        self._needs_reset = True
        self._incremental: IncrementalUsers | None = None
        if incremental and supported(self.simulator, self.device):
            self._incremental = IncrementalUsers(
                self.simulator, self.num_envs, self.history_length, self._embeddings,
                pooled="llm_state" in self.options.observation_keys,
            )

    # Spaces -------------------------------------------------------------------------------------

    @property
    def observation_space(self) -> spaces.Space:  # type: ignore[override]
        """The batched observation space, built on first use (its bounds are [N, ...] arrays)."""
        if self._observation_space is None:
            self._observation_space = batch_space(self.single_observation_space, self.num_envs)
        return self._observation_space

    @observation_space.setter
    def observation_space(self, value: spaces.Space) -> None:
        self._observation_space = value

    # Core API -----------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start new sessions for every user (or for ``options["reset_mask"]``, bool [N], only).

        ``seed`` seeds ``self.np_random``; the torch generator that drives the simulator is then
        seeded from ``self.np_random``, so one integer fixes the whole rollout.
        """
        if seed is not None:
            if not isinstance(seed, (int, np.integer)):
                raise TypeError(f"seed must be an int or None, got {seed!r}")
            self._np_random, self._np_random_seed = seeding.np_random(int(seed))
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; the only option is 'reset_mask'")
        if seed is not None or self._needs_reset or mask is None:
            self._generator.manual_seed(int(self.np_random.integers(2**63 - 1)))
        if mask is None:
            rows = self._all_rows
        else:
            if self._needs_reset:
                raise ValueError("reset(options={'reset_mask': ...}) needs a full reset() first")
            rows = torch.as_tensor(mask, device=self.device)
            if rows.dtype != torch.bool or rows.shape != (self.num_envs,):
                raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},)")
        self._reset_rows(rows)
        self._steps = torch.where(rows, torch.zeros_like(self._steps), self._steps)
        self._restart = self._restart & ~rows
        self._needs_reset = False
        return self._output(self._observe()), {}

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Show each user a slate: ``actions`` int [N] (slate size 1) or [N, k]; see the class docstring."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        slate = self._to_slate(actions)
        state = self._state
        next_step = self.autoreset_mode == AutoresetMode.NEXT_STEP
        incremental = self._incremental
        leaving = None if incremental is None else incremental.leaving(state)
        if next_step and bool(self._restart.any()):  # these rows start their next session instead
            restart = self._restart
            outcome = self._step_rows(torch.nonzero(~restart).squeeze(1), slate)
            if incremental is not None:
                incremental.click(state, leaving, outcome.item, outcome.response, outcome.clicked)
            self._reset_rows(restart)
            self._steps = torch.where(restart, torch.zeros_like(self._steps), self._steps + 1)
        else:
            if incremental is None:
                outcome = self.simulator.step(state, slate, self._generator)
            else:
                outcome = self.simulator.step(state, slate, self._generator, normaliser=incremental.normaliser)
                incremental.click(state, leaving, outcome.item, outcome.response, outcome.clicked)
            self._steps = self._steps + 1
        reward = torch.nan_to_num(self._reward_fn(outcome).to(torch.float32), nan=0.0, posinf=0.0, neginf=0.0)
        terminated = outcome.left.clone()
        truncated = (self._steps >= self.max_steps) & ~terminated
        info: dict[str, Any] = {
            "clicked": outcome.clicked,
            "liked": outcome.liked,
            "from_log": outcome.from_log,
            "item": outcome.item,
            "response": torch.nan_to_num(outcome.response.to(torch.float32), nan=MAX_RESPONSE),
        }
        if next_step:
            self._restart = terminated | truncated
            observation = self._observe()
        elif not self.autoreset:
            observation = self._observe()
        else:
            done = terminated | truncated
            final = self._observe() if self.final_observation else None
            self._reset_rows(done)
            self._steps = torch.where(done, torch.zeros_like(self._steps), self._steps)
            if final is None:
                observation = self._observe()
            else:
                info["final_obs"], info["_final_obs"] = final, done
                observation = self._refresh(final, done)
        return (
            self._output(observation),
            self._output(reward),
            self._output(terminated),
            self._output(truncated),
            self._output(info),
        )

    def action_masks(self) -> torch.Tensor | np.ndarray:
        """Bool [N, n_items]: True where the item may be recommended (not yet consumed, if masked)."""
        if self._needs_reset:
            raise RuntimeError("call reset() before action_masks()")
        if self.options.mask_consumed:
            mask = ~self._state.consumed
        else:
            mask = torch.ones((self.num_envs, self.n_items), dtype=torch.bool, device=self.device)
        return self._output(mask)

    # Checkpointing ------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """The full state (user tensors, generator states, step counters) as copies, for checkpoints."""
        if self._needs_reset:
            raise RuntimeError("call reset() before get_state()")
        return {
            "user_state": {f.name: getattr(self._state, f.name).clone() for f in fields(UserState)},
            "steps": self._steps.clone(),
            "torch_generator": self._generator.get_state().clone(),
            "np_random": self.np_random.bit_generator.state,
            "num_envs": self.num_envs,
            "n_items": self.n_items,
        } | ({"autoreset_pending": self._restart.clone()} if self.autoreset_mode == AutoresetMode.NEXT_STEP else {})

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` result so stepping continues exactly where it was taken."""
        expected = {"user_state", "steps", "torch_generator", "np_random", "num_envs", "n_items"}
        if not isinstance(state, dict) or set(state) - {"autoreset_pending"} != expected:
            raise CheckpointError(f"env state must be a dict with keys {sorted(expected)} (and 'autoreset_pending')")
        if state["num_envs"] != self.num_envs or state["n_items"] != self.n_items:
            raise CheckpointError(
                f"env state is for num_envs={state['num_envs']}, n_items={state['n_items']}; "
                f"this env has num_envs={self.num_envs}, n_items={self.n_items}"
            )
        names = {f.name for f in fields(UserState)}
        if set(state["user_state"]) != names:
            raise CheckpointError(f"env state 'user_state' must have keys {sorted(names)}")
        template = self.simulator.init_state(self.num_envs)
        values = {}
        for name in sorted(names):
            value = torch.as_tensor(state["user_state"][name])
            like = getattr(template, name)
            if value.shape != like.shape or value.dtype != like.dtype:
                raise CheckpointError(
                    f"env state user_state.{name}: expected {like.dtype} {tuple(like.shape)}, "
                    f"got {value.dtype} {tuple(value.shape)}"
                )
            values[name] = value.to(self.device).clone()
        self._state = UserState(**values)
        self._steps = torch.as_tensor(state["steps"], dtype=torch.int64).to(self.device).clone()
        self._generator.set_state(torch.as_tensor(state["torch_generator"]).cpu())
        self.np_random.bit_generator.state = state["np_random"]
        pending = state.get("autoreset_pending")
        if pending is None:
            self._restart = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        else:
            pending = torch.as_tensor(pending)
            if pending.dtype != torch.bool or pending.shape != (self.num_envs,):
                raise CheckpointError(f"env state autoreset_pending: expected bool ({self.num_envs},)")
            self._restart = pending.to(self.device).clone()
        if self._incremental is not None:
            self._incremental.rebuild(self._state)
        self._needs_reset = False

    # Helpers ------------------------------------------------------------------------------------

    @property
    def logged_sequences(self) -> LoggedSequences | None:
        """The sequences the simulator starts sessions from (training log only), for agents' supervised losses."""
        return self.simulator.logged_sequences

    @property
    def item_embeddings(self) -> torch.Tensor:
        """float32 [n_items, d] on the env's device: the LLM encodings observations are built from."""
        return self._embeddings

    @property
    def user_state(self) -> UserState:
        """The live simulator state of the N users (not a copy)."""
        return self._state

    def _reset_rows(self, rows: torch.Tensor) -> None:
        """New sessions for the rows where ``rows`` (bool [N]) is True (and their kept parts)."""
        if self._incremental is None:
            self.simulator.reset(self._state, rows, self._generator)
        else:
            self._incremental.reset(self._state, rows, self._generator)

    def _step_rows(self, rows: torch.Tensor, slate: torch.Tensor) -> StepOutcome:
        """Step only the users ``rows`` (int64 [M]); the others' outcome is "nothing happened"."""
        state = self._state
        outcome = StepOutcome(
            **{
                f.name: torch.full(
                    (self.num_envs,), -1 if f.name in ("chosen_slot", "item") else 0, dtype=dtype, device=self.device
                )
                for f in fields(StepOutcome)
                for dtype in [_OUTCOME_DTYPES.get(f.name, torch.float32)]
            }
        )
        if rows.numel() == 0:
            return outcome
        part = UserState(**{f.name: getattr(state, f.name).index_select(0, rows) for f in fields(UserState)})
        if self._incremental is None:
            stepped = self.simulator.step(part, slate.index_select(0, rows), self._generator)
        else:
            normaliser = self._incremental.normaliser.index_select(0, rows)
            stepped = self.simulator.step(part, slate.index_select(0, rows), self._generator, normaliser=normaliser)
            self._incremental.normaliser.index_copy_(0, rows, normaliser)
        for f in fields(UserState):
            getattr(state, f.name).index_copy_(0, rows, getattr(part, f.name))
        for f in fields(StepOutcome):
            value = getattr(stepped, f.name)
            getattr(outcome, f.name).index_copy_(0, rows, value.to(getattr(outcome, f.name).dtype))
        return outcome

    def _to_slate(self, actions: Any) -> torch.Tensor:
        tensor = as_action_tensor(actions, self.device, self.n_items)
        n, k = self.num_envs, self.slate_size
        if k == 1 and tensor.shape == (n,):
            tensor = tensor.unsqueeze(1)
        if tensor.shape != (n, k):
            expected = f"({n},)" if k == 1 else f"({n}, {k})"
            raise ValueError(
                f"actions must have shape {expected} (num_envs, slate_size), got {tuple(tensor.shape)}"
            )
        if self.options.validate_actions:
            check_slates(tensor, self.n_items)
        return tensor

    def _refresh(
        self, observation: dict[str, torch.Tensor], rows: torch.Tensor, static: bool | None = None
    ) -> dict[str, torch.Tensor]:
        """``observation`` with the rows where ``rows`` (bool [N]) is True rebuilt from the state.

        On the CPU only the reset rows are rebuilt (few per step; selecting them syncs, which is
        free there); on an accelerator every row is rebuilt and selected with ``where``, which keeps
        shapes static and the step free of host synchronisation.
        """
        if static if static is not None else self.device.type != "cpu":
            fresh = self._observe()
            return {
                key: torch.where(_column(rows, value), fresh[key], value)
                for key, value in observation.items()
            }
        index = rows.nonzero().squeeze(1)
        fresh = self._observe(index)
        return {key: value.index_copy(0, index, fresh[key]) for key, value in observation.items()}

    def _observe(self, index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The observation of every user (or of the users ``index``) from the simulator state."""
        if self._incremental is not None:  # (the kept responses and pooled sums)
            return self._incremental.observation(self._state, self.options.observation_keys, index)
        history = self._state.history[:, -self.history_length :]
        responses = self._state.history_response[:, -self.history_length :]
        if index is None:
            history = history.clone()
        else:
            history, responses = history.index_select(0, index), responses.index_select(0, index)
        keys = self.options.observation_keys
        if "llm_state" in keys:
            observation = build_observation(history, responses, self._embeddings)
        else:  # the same values without pooling the item encodings
            observation = {"history": history, "responses": clean_responses(history, responses)}
        return {key: observation[key] for key in keys}

    def _output(self, value: Any) -> Any:
        if not self.as_numpy:
            return value
        if isinstance(value, dict):
            return {key: self._output(item) for key, item in value.items()}
        if isinstance(value, torch.Tensor):
            return value.cpu().numpy()
        return value

    def __repr__(self) -> str:
        name = self.spec.id if self.spec is not None else "RecommendationVectorEnv"
        return f"RecommendationVectorEnv({name}, num_envs={self.num_envs}, device={self.device})"


_OUTCOME_DTYPES = {
    "chosen_slot": torch.int64,
    "item": torch.int64,
    "response": torch.float32,
    "clicked": torch.bool,
    "liked": torch.bool,
    "from_log": torch.bool,
    "reward": torch.float32,
    "left": torch.bool,
}


def _check_count(num_envs: Any) -> int:
    """``num_envs`` as an int in [1, INT64_MAX], or a ConfigError naming it and the value given."""
    if isinstance(num_envs, np.integer):
        num_envs = num_envs.item()
    if isinstance(num_envs, float) and num_envs.is_integer():
        num_envs = int(num_envs)
    if not isinstance(num_envs, int) or isinstance(num_envs, bool):
        raise ConfigError(f"num_envs: expected an integer, got {num_envs!r}")
    if num_envs < 1:
        raise ConfigError(f"num_envs: must be >= 1, got {num_envs}")
    if num_envs > INT64_MAX:
        raise ConfigError(f"num_envs: must be <= {INT64_MAX}, got {num_envs}")
    return num_envs


def _autoreset_mode(mode: AutoresetMode | str | None, autoreset: bool) -> AutoresetMode:
    """The autoreset mode the two options ask for (``autoreset=False`` is ``DISABLED``)."""
    if mode is None:
        return AutoresetMode.SAME_STEP if autoreset else AutoresetMode.DISABLED
    if not isinstance(mode, AutoresetMode):
        try:
            mode = AutoresetMode(mode)
        except ValueError:
            valid = [m.value for m in AutoresetMode]
            raise ConfigError(f"autoreset_mode: must be an AutoresetMode or one of {valid}, got {mode!r}") from None
    if not autoreset and mode != AutoresetMode.DISABLED:
        raise ConfigError(f"autoreset_mode: autoreset=False contradicts autoreset_mode={mode.value!r}; give one of the two")
    return mode


def _column(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A bool [N] mask shaped to broadcast against ``like`` [N, ...]."""
    return mask.reshape(mask.shape + (1,) * (like.dim() - 1))
