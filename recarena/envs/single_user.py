"""The single env's step without torch dispatch: one user, NumPy views of the batch-of-one state.

:class:`recarena.envs.RecommendationEnv` is the batch of one of
:class:`recarena.envs.RecommendationVectorEnv`. A torch op on a batch of one costs microseconds of
dispatch, and a step plus its observation is ~100 of them, so the single env ran ~8x slower per step
than RecSim's NumPy envs. On the CPU, for the stock composition - a
:class:`recarena.simulators.composed.ComposedSimulator` with the rating-only
:class:`recarena.simulators.behaviour.ChoiceModel` or the learned
:class:`recarena.simulators.choice.LearnedChoice` (the ``-v1`` ids), the stock interest, leave and
sampler parts and a rating lookup known here (synthetic users, logged users with a rating table or
implicit logs) - :class:`SingleUserStep` runs ``reset``, ``step`` and the observation in NumPy on
views of the *same* ``UserState`` tensors, reproducing them bit for bit:

* the same float32 operations in the same order (the batched matmul of ``InterestModel.fatigue`` on
  a batch of one is a sequential float32 sum over the topics, reproduced item by item);
* the same random draws from the same torch generator, and everything computed from a draw whose
  result NumPy would round differently (the Gumbel noise's logarithms, the LLM state's embedding bag
  and norm) computed by the same torch kernels;
* the choice noise of several steps drawn in one torch call where nothing else draws between two
  resets (which reseed the generator): torch's uniforms are one stream however they are batched.
  The generator therefore runs ahead of the session's draws until the next reset: the batch's
  ``get_state()`` taken mid-session (the single env offers none) would not resume the same choices.

The learned choice's next-item GRU and catalogue logits (:mod:`recarena.envs.single_user_choice`)
are the exception: NumPy cannot reproduce torch's matrix products and gates bit for bit, so its GRU
state and choice utilities agree with the batched path's to float32 tolerance (the draws, and so
the choices unless a Gumbel-max is decided within that tolerance, stay the same); the warm-started
interest (``InterestModel.replay``) and everything else stay bit-identical. A ``-v1`` to ``-v3`` reset
copies its GRU state, normaliser and warm-started interest from the simulator's start table
(:mod:`recarena.envs.start_table`: the state within the tolerance above, the interest exactly), or,
where the table is off or over its size bound, from a memo keyed by (user, prefix length) where it
can (:mod:`recarena.envs.reset_memo`: bit-identical).

Tests compare rollouts with the batched path's and with rollouts recorded before this module
existed. Anything else - CUDA, plug-in parts (a choice model, network or rating not known here), a
simulator that overrides ``step`` or ``reset`` - steps the batched path. The vector env's private state (generator, step
counter) and the simulator's running statistics are this module's to update, as the batched step
would.
"""

from __future__ import annotations

import bisect
import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from recarena.envs.common import check_slates
from recarena.envs.observation import MAX_RESPONSE
from recarena.envs.single_user_choice import NumpyLearnedChoice, supports
from recarena.simulators.behaviour import (
    LIKE_THRESHOLD,
    MAX_RATING,
    MIN_RATING,
    REWARDS,
    ChoiceModel,
    InterestModel,
    LeaveModel,
    UserSampler,
)
from recarena.simulators.composed import ComposedSimulator

_F32 = np.float32
_ZERO, _MAX_RESPONSE = _F32(0.0), _F32(MAX_RESPONSE)
_MIN_RATING, _MAX_RATING = _F32(MIN_RATING), _F32(MAX_RATING)
_ONE = _F32(1.0)
_BMM_NAIVE_LIMIT = 400
"""torch's CPU bmm sums a [1, k, T] by [1, T, 1] product in plain topic order while k * T < 400 (a
BLAS kernel takes over from there, with its own order): the NumPy step reproduces only the former."""
_COUNTERS = ("_counts", "_user_steps", "_shown")
"""The running statistics a ComposedSimulator step updates (``statistics()`` reads them)."""

