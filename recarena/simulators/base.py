"""The batched user-simulator interface that envs, agents and evaluation code against.

A simulator is stateless apart from its fitted parameters; the state of ``B`` simulated users lives
in a :class:`UserState` of tensors ``[B, ...]`` on one device (CPU or CUDA), and one user is the
batch of one. Every random draw comes from an explicit ``torch.Generator`` passed in by the caller,
so a seed fixes a whole rollout.

One step follows RecSim's fixed order:

1. **respond** - the preference model scores each item of the slate for each user (from the log
   where the user really rated that item later, from the fitted model elsewhere), modulated by
   the user's interest state (boredom);
2. **choose** - the choice model picks at most one item of the slate (or none);
3. **update** - history, consumed-item mask and interest dynamics (fatigue, drift) advance;
4. **leave** - the leave model decides whether the user ends the session.

The reward is a configurable function of the response (see ``simulators.behaviour``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import ClassVar, Protocol

import torch


class LoggedSequences(Protocol):
    """The users' interaction sequences a simulator starts its sessions from (its training log only).

    What agents learn from besides the simulated reward (the next-item loss, item popularity):
    an env hands it to them as ``env.logged_sequences``, so no agent reaches into a simulator.
    Sequence ``u`` is ``item[offsets[u]:offsets[u + 1]]`` in time order, with ``rating`` beside it.
    """

    offsets: torch.Tensor  # int64 [n_users + 1]
    item: torch.Tensor  # int64 [n_events]
    rating: torch.Tensor  # float32 [n_events], on the rating scale
    lengths: torch.Tensor  # int64 [n_users]

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(user int64 [n], prefix length int64 [n]): where ``n`` new sessions start."""
        ...

    def history(self, user: torch.Tensor, prefix: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(items int64 [n, length], responses float32 [n, length]) of each prefix, left-padded with -1 / 0."""
        ...


@dataclass
class UserState:
    """Mutable state of ``B`` simulated users; all tensors share one device.

    ``history``/``history_response`` hold the most recent ``H`` consumed items (newest last),
    with item index -1 and response 0 as left padding. ``consumed`` marks every item the user has
    consumed (the real history prefix and this session), which agents may use as an action mask.
    ``choice_state`` is the choice model's own per-user state (the learned next-item model's GRU
    state, ``S`` = its width; ``S = 0`` for choice models without a state).
    """

    user: torch.Tensor  # int64 [B]: index of the logged user this simulated user starts from
    prefix_length: torch.Tensor  # int64 [B]: how many logged events form the starting history
    history: torch.Tensor  # int64 [B, H]
    history_response: torch.Tensor  # float32 [B, H]: rating-scale response (0 = padding)
    consumed: torch.Tensor  # bool [B, n_items]
    interest: torch.Tensor  # float32 [B, n_topics]: fatigue/boredom per topic (0 = fresh)
    patience: torch.Tensor  # float32 [B]: the user leaves when it reaches 0
    step: torch.Tensor  # int64 [B]: steps taken in the current session
    choice_state: torch.Tensor  # float32 [B, S]: the choice model's state (S = 0: none)

    @property
    def batch_size(self) -> int:
        return int(self.user.shape[0])

    @property
    def device(self) -> torch.device:
        return self.user.device

    def to(self, device: torch.device | str) -> UserState:
        return UserState(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def clone(self) -> UserState:
        return UserState(**{f.name: getattr(self, f.name).clone() for f in fields(self)})


@dataclass
class StepOutcome:
    """What ``B`` users did in one step. Tensors ``[B]`` on the state's device."""

    chosen_slot: torch.Tensor  # int64: position in the slate of the chosen item, -1 for none
    item: torch.Tensor  # int64: chosen item index, -1 for none
    response: torch.Tensor  # float32: rating-scale response to the chosen item (0 when none)
    clicked: torch.Tensor  # bool: an item was chosen
    liked: torch.Tensor  # bool: the chosen item was liked (response >= like threshold)
    from_log: torch.Tensor  # bool: the response came from the logged rating, not the model
    reward: torch.Tensor  # float32: the configured reward function of the response
    left: torch.Tensor  # bool: the user ended the session (terminated)


class Simulator(ABC):
    """Base class of batched user simulators. Subclasses register with ``simulators.register``.

    Subclasses set ``config_class`` to a dataclass of their options and implement
    :meth:`init_state`, :meth:`reset` and :meth:`step`.
    """

    config_class: ClassVar[type]
    version: ClassVar[str | None] = None
    """The generation of this simulator's defaults (e.g. ``"logged-v2"``), pinned in a run's
    ``metadata.json`` (``simulator_version``) so a later default change never alters the run; None:
    the registered name. When a default changes, set the new version and register the old defaults
    under the old version's name (as ``"logged-v1"``)."""

    n_items: int
    history_length: int
    device: torch.device
    item_embeddings: torch.Tensor  # float32 [n_items, d]: LLM encodings of the item texts

    @abstractmethod
    def init_state(self, batch_size: int) -> UserState:
        """A state for ``batch_size`` users; every row must be :meth:`reset` before stepping."""

    @abstractmethod
    def reset(self, state: UserState, mask: torch.Tensor, generator: torch.Generator) -> None:
        """Start a new session, in place, for the rows of ``state`` where ``mask`` (bool [B]) is True."""

    @abstractmethod
    def step(self, state: UserState, slate: torch.Tensor, generator: torch.Generator) -> StepOutcome:
        """Show ``slate`` (int64 [B, k], distinct valid items per row) and advance ``state`` in place."""

    @property
    def logged_sequences(self) -> LoggedSequences | None:
        """The sequences sessions start from, for agents' supervised losses; None where there are none."""
        return None

    def start_from(self, users: torch.Tensor, generator: torch.Generator) -> UserState:
        """A state of ``len(users)`` new sessions, row i starting from logged user ``users[i]``'s whole history.

        For evaluation from given (e.g. held-out) users. Simulators whose users are not indexed
        logged sequences raise ``NotImplementedError``; callers then use :meth:`reset`.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot start sessions from given users")
