"""A simulator composed of the behaviour parts, in RecSim's fixed step order.

Subclasses supply the item catalogue, the logged (or generated) sequences users start from, the
item topics, and :meth:`ComposedSimulator.rate` - the preference rating of each slate item (and
whether it came from the log). Everything else - sampling users, building their starting history,
respond -> choose -> update -> leave, the reward, and running statistics - lives here, as pure
tensor operations over the batch (no Python loop over users), so it runs unchanged on CUDA.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from recarena.core.errors import ConfigError
from recarena.simulators.answers import LEVELS
from recarena.simulators.base import Simulator, StepOutcome, UserState
from recarena.simulators.behaviour import (
    FIRST_POSITION_TABLE_LIMIT,
    LIKE_THRESHOLD,
    BehaviourConfig,
    ChoiceModel,
    InterestModel,
    LeaveModel,
    UserSampler,
    choose_from_logits,
    is_liked,
    respond,
    reward_function,
)
from recarena.simulators.sessions import SessionHazard

SessionStarts = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None"]
"""``starts(user, prefix)`` -> (interest [n, T], choice state [n, S], normaliser [n, 2]) of sessions
starting at these (user, prefix length) pairs, read from a precomputed table instead of replaying
the history; None where it cannot serve them (the simulator then computes them)."""

_STATISTICS = ("clicks", "likes", "leaves", "shown_from_log", "chosen_from_log")
"""Counts that depend on the users' responses, summed on the device (no synchronisation per step);
the step and slate sizes are known on the host and counted there."""


class ComposedSimulator(Simulator):
    """Batched users built from behaviour components; subclasses implement :meth:`rate`.

    **Host synchronisation.** On an accelerator (a state whose device is not the CPU) :meth:`step`
    and :meth:`reset` run with static shapes and never synchronise with the host: :meth:`reset`
    draws a new session for *every* row and merges the rows of ``mask`` in with ``torch.where``,
    and :meth:`step` skips the data-dependent part of its slate range check (see
    :meth:`_check_slate`). On the CPU, where a synchronisation is free, :meth:`reset` draws only for
    the rows of ``mask`` and :meth:`step` checks the range. ``static_shapes`` (``None``: decide by
    device) forces either way, e.g. ``True`` to test the accelerator path on the CPU. The static
    reset needs the sampler's first-position table; a catalogue for which it would exceed
    ``FIRST_POSITION_TABLE_LIMIT`` resets the CPU way (synchronising) on any device, with a warning.
    """

    name: str = ""  # set by ``simulators.register``
    static_shapes: bool | None = None

    def __init__(
        self,
        config: BehaviourConfig,
        *,
        sampler: UserSampler,
        item_topics: torch.Tensor,
        item_embeddings: torch.Tensor,
        device: torch.device | str = "cpu",
        session_hazard: SessionHazard | None = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.n_items = int(item_embeddings.shape[0])
        if item_topics.shape[0] != self.n_items:
            raise ConfigError(f"item_topics has {item_topics.shape[0]} rows, expected n_items={self.n_items}")
        self.history_length = config.history_length
        self.item_embeddings = item_embeddings.to(device=self.device, dtype=torch.float32)
        self.sampler = sampler
        self.interest_model = InterestModel(config.interest, item_topics.to(self.device))
        self.choice_model = ChoiceModel(config.choice)
        self.leave_model = LeaveModel(config.leave, session_hazard, self.device)
        self.reward_fn = reward_function(config.reward)
        self._counts = torch.zeros(len(_STATISTICS), dtype=torch.int64, device=self.device)
        self._user_steps = self._shown = 0
        self._warned_static_fallback = False

    # ------------------------------------------------------------------ what subclasses provide

    @abstractmethod
    def rate(self, state: UserState, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preference ratings float [B, k] (1-5) of the slate, and bool [B, k] "answered by the log"."""

    def rate_with_prediction(self, state: UserState, slate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ratings, from_log, predicted): :meth:`rate` plus the model's own prediction [B, k] of each
        item (what the user expects before consuming it; the learned choice uses it). By default the
        rating itself."""
        ratings, from_log = self.rate(state, slate)
        return ratings, from_log, ratings

    penalise_response = True
    """Whether boredom lowers the response (off for implicit-feedback users, whose response is the click)."""
    response_penalty: float | None = None
    """Rating points lost per unit of fatigue in the response; None: ``interest.boredom_penalty``."""
    like_threshold: float = LIKE_THRESHOLD
    """A chosen item is liked when its response reaches this (4; 3.5 = "rounds to 4 or more")."""

    def answer_distribution(
        self, state: UserState, items: torch.Tensor, predicted: torch.Tensor
    ) -> torch.Tensor | None:
        """Float64 [B, m, 5]: the probability of each answer 1..5 of the items a policy cannot know
        in advance, given their ``predicted`` ratings (:meth:`rate_with_prediction`'s; the caller
        ignores the rows of items the log answers); None where every answer is what :meth:`rate`
        returns (the default). :meth:`expected_reward` averages over it."""
        return None

    # ------------------------------------------------------------------ the Simulator interface

    @property
    def item_topics(self) -> torch.Tensor:
        """Float [n_items, n_topics]: the topics fatigue is tracked over."""
        return self.interest_model.item_topics

    @property
    def n_topics(self) -> int:
        return self.interest_model.n_topics

    def init_state(self, batch_size: int) -> UserState:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        b, h, d = batch_size, self.history_length, self.device
        return UserState(
            user=torch.zeros(b, dtype=torch.int64, device=d),
            prefix_length=torch.zeros(b, dtype=torch.int64, device=d),
            history=torch.full((b, h), -1, dtype=torch.int64, device=d),
            history_response=torch.zeros((b, h), dtype=torch.float32, device=d),
            consumed=torch.zeros((b, self.n_items), dtype=torch.bool, device=d),
            interest=torch.zeros((b, self.n_topics), dtype=torch.float32, device=d),
            patience=torch.zeros(b, dtype=torch.float32, device=d),
            step=torch.zeros(b, dtype=torch.int64, device=d),
            choice_state=torch.zeros((b, self.choice_model.state_size), dtype=torch.float32, device=d),
        )

    def reset(
        self,
        state: UserState,
        mask: torch.Tensor,
        generator: torch.Generator,
        *,
        static_shapes: bool | None = None,
        starts: SessionStarts | None = None,
        normaliser: torch.Tensor | None = None,
    ) -> None:
        """Start new sessions for the rows of ``mask``; see the class docstring for the two paths.

        ``normaliser`` (float32 [B, 2], a choice model with ``normaliser``): the caller's per-user
        log-normaliser, whose rows of ``mask`` are set to the new sessions' (see :meth:`step`).
        ``starts``: where the session starts (interest, choice state, normaliser) come from on the
        synchronising path, instead of replaying each history (the static path ignores it).

        ``static_shapes`` overrides :attr:`static_shapes` (``None``: that, else ``True`` exactly when
        the state is not on the CPU). The static path draws ``B`` (user, prefix) pairs, so after a
        partial reset its random stream differs from the CPU path's, which draws one per reset row.
        It needs the sampler's first-position table; when that would exceed
        ``FIRST_POSITION_TABLE_LIMIT`` bytes the synchronising path is used (with a warning, once).
        """
        if mask.shape != (state.batch_size,) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool [{state.batch_size}], got {mask.dtype} {tuple(mask.shape)}")
        mask = mask.to(state.device)
        if static_shapes is None:
            static_shapes = self.static_shapes
        if static_shapes is None:
            static_shapes = state.device.type != "cpu"
        if static_shapes and self._static_reset_possible():
            self._reset_static(state, mask, generator)
            if normaliser is not None:
                fresh = self.choice_model.normaliser(state.choice_state, state.consumed)
                normaliser.copy_(torch.where(mask.unsqueeze(1), fresh, normaliser))
            return
        rows = torch.nonzero(mask).squeeze(1)
        n = rows.numel()
        if n == 0:
            return
        user, prefix = self.sampler.sample(n, generator)
        history, responses = self.sampler.history(user, prefix, self.history_length)
        state.user.index_copy_(0, rows, user)
        state.prefix_length.index_copy_(0, rows, prefix)
        state.history.index_copy_(0, rows, history)
        state.history_response.index_copy_(0, rows, responses)
        pair_row, pair_item = self.sampler.consumed_pairs(user, prefix)
        state.consumed.index_fill_(0, rows, False)
        state.consumed.view(-1).index_fill_(0, rows.index_select(0, pair_row) * self.n_items + pair_item, True)
        started = None if starts is None else starts(user, prefix)
        if started is None:
            interest, choice_state = self._session_start(user, prefix, history)
            if normaliser is not None:
                fresh = self.choice_model.normaliser(choice_state, state.consumed.index_select(0, rows))
        else:
            interest, choice_state, fresh = started
        state.interest.index_copy_(0, rows, interest)
        state.choice_state.index_copy_(0, rows, choice_state)
        if normaliser is not None:
            normaliser.index_copy_(0, rows, fresh.to(normaliser.dtype))
        state.patience.index_copy_(0, rows, self.leave_model.initial(n, state.device))
        state.step.index_fill_(0, rows, 0)

    def _session_start(
        self, user: torch.Tensor, prefix: torch.Tensor, history: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(interest [n, T], choice state [n, S]) of sessions starting from these prefixes: fresh
        interest, or, for a choice model with ``warm_interest``, the fatigue of replaying the state's
        history; the choice model's state read from the last ``window`` prefix items."""
        n = user.shape[0]
        if self.choice_model.warm_interest:
            interest = self.interest_model.replay(history)
        else:
            interest = torch.zeros(n, self.n_topics, device=user.device)
        if self.choice_model.state_size == 0:
            return interest, torch.zeros(n, 0, device=user.device)
        items, responses = self.sampler.history(user, prefix, self.choice_model.window)
        return interest, self.choice_model.initial_state(items, responses).to(torch.float32)

    @property
    def logged_sequences(self) -> UserSampler:
        """The sampler's sequences: the training log (logged users) or the generated histories (synthetic)."""
        return self.sampler

    def start_from(
        self, users: torch.Tensor, generator: torch.Generator, prefix: torch.Tensor | None = None
    ) -> UserState:
        """New sessions for ``users`` (int64 [B], indices into the sampler's sequences), each starting
        from that user's whole sequence (or its first ``prefix[i]`` events): history, responses and
        consumed items of every logged event.

        Patience and step start as after :meth:`reset` (which is run first, so the generator
        advances exactly as a reset of ``B`` rows would); interest and the choice state as a
        session starting from that history does.
        """
        users = torch.as_tensor(users, dtype=torch.int64)
        if users.ndim != 1 or users.numel() == 0:
            raise ValueError(f"users must be a non-empty int64 [B] tensor, got shape {tuple(users.shape)}")
        state = self.init_state(users.numel())
        self.reset(state, torch.ones(state.batch_size, dtype=torch.bool, device=state.device), generator)
        users = users.to(state.device)
        if prefix is None:
            prefix = self.sampler.lengths[users]
        else:
            prefix = torch.minimum(torch.as_tensor(prefix, dtype=torch.int64, device=state.device), self.sampler.lengths[users])
        history, responses = self.sampler.history(users, prefix, self.history_length)
        state.user.copy_(users)
        state.prefix_length.copy_(prefix)
        state.history.copy_(history)
        state.history_response.copy_(responses)
        row, item = self.sampler.consumed_pairs(users, prefix)
        state.consumed.zero_()
        state.consumed[row, item] = True
        interest, choice_state = self._session_start(users, prefix, history)
        state.interest.copy_(interest)
        state.choice_state.copy_(choice_state)
        return state

    def state_from_history(
        self,
        users: torch.Tensor,
        history: torch.Tensor,
        responses: torch.Tensor,
        consumed: torch.Tensor | None = None,
    ) -> UserState:
        """A state of users whose history is given (e.g. an evaluation query's real history, which may
        hold events the simulator's log does not): ``history``/``responses`` [B, L] (newest last, -1 /
        0 padding; the choice model reads its last ``window`` items, the state keeps the last ``H``),
        ``consumed`` bool [B, n_items] (default: the history's items). Nothing of the user's logged
        future answers for them (``prefix_length`` = the whole logged sequence); patience is initial."""
        users = torch.as_tensor(users, dtype=torch.int64, device=self.device)
        history = history.to(self.device, torch.int64)
        responses = responses.to(self.device, torch.float32)
        state = self.init_state(users.numel())
        state.user.copy_(users)
        state.prefix_length.copy_(self.sampler.lengths[users])
        width = min(self.history_length, history.shape[1])
        state.history[:, -width:] = history[:, -width:]
        state.history_response[:, -width:] = responses[:, -width:]
        if consumed is None:
            rows = torch.arange(users.numel(), device=self.device).unsqueeze(1).expand_as(history)
            valid = history >= 0
            state.consumed[rows[valid], history[valid]] = True
        else:
            state.consumed.copy_(consumed.to(self.device))
        if self.choice_model.warm_interest:
            state.interest.copy_(self.interest_model.replay(state.history))
        if self.choice_model.state_size:
            window = self.choice_model.window
            state.choice_state.copy_(self.choice_model.initial_state(history[:, -window:], responses[:, -window:]))
        state.patience.copy_(self.leave_model.initial(users.numel(), self.device))
        return state

    def _reset_static(self, state: UserState, mask: torch.Tensor, generator: torch.Generator) -> None:
        """:meth:`reset` with static shapes: new sessions for all rows, merged in where ``mask``."""
        b = state.batch_size
        user, prefix = self.sampler.sample(b, generator)
        history, responses = self.sampler.history(user, prefix, self.history_length)
        consumed = self.sampler.consumed(user, prefix)
        rows = mask.unsqueeze(1)
        state.user.copy_(torch.where(mask, user, state.user))
        state.prefix_length.copy_(torch.where(mask, prefix, state.prefix_length))
        state.history.copy_(torch.where(rows, history, state.history))
        state.history_response.copy_(torch.where(rows, responses, state.history_response))
        state.consumed.copy_(torch.where(rows, consumed, state.consumed))
        interest, choice_state = self._session_start(user, prefix, history)
        state.interest.copy_(torch.where(rows, interest, state.interest))
        state.choice_state.copy_(torch.where(rows, choice_state, state.choice_state))
        state.patience.copy_(torch.where(mask, self.leave_model.initial(b, state.device), state.patience))
        state.step.masked_fill_(mask, 0)

    def _static_reset_possible(self) -> bool:
        """Whether the sampler's first-position table fits ``FIRST_POSITION_TABLE_LIMIT`` (warns once if not)."""
        size = self.sampler.first_positions_bytes()
        if size <= FIRST_POSITION_TABLE_LIMIT:
            return True
        if not self._warned_static_fallback:
            self._warned_static_fallback = True
            warnings.warn(
                f"{type(self).__name__}: the first-position table for static-shape resets would take "
                f"{size / 2**30:.1f} GiB (limit FIRST_POSITION_TABLE_LIMIT = "
                f"{FIRST_POSITION_TABLE_LIMIT / 2**30:.1f} GiB); resets use the synchronising path",
                RuntimeWarning,
                stacklevel=3,
            )
        return False

    def step(
        self, state: UserState, slate: torch.Tensor, generator: torch.Generator, *, normaliser: torch.Tensor | None = None
    ) -> StepOutcome:
        """One step of every user (respond -> choose -> update -> leave).

        ``normaliser`` (float32 [B, 2], for a choice model with ``normaliser``, e.g. the learned
        choice; CPU only: it selects the clicked rows, which synchronises): the per-user
        log-normaliser of the catalogue, kept by the caller from :meth:`reset` on. The slate is then
        scored from its own k logits, and only the clicked rows' choice state and normaliser are
        recomputed (the others cannot have changed): the step costs no catalogue-wide product. The
        choices agree with the full computation to float32 rounding; every random draw is the same.
        """
        slate = self._check_slate(state, slate)
        scoring = {} if normaliser is None else {"normaliser": normaliser}

        # 1. respond: preference rating (log or model) minus the boredom penalty.
        ratings, from_log, predicted = self.rate_with_prediction(state, slate)
        fatigue = self.interest_model.fatigue(state.interest, slate)
        response = self._respond(ratings, fatigue)

        # 2. choose: at most one item of the slate.
        utility, none = self.choice_model.utilities(
            state.choice_state, state.consumed, slate, predicted.to(torch.float32), fatigue, response=response,
            **scoring,
        )
        slot = choose_from_logits(torch.cat([utility, none], dim=1), generator)
        clicked = slot >= 0
        safe_slot = slot.clamp(min=0).unsqueeze(1)
        item = torch.where(clicked, slate.gather(1, safe_slot).squeeze(1), torch.full_like(slot, -1))
        chosen_response = torch.where(clicked, response.gather(1, safe_slot).squeeze(1), torch.zeros_like(response[:, 0]))
        chosen_from_log = clicked & from_log.gather(1, safe_slot).squeeze(1)
        liked = is_liked(chosen_response, clicked, self.like_threshold)

        # 3. update: history, consumed mask, interest dynamics.
        grow = clicked.unsqueeze(1)
        rows = torch.nonzero(clicked).squeeze(1) if normaliser is not None else None  # (CPU) the clicked rows, once
        if rows is not None:  # only the clicked rows' histories move: no [B, H] pass
            self._shift_clicked(state, item, chosen_response, rows)
        else:
            state.history.copy_(torch.where(grow, torch.cat([state.history[:, 1:], item.unsqueeze(1)], 1), state.history))
            state.history_response.copy_(
                torch.where(grow, torch.cat([state.history_response[:, 1:], chosen_response.unsqueeze(1)], 1),
                            state.history_response)
            )
        safe_item = item.clamp(min=0).unsqueeze(1)
        state.consumed.scatter_(1, safe_item, state.consumed.gather(1, safe_item) | grow)
        state.interest.copy_(self.interest_model.update(state.interest, item, clicked, generator))
        if rows is not None:
            self._advance_clicked(state, item, chosen_response, rows, normaliser)
        elif self.choice_model.state_size:
            state.choice_state.copy_(self.choice_model.advance(state.choice_state, item, chosen_response, clicked))
        state.step += 1

        # 4. leave.
        patience, left = self.leave_model.update(state.patience, clicked, liked, generator, position=state.step - 1)
        state.patience.copy_(patience)

        reward = self.reward_fn(clicked, liked, chosen_response).to(torch.float32)
        self._counts += torch.stack(
            [clicked.sum(), liked.sum(), left.sum(), from_log.sum(), chosen_from_log.sum()]
        )
        self._user_steps += state.batch_size
        self._shown += from_log.numel()
        return StepOutcome(
            chosen_slot=slot,
            item=item,
            response=chosen_response,
            clicked=clicked,
            liked=liked,
            from_log=chosen_from_log,
            reward=reward,
            left=left,
        )

    @staticmethod
    def _shift_clicked(state: UserState, item: torch.Tensor, response: torch.Tensor, rows: torch.Tensor) -> None:
        """The clicked ``rows``' histories shifted left by one, the chosen item and response appended."""
        if rows.numel() == 0:
            return
        for values, new in ((state.history, item), (state.history_response, response)):
            moved = torch.cat([values.index_select(0, rows)[:, 1:], new.index_select(0, rows).unsqueeze(1)], 1)
            values.index_copy_(0, rows, moved)

    def _advance_clicked(
        self, state: UserState, item: torch.Tensor, response: torch.Tensor, rows: torch.Tensor, normaliser: torch.Tensor
    ) -> None:
        """The choice state and normaliser of the clicked ``rows`` only."""
        if rows.numel() == 0:
            return
        choice_state = self.choice_model.advance(
            state.choice_state.index_select(0, rows), item.index_select(0, rows), response.index_select(0, rows),
            torch.ones_like(rows, dtype=torch.bool),
        )
        state.choice_state.index_copy_(0, rows, choice_state)
        normaliser.index_copy_(0, rows, self.choice_model.normaliser(choice_state, state.consumed.index_select(0, rows)))

    def _respond(self, ratings: torch.Tensor, fatigue: torch.Tensor) -> torch.Tensor:
        ratings = ratings.to(torch.float32)
        if not self.penalise_response:
            return ratings
        penalty = self.interest_model.config.boredom_penalty if self.response_penalty is None else self.response_penalty
        return respond(ratings, penalty * fatigue)

    @torch.no_grad()
    def choice_probabilities(self, state: UserState, slate: torch.Tensor) -> torch.Tensor:
        """Float [B, k + 1]: the probability of choosing each slate item now (last column: nothing),
        as :meth:`step` would draw it. Does not change ``state``."""
        slate = self._check_slate(state, slate)
        ratings, _, predicted = self.rate_with_prediction(state, slate)
        fatigue = self.interest_model.fatigue(state.interest, slate)
        response = self._respond(ratings, fatigue)
        utility, none = self.choice_model.utilities(
            state.choice_state, state.consumed, slate, predicted.to(torch.float32), fatigue, response=response
        )
        return torch.softmax(torch.cat([utility, none], dim=1), dim=1)

    @torch.no_grad()
    def expected_reward(self, state: UserState, items: torch.Tensor, reward: str | None = None) -> torch.Tensor:
        """Float [B, m]: each item's expected reward if shown alone now (click probability against
        the no-choice option, times the reward of its response): the one-step value a greedy policy
        on this simulator maximises. ``reward``: a reward name instead of the simulator's own
        (``"click"``: the click probability). Does not change ``state``.

        Where the simulator draws hidden answers (:meth:`answer_distribution`), the value is the
        exact expectation over the answer's distribution, never the draw itself."""
        items = items.to(self.device, torch.int64)
        ratings, from_log, predicted = self.rate_with_prediction(state, items)
        fatigue = self.interest_model.fatigue(state.interest, items)
        function = self.reward_fn if reward is None else reward_function(reward)
        mass = self.answer_distribution(state, items, predicted)
        if mass is None:
            return self._item_value(state, items, ratings, predicted, fatigue, function)
        levels = len(LEVELS)
        hidden = ~from_log.unsqueeze(2)
        level = torch.tensor(LEVELS, dtype=torch.float32, device=self.device)
        candidates = torch.where(hidden, level, ratings.unsqueeze(2).to(torch.float32))  # [B, m, 5]
        known = torch.zeros(levels, dtype=mass.dtype, device=self.device)
        known[0] = 1.0
        weight = torch.where(hidden, mass.to(self.device), known)
        value = self._item_value(
            state,
            items.repeat_interleave(levels, dim=1),
            candidates.flatten(1),
            predicted.repeat_interleave(levels, dim=1),
            fatigue.repeat_interleave(levels, dim=1),
            function,
        )
        return (weight * value.view(weight.shape).to(weight.dtype)).sum(2).to(torch.float32)

    def _item_value(
        self, state: UserState, items: torch.Tensor, ratings: torch.Tensor, predicted: torch.Tensor,
        fatigue: torch.Tensor, function: Any,
    ) -> torch.Tensor:
        """Float [B, m]: click probability of each item shown alone times the reward of its response."""
        response = self._respond(ratings, fatigue)
        utility, none = self.choice_model.utilities(
            state.choice_state, state.consumed, items, predicted.to(torch.float32), fatigue, response=response
        )
        click = torch.sigmoid(utility - none)
        clicked = torch.ones_like(items, dtype=torch.bool)
        return click * function(clicked, is_liked(response, clicked, self.like_threshold), response).to(torch.float32)

    # ------------------------------------------------------------------ diagnostics

    def statistics(self) -> dict[str, Any]:
        """Running counts since construction (or :meth:`reset_statistics`) and the logged share.

        ``logged_share`` is the share of shown slate items whose response came from the log;
        ``chosen_logged_share`` the same among chosen items.
        """
        counts = dict(zip(_STATISTICS, (int(v) for v in self._counts.tolist()), strict=True))
        counts.update(user_steps=self._user_steps, shown=self._shown)
        counts["shown_from_model"] = counts["shown"] - counts["shown_from_log"]
        counts["chosen_from_model"] = counts["clicks"] - counts["chosen_from_log"]
        counts["logged_share"] = counts["shown_from_log"] / counts["shown"] if counts["shown"] else 0.0
        counts["chosen_logged_share"] = counts["chosen_from_log"] / counts["clicks"] if counts["clicks"] else 0.0
        counts["click_rate"] = counts["clicks"] / counts["user_steps"] if counts["user_steps"] else 0.0
        counts["like_rate"] = counts["likes"] / counts["user_steps"] if counts["user_steps"] else 0.0
        return counts

    def reset_statistics(self) -> None:
        self._counts.zero_()
        self._user_steps = self._shown = 0

    def _check_slate(self, state: UserState, slate: torch.Tensor) -> torch.Tensor:
        """``slate`` as int64 [B, k] on the state's device; raises ``ValueError`` on a wrong shape or dtype.

        The item range is checked only on the CPU, where reading the result back is free. On an
        accelerator that check would be a host synchronisation per step, so it is skipped: the
        callers validate actions themselves (the envs' ``validate_actions``, one synchronisation,
        on by default), and an out-of-range item that gets through still fails loudly, never
        silently - the boredom penalty's ``index_select`` into the item-topic table raises a
        device-side index assertion for any index outside [0, n_items).
        """
        if slate.dim() == 1:
            slate = slate.unsqueeze(1)
        if slate.dim() != 2 or slate.shape[0] != state.batch_size or slate.shape[1] < 1:
            raise ValueError(f"slate must be int64 [B={state.batch_size}, k>=1], got shape {tuple(slate.shape)}")
        if slate.dtype.is_floating_point or slate.dtype == torch.bool:
            raise ValueError(f"slate must hold integer item indices, got {slate.dtype}")
        slate = slate.to(device=state.device, dtype=torch.int64)
        if slate.device.type == "cpu" and bool(((slate < 0) | (slate >= self.n_items)).any()):
            raise ValueError(f"slate items must lie in [0, {self.n_items}); got some outside")
        return slate