RateFunction = Callable[[int, int, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``(user, prefix_length, slate int64 [k]) -> (ratings float32 [k], from_log bool [k], predicted float32 [k])``:
``rate_with_prediction``, the last the model's own prediction (the learned choice's rating feature)."""


def _numpy_rewards() -> dict[Any, Callable[[bool, bool, np.float32], np.float32]]:
    """NumPy twins of ``recarena.simulators.behaviour.REWARDS`` keyed by the torch function itself."""
    zero = _F32(0.0)
    return {
        REWARDS["click"]: lambda clicked, liked, response: _F32(clicked),
        REWARDS["like"]: lambda clicked, liked, response: _F32(liked),
        REWARDS["rating"]: lambda clicked, liked, response: response if clicked else zero,
        REWARDS["dwell"]: lambda clicked, liked, response: response / _F32(MAX_RATING) if clicked else zero,
    }


def _overrides(simulator: ComposedSimulator, name: str, base: type) -> bool:
    """Whether the simulator's class replaces ``base``'s method ``name`` (False if neither has it)."""
    return getattr(type(simulator), name, None) is not getattr(base, name, None)


def _rate_function(simulator: ComposedSimulator) -> RateFunction | None:
    """A NumPy ``rate_with_prediction`` for the simulators whose rating is a table lookup (or, for
    implicit logs, the top of the scale); None for the others."""
    from recarena.simulators.logged import LoggedUserSimulator
    from recarena.simulators.synthetic import SyntheticSimulator

    n_items = simulator.n_items
    if isinstance(simulator, SyntheticSimulator):
        if _overrides(simulator, "rate", SyntheticSimulator) or _overrides(
            simulator, "rate_with_prediction", ComposedSimulator
        ):
            return None
        table = simulator.true_ratings.numpy()
        never = np.zeros(simulator.n_items, dtype=bool)

        def synthetic(user: int, prefix: int, slate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            ratings = table[user, slate]
            return ratings, never[: len(slate)], ratings

        return synthetic

    if isinstance(simulator, LoggedUserSimulator):
        names = ("rate", "rate_with_prediction", "predicted_ratings")
        if any(_overrides(simulator, name, LoggedUserSimulator) for name in names):
            return None
        implicit = getattr(simulator, "preference_model", None) is None  # every rating the top of the scale
        if not implicit and getattr(simulator, "rating_table", None) is None:
            return None
        table = np.full((1, n_items), MAX_RATING, dtype=np.float32) if implicit else simulator.rating_table.numpy()
        calibrated = not implicit and getattr(simulator, "calibration", None) is not None
        if calibrated and getattr(simulator, "answer_table", None) is None:
            return None
        answers = simulator.answer_table.numpy() if calibrated else table  # the user's own answers (-v2: drawn)
        model_only = simulator.config.mode == "model-only"
        # A sentinel key past every (user, item) key: searchsorted's answer is always an index.
        keys = np.append(simulator.lookup.keys.numpy(), np.iinfo(np.int64).max)
        positions = np.append(simulator.lookup.position.numpy(), 0)
        logged = np.append(simulator.lookup.rating.numpy(), np.float32(0.0))
        nothing = np.zeros(n_items, dtype=bool)

        def logged_first(user: int, prefix: int, slate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            predicted = table[0 if implicit else user, slate]
            answered = answers[user, slate] if calibrated else predicted
            if model_only:
                return answered, nothing[: len(slate)], predicted
            query = slate + user * n_items
            index = keys.searchsorted(query)
            from_log = keys[index] == query
            if not np.count_nonzero(from_log):  # (cheaper than .any() on a few items)
                return answered, from_log, predicted
            from_log &= positions[index] >= prefix
            if implicit:
                return predicted, from_log, predicted
            return np.where(from_log, logged[index], answered), from_log, predicted

        return logged_first
    return None


_UNCOPIED = frozenset(
    {"_bound", "_user", "_prefix", "_history", "_responses", "_consumed", "_interest", "_patience", "_step",
     "_env_steps", "_counts", "_topics_of", "_rate", "_reward", "_reward_torch"}
)
"""What a copy of a SingleUserStep does not copy (see ``__getstate__``)."""

_TABLES: weakref.WeakKeyDictionary[ComposedSimulator, tuple[list, RateFunction | None]] = weakref.WeakKeyDictionary()
"""Per simulator (shared by every env built on it): each item's nonzero topic weights, the rate function."""


def _tables(simulator: ComposedSimulator) -> tuple[list[list[tuple[int, np.float32]]], RateFunction | None]:
    """Each item's (topic, nonzero weight) pairs in topic order, and the NumPy rate, built once per simulator."""
    if simulator not in _TABLES:
        weights = simulator.interest_model.topic_weights.numpy()
        topics_of = [[(int(t), _F32(row[t])) for t in np.flatnonzero(row)] for row in weights]
        _TABLES[simulator] = (topics_of, _rate_function(simulator))
    return _TABLES[simulator]


class SingleUserStep:
    """Reset, step and observation of a batch-of-one :class:`RecommendationVectorEnv` in NumPy.

    Built by :meth:`create`, which returns None where the batched path must be used (see the module
    docstring). It reads and writes the vector env's live state (``UserState`` tensors, step counter)
    through NumPy views and draws from its torch generator.
    """

    def __init__(self, env: Any, simulator: ComposedSimulator) -> None:
        self.env = env
        self.simulator = simulator
        self.n_items = int(env.n_items)
        self.slate_size = int(env.slate_size)
        self.max_steps = int(env.max_steps)
        self.history_length = int(env.history_length)
        self.keys = tuple(env.options.observation_keys)
        self.mask_consumed = bool(env.options.mask_consumed)
        self.validate = bool(env.options.validate_actions)
        self._topics_of, self._rate = _tables(simulator)
        self._embeddings = env.item_embeddings
        self._offsets = torch.zeros(1, dtype=torch.int64)
        interest = simulator.interest_model.config
        self._topic_weights = simulator.interest_model.topic_weights.numpy()
        self._penalise = bool(getattr(simulator, "penalise_response", True))
        penalty = getattr(simulator, "response_penalty", None)
        self._boredom = _F32(interest.boredom_penalty if penalty is None else penalty)
        self._like_threshold = _F32(getattr(simulator, "like_threshold", LIKE_THRESHOLD))
        self._decay = _F32(interest.fatigue_decay)
        self._gain = (_F32(False) * _F32(interest.fatigue_gain), _F32(True) * _F32(interest.fatigue_gain))
        self._drift = float(interest.drift)
        self._max_fatigue, self._min_fatigue = _F32(interest.max_fatigue), -_F32(interest.max_fatigue)
        choice = simulator.choice_model
        self._learned = None if type(choice) is ChoiceModel else NumpyLearnedChoice(simulator)
        self._logits = np.zeros(self.slate_size + 1, dtype=np.float32)  # the utilities, then no choice
        if self._learned is None:
            self._temperature = _F32(choice.config.temperature)
            self._logits[-1] = _no_choice_utility(choice)
        else:
            self._temperature = _ONE
            self._logits[-1] = self._learned.no_choice
        # Warm-started interest (InterestModel.replay of the starting history): each item's gain row,
        # and whether the clamp can bind (never, from 0, while |gain| / (1 - decay) < max_fatigue).
        self._warm_interest = bool(choice.warm_interest)
        self._gain_rows = list(self._topic_weights * self._gain[True])  # (a list: no view taken per item)
        bound = abs(float(self._gain[True])) / (1.0 - float(self._decay)) if self._decay < 1 else math.inf
        self._replay_clamps = not bound < 0.99 * float(self._max_fatigue)
        leave = simulator.leave_model.config
        self._like_bonus, self._dislike_cost = _F32(leave.like_bonus), _F32(leave.dislike_cost)
        self._no_click_cost, self._max_patience = _F32(leave.no_click_cost), _F32(leave.max_patience)
        self._hazard = float(leave.hazard)
        leave_model = simulator.leave_model
        self._leave_draws = leave_model.draws  # one uniform per step after the choice's
        # Python lists (the float32 table's exact values): a bisect and two list indexings per step.
        self._leave_table = None if leave_model.table is None else leave_model.table.cpu().tolist()
        self._leave_edges = None if leave_model.edges is None else leave_model.edges.cpu().tolist()
        self._set_reward()
        self._initial_patience = _F32(leave.initial_patience)
        sampler = simulator.sampler
        self._offsets_log, self._items_log = sampler.offsets.numpy(), sampler.item.numpy()
        self._ratings_log = sampler.rating.numpy()
        self._eligible, self._lengths = sampler.eligible_users.numpy(), sampler.lengths.numpy()
        self._n_eligible = len(self._eligible)
        self.history_length_state = int(simulator.history_length)
        self._bound: Any = None
        self._observation: dict[str, np.ndarray] = {}
        self._clean = False
        # Choice noise (and the leave's uniform) drawn ahead in one torch call (the same uniforms, in
        # the same order, as the draws of each step; torch's Gumbel of a long tensor equals that of
        # short ones). Only when nothing else draws between resets, which reseed the generator: no drift.
        self._gumbel_ahead = self._drift == 0
        self._gumbel = np.zeros(0, dtype=np.float32)
        self._uniform = np.zeros(0, dtype=np.float32)
        self._gumbel_left = self._leave_next = 0

    def __getstate__(self) -> dict[str, Any]:
        """Without the NumPy views (a copy's views must be of the copy's tensors: taken again on use)
        and the per-simulator tables and reward functions (rebuilt from the simulator)."""
        state = {key: value for key, value in self.__dict__.items() if key not in _UNCOPIED}
        state["_bound"] = "copied"  # the generator was copied too: the noise drawn ahead stays valid
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._topics_of, self._rate = _tables(self.simulator)
        self._set_reward()

    def _set_reward(self) -> None:
        reward = REWARDS[self.env.options.reward] if self.env.options.reward is not None else self.simulator.reward_fn
        self._reward = _numpy_rewards().get(reward)
        self._reward_torch = reward if self._reward is None else None

    @classmethod
    def create(cls, env: Any) -> SingleUserStep | None:
        """The NumPy step for ``env`` (a RecommendationVectorEnv with one user), or None."""
        simulator = env.simulator
        if env.num_envs != 1 or env.device.type != "cpu" or not isinstance(simulator, ComposedSimulator):
            return None
        if _overrides(simulator, "step", ComposedSimulator) or _overrides(simulator, "_respond", ComposedSimulator):
            return None
        parts = ((simulator.interest_model, InterestModel), (simulator.leave_model, LeaveModel))
        if any(type(part) is not kind for part, kind in parts):
            return None
        choice = simulator.choice_model
        if type(choice) is ChoiceModel:  # the rating-only choice, as shipped: no state, fresh interest
            if choice.state_size or choice.warm_interest:
                return None
        elif not supports(choice):  # else only the stock learned choice on the CPU
            return None
        if any(not hasattr(simulator, name) for name in _COUNTERS):
            return None
        if simulator.item_embeddings.dtype != torch.float32:
            return None
        if simulator.n_topics * env.slate_size >= _BMM_NAIVE_LIMIT:  # torch's bmm sums in another order
            return None
        if simulator.static_shapes or _overrides(simulator, "reset", ComposedSimulator):
            return None
        if _overrides(simulator, "_session_start", ComposedSimulator) or type(simulator.sampler) is not UserSampler:
            return None
        return cls(env, simulator)

    # ------------------------------------------------------------------------------- state

    def _bind(self) -> None:
        """NumPy views of the env's current state tensors (re-taken when the env replaced them)."""
        state = self.env.user_state
        self._bound = (state, self.env._steps)
        self._clean = False
        self._user, self._prefix = state.user.numpy(), state.prefix_length.numpy()
        self._history, self._responses = state.history.numpy()[0], state.history_response.numpy()[0]
        self._consumed, self._interest = state.consumed.numpy()[0], state.interest.numpy()[0]
        self._patience, self._step = state.patience.numpy(), state.step.numpy()
        self._env_steps = self.env._steps.numpy()
        self._counts = self.simulator._counts.numpy()
        if self._learned is not None:
            self._learned.bind(state.choice_state.numpy()[0], self._consumed)

    def _check_bound(self) -> None:
        bound = self._bound
        if bound is None or bound == "copied" or bound[0] is not self.env.user_state or bound[1] is not self.env._steps:
            if bound is not None and bound != "copied":  # set from outside, with its generator state:
                self._gumbel_left = 0  # the noise drawn ahead is not what it would draw
            self._bind()

    def reset(self) -> dict[str, np.ndarray]:
        """``RecommendationVectorEnv.reset()`` of the one user: a new session, its first observation.

        The generator is reseeded from the env's ``np_random`` as there, the session drawn as
        ``UserSampler.sample`` draws it, and the state filled as ``ComposedSimulator.reset`` fills it.
        """
        env = self.env
        env._generator.manual_seed(int(env.np_random.integers(2**63 - 1)))
        self._gumbel_left = 0  # the choice noise drawn ahead belonged to the old seed
        self._check_bound()
        user, prefix = self._sample()
        start = int(self._offsets_log[user])
        h = self.history_length_state
        first = prefix - h
        events = start + np.arange(max(first, 0), prefix)
        self._history[:] = -1
        self._responses[:] = 0.0
        if len(events):
            self._history[-len(events):] = self._items_log[events]
            self._responses[-len(events):] = self._ratings_log[events]
        self._user[0], self._prefix[0] = user, prefix
        self._consumed[:] = False
        self._consumed[self._items_log[start : start + prefix]] = True
        self._interest[:] = 0.0
        learned = self._learned
        warm = self._interest if self._warm_interest else None
        # The GRU state, its normaliser and the warm-started interest depend on (user, prefix) alone:
        # from the memo when it holds them (recarena.envs.reset_memo).
        if learned is None or not learned.recall(user, prefix, warm):
            if self._warm_interest:
                self._replay(self._items_log[events])
            if learned is not None:  # the GRU reads the last `window` prefix items
                first_read = start + max(prefix - learned.tables.window, 0)
                read = slice(first_read, start + prefix)
                learned.start(self._items_log[read], self._ratings_log[read], user, prefix, warm)
        self._patience[0] = self._initial_patience
        self._step[0] = 0
        self._env_steps[0] = 0
        env._needs_reset = False
        self._clean = False
        self._observe()
        return self.observation()

    def _replay(self, items: np.ndarray) -> None:
        """``InterestModel.replay`` of the starting history ``items`` (oldest first, no padding):
        decay, add the item's gain row, clamp (only where it can bind), item by item in float32."""
        interest, decay, rows = self._interest, self._decay, self._gain_rows
        multiply, add, clamps = np.multiply, np.add, self._replay_clamps
        for item in items.tolist():
            multiply(interest, decay, interest)
            add(interest, rows[item], interest)
            if clamps:
                np.minimum(np.maximum(interest, self._min_fatigue, interest), self._max_fatigue, interest)

    def _sample(self) -> tuple[int, int]:
        """``UserSampler.sample(1, generator)``: its two torch draws, its arithmetic in NumPy."""
        sampler, generator = self.simulator.sampler, self.env._generator
        config = sampler.config
        if config.weighting == "uniform":
            pick = int(torch.randint(self._n_eligible, (1,), generator=generator)[0])
        else:
            pick = int(torch.multinomial(sampler.weights, 1, replacement=True, generator=generator)[0])
        user = int(self._eligible[pick])
        high = int(self._lengths[user]) - config.min_future
        if config.max_prefix is not None:
            high = min(high, config.max_prefix)
        low = config.min_prefix
        draw = torch.rand(1, generator=generator).numpy()[0]
        return user, low + min(int(draw * _F32(high - low + 1)), max(high - low, 0))

    # ------------------------------------------------------------------------------- observation

    def observation(self) -> dict[str, np.ndarray]:
        """The current observation (copies: the caller may keep or change them)."""
        return {key: value.copy() for key, value in self._observation.items()}

    def _observe(self) -> None:
        """The observation from the state, as ``RecommendationVectorEnv._observe`` builds it.

        :func:`recarena.envs.observation.llm_state` runs on the same torch kernels from the
        embedding bag on (its reductions' summation orders are torch's own); the elementwise parts
        before it are exact in NumPy.
        """
        h = self.history_length
        history = self._history[-h:].copy()
        responses = self._responses[-h:]
        index = history
        if not self._clean:  # else: known to hold no padding and finite responses (see step)
            finite = bool(np.isfinite(responses).all())
            if not finite:
                responses = np.nan_to_num(responses, nan=MAX_RESPONSE, posinf=MAX_RESPONSE, neginf=0.0)
            if history.min() < 0:  # padding: the where()s of the builder
                valid = history >= 0
                responses = np.where(valid, responses, _ZERO)
                index = np.maximum(history, 0)
            # Only a click changes the window: it drops padding and adds a response step() checks.
            self._clean = finite and index is history
        clamped = np.maximum(responses, _ZERO)
        observation = {"history": history, "responses": np.minimum(clamped, _MAX_RESPONSE)}
        if "llm_state" in self.keys:
            weights = np.add(clamped, _ONE, out=clamped)
            if index is not history:
                weights[~valid] = 0.0
            pooled = torch.embedding_bag(
                self._embeddings, torch.from_numpy(index), self._offsets, False, 0, False,
                torch.from_numpy(weights), False, None,
            )[0]
            norm = torch.linalg.vector_norm(pooled, 2, -1, True)
            observation["llm_state"] = pooled.div_(norm.clamp_(min=1e-12)).clamp_(-1.0, 1.0).numpy()[0]
        self._observation = {key: observation[key] for key in self.keys}

    def action_mask(self) -> np.ndarray:
        """Bool [n_items], as ``RecommendationVectorEnv.action_masks`` row 0 (a new array)."""
        self._check_bound()
        if self.mask_consumed:
            return ~self._consumed
        return np.ones(self.n_items, dtype=bool)

    # ------------------------------------------------------------------------------- step

    def check(self, slate: np.ndarray) -> None:
        """Raise as the batched path does unless ``slate`` (int64 [k]) is a valid action."""
        items = slate.tolist()
        valid = min(items) >= 0 and max(items) < self.n_items
        if valid and self.validate and self.slate_size > 1:
            valid = len(set(items)) == self.slate_size
        if not valid:
            if self.validate:
                check_slates(torch.from_numpy(slate.reshape(1, -1)), self.n_items)  # the batched path's message
            raise ValueError(f"slate items must lie in [0, {self.n_items}); got some outside")

    def step(self, slate: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """One step of ``ComposedSimulator.step`` and ``RecommendationVectorEnv.step`` for one user."""
        self._check_bound()
        k = self.slate_size
        interest = self._interest

        # 1. respond: rating (log or model) minus the boredom penalty.
        ratings, from_log, predicted = self._ratings(slate)
        fatigue = self._fatigue(slate, interest)
        if self._penalise:
            response = np.minimum(np.maximum(ratings - self._boredom * fatigue, _MIN_RATING), _MAX_RATING)
        else:
            response = ratings

        # 2. choose: Gumbel-max over the utilities and the no-choice option.
        logits = self._logits
        if self._learned is not None:
            logits[:k] = self._learned.utilities(slate, predicted, fatigue)
            logits[k] = self._learned.no_choice
        else:
            logits[:k] = response if self._temperature == 1 else response / self._temperature  # x / 1 == x
        slot = int((logits + self._choice_noise(k + 1)).argmax())
        clicked = slot < k
        if clicked:
            item, chosen = int(slate[slot]), response[slot]
            chosen_from_log = bool(from_log[slot])
        else:
            item, chosen, chosen_from_log = -1, _F32(0.0), False
        liked = clicked and bool(chosen >= self._like_threshold)

        # 3. update: history, consumed items, fatigue.
        if clicked:
            self._history[:-1] = self._history[1:]
            self._history[-1] = item
            self._responses[:-1] = self._responses[1:]
            self._responses[-1] = chosen
            self._consumed[item] = True
            if not math.isfinite(chosen):
                self._clean = False
        topics = self._topic_weights[max(item, 0)]
        new = interest * self._decay
        new += topics * self._gain[clicked]
        if self._drift > 0:
            noise = torch.randn((1, interest.shape[0]), generator=self.env._generator).numpy()[0]
            new += _F32(self._drift) * noise
        np.minimum(np.maximum(new, self._min_fatigue, out=new), self._max_fatigue, out=interest)
        if clicked and self._learned is not None:
            self._learned.advance(item, chosen)
        self._step[0] += 1

        # 4. leave.
        if self._leave_table is not None:  # sessions: the logged hazard after a chosen item
            change = _ZERO if clicked else -self._no_click_cost
        elif clicked:
            change = self._like_bonus if liked else -self._dislike_cost
        else:
            change = -self._no_click_cost
        patience = min(max(self._patience[0] + change, _ZERO), self._max_patience)
        self._patience[0] = patience
        left = bool(patience <= 0)
        if self._leave_table is not None:
            bucket = bisect.bisect_right(self._leave_edges, int(self._step[0]) - 1)
            left = left | bool(self._leave_uniform() < self._leave_table[bucket][int(clicked) + int(liked)])
        elif self._hazard > 0:
            left = left | bool(self._leave_uniform() < self._hazard)

        reward = self._reward_of(clicked, liked, chosen)
        counts = self._counts  # clicks, likes, leaves, shown from the log, chosen from the log
        if clicked:
            counts[0] += 1
            counts[1] += liked
            counts[4] += chosen_from_log
        if left:
            counts[2] += 1
        shown_from_log = np.count_nonzero(from_log)
        if shown_from_log:
            counts[3] += shown_from_log
        self.simulator._user_steps += 1
        self.simulator._shown += k

        self._env_steps[0] += 1
        truncated = not left and int(self._env_steps[0]) >= self.max_steps
        if clicked:
            self._observe()
        info = {
            "action_mask": self.action_mask(),
            "clicked": clicked,
            "liked": liked,
            "from_log": chosen_from_log,
            "item": item,
            "response": float(chosen) if math.isfinite(chosen) else _finite_response(chosen),
        }
        return self.observation(), reward, left, truncated, info

    def _fatigue(self, slate: np.ndarray, interest: np.ndarray) -> np.ndarray:
        """``InterestModel.fatigue`` of a batch of one: torch's bmm of [1, k, T] by [1, T, 1] (below
        400 multiply-adds) sums each item's products in topic order in float32, starting from 0.

        Only the item's nonzero topic weights are summed: a zero weight's product is a zero, and
        adding a zero to the running sum (never -0: it starts at +0) leaves it unchanged.
        """
        fatigue = np.empty(len(slate), dtype=np.float32)
        for j, item in enumerate(slate.tolist()):
            total = _ZERO
            for topic, weight in self._topics_of[item]:
                total = total + weight * interest[topic]
            fatigue[j] = total
        return fatigue

    def _choice_noise(self, n: int) -> np.ndarray:
        """Gumbel noise of ``ChoiceModel``'s next ``n`` uniform draws, computed by torch. Drawn ahead,
        each step's ``n`` are followed by the leave's uniform where it draws one (:meth:`_leave_uniform`)."""
        if not self._gumbel_ahead:
            return _gumbel(torch.rand((1, n), generator=self.env._generator))[0]
        m = n + self._leave_draws
        if self._gumbel_left < m:
            chunk = m * min(max(self.max_steps, 1), 64)
            uniform = torch.rand(chunk, generator=self.env._generator)
            self._uniform = uniform.numpy().copy()  # before _gumbel clamps it in place
            self._gumbel = _gumbel(uniform)
            self._gumbel_left = chunk
        start = len(self._gumbel) - self._gumbel_left
        self._gumbel_left -= m
        self._leave_next = start + n
        return self._gumbel[start : start + n]

    def _leave_uniform(self) -> np.float32:
        """The leave's uniform of this step: drawn ahead after the choice noise, or drawn now (after
        the drift's noise, as the batched step draws it)."""
        if self._gumbel_ahead:
            return self._uniform[self._leave_next]
        return torch.rand((1,), generator=self.env._generator).numpy()[0]

    def _ratings(self, slate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ratings, from_log, predicted) of the slate, as ``rate_with_prediction``."""
        if self._rate is not None:
            ratings, from_log, predicted = self._rate(int(self._user[0]), int(self._prefix[0]), slate)
            return ratings.astype(np.float32, copy=False), from_log, predicted.astype(np.float32, copy=False)
        tensor = torch.from_numpy(slate.reshape(1, -1))
        with torch.no_grad():
            ratings, from_log, predicted = self.simulator.rate_with_prediction(self.env.user_state, tensor)
        return ratings.to(torch.float32).numpy()[0], from_log.numpy()[0], predicted.to(torch.float32).numpy()[0]

    def _reward_of(self, clicked: bool, liked: bool, response: np.float32) -> float:
        if self._reward is not None:
            value = self._reward(clicked, liked, response)
        else:
            value = self._reward_torch(
                torch.tensor([clicked]), torch.tensor([liked]), torch.tensor([response], dtype=torch.float32)
            ).to(torch.float32).numpy()[0]
        value = float(value)
        return value if math.isfinite(value) else 0.0


def _gumbel(uniform: torch.Tensor) -> np.ndarray:
    """``-log(-log(u))`` as ``recarena.simulators.behaviour``'s Gumbel-max computes it, as NumPy."""
    return uniform.clamp_(min=1e-12, max=1.0 - 1e-7).log_().neg_().log_().neg_().numpy()


def _finite_response(value: np.float32) -> float:
    """What the vector env reports for a non-finite response: NaN -> MAX_RESPONSE, +-inf -> float32 max."""
    return float(np.nan_to_num(np.asarray([value], dtype=np.float32), nan=MAX_RESPONSE)[0])


def _no_choice_utility(choice: ChoiceModel) -> np.float32:
    """The no-choice utility of the rating-only choice model, computed by the model itself."""
    probe = torch.zeros(1, 1)
    if hasattr(choice, "utilities"):
        _, none = choice.utilities(torch.zeros(1, 0), None, None, probe, probe, response=probe)
        return _F32(none.reshape(-1)[0].item())
    return _F32(choice._logits(probe)[0, 1].item())
