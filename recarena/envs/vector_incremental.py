"""What the vector env keeps per user so that a step costs the same whatever the history length.

:class:`recarena.envs.RecommendationVectorEnv` uses :class:`IncrementalUsers` on the CPU for a
simulator whose choice model offers a ``normaliser`` (the learned choice, ``-v1`` to ``-v3``):

* **The catalogue's log-normaliser** (float32 [N, 2], ``LearnedChoice.normaliser``): a slate is
  scored from its own k logits; only the clicked rows' GRU state and normaliser are recomputed
  (``ComposedSimulator.step(..., normaliser=)``), never the whole catalogue of every user.
* **Resets from the start table** (:mod:`recarena.envs.start_table`, shared with the single env and
  cached on disk): the GRU state, normaliser and warm-started interest of a (user, prefix) are one
  row copied out instead of a GRU read of ``window`` items and an interest replay of ``H`` items.
  Where there is no table (turned off, over its size bound) the simulator computes them as before.
* **The pooled LLM state** of the observation (``observation.llm_state``: the response-weighted sum
  of the last ``H`` item encodings, L2-normalised) as a running float64 sum per user: a click adds
  the new item's weighted encoding and subtracts the one leaving the window, O(d). A reset starts
  from the sum of its starting history (float32, the old path's own ``embedding_bag``, so a
  session's first observation has the same bits as before), kept per (user, prefix) once computed
  where all of them fit :data:`POOL_CACHE_BYTES` (ML-100K's 99k starts: 152 MB at d = 384;
  ML-1M's 994k do not fit, and there a reset pools its ``H`` items: O(H d) per reset row).
* **The observation's responses** (NaN as ``MAX_RESPONSE``, padding 0, clamped to the space): the
  changed rows only (clicked, reset) are cleaned, so an observation is two copies of ``[N, H]``
  (history, responses) and no elementwise pass over them.

Everything agrees with the full computation to float32 rounding (tests compare rollouts): the
random draws are the same, so the choices are the same unless a draw is decided by less than that.
The accelerator path (static shapes, no host synchronisation) does not use this: selecting the
clicked or reset rows would synchronise there.
"""

from __future__ import annotations

from typing import Any

import torch

from recarena.envs import single_user_choice
from recarena.envs.observation import MAX_RESPONSE, clean_responses
from recarena.envs.start_table import StartTable, row_layout
from recarena.simulators.base import UserState
from recarena.simulators.composed import ComposedSimulator

POOL_CACHE_BYTES = 256 * 2**20
"""Largest per-env cache of the starts' pooled sums (float32 [starts, d], filled as starts occur;
its pages are touched only when filled); a log with more starts pools each reset afresh."""


def supported(simulator: Any, device: torch.device) -> bool:
    """Whether the vector env keeps its users incrementally: a CPU env on a composed simulator whose
    choice model has a normaliser and whose resets are not forced to static shapes."""
    if device.type != "cpu" or not isinstance(simulator, ComposedSimulator) or simulator.static_shapes:
        return False
    return callable(getattr(getattr(simulator, "choice_model", None), "normaliser", None))


class IncrementalUsers:
    """The per-user normaliser, the start-table reader and the running pooled LLM state of N users."""

    def __init__(self, simulator: Any, num_envs: int, history_length: int, embeddings: torch.Tensor, pooled: bool) -> None:
        self.simulator = simulator
        self.history_length = int(history_length)
        self.normaliser = torch.zeros(num_envs, 2, dtype=torch.float32)
        self._embeddings = embeddings.to(torch.float64)
        self._embeddings32 = embeddings.to(torch.float32)
        self.pooled = torch.zeros(num_envs, embeddings.shape[1], dtype=torch.float64) if pooled else None
        self._llm_state = torch.zeros(num_envs, embeddings.shape[1]) if pooled else None  # normalised, per row
        self._responses = torch.zeros(num_envs, self.history_length)  # the observation's, cleaned
        first_row, starts = row_layout(simulator.sampler.offsets.numpy())  # the start table's rows
        self._first_row = torch.from_numpy(first_row)
        fits = pooled and starts * embeddings.shape[1] * 4 <= POOL_CACHE_BYTES
        self._start_pools = torch.empty(starts, embeddings.shape[1]) if fits else None
        self._pooled_start = torch.zeros(starts, dtype=torch.bool) if fits else None

    @property
    def table(self) -> StartTable | None:
        """The start table of the simulator's choice model as it is now: looked up at each use, so a
        choice model replaced after the env was built gets its own table, never the old model's."""
        return _start_table(self.simulator)

    # ------------------------------------------------------------------------------- resets

    def starts(self, user: torch.Tensor, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(interest, GRU state, normaliser) of these (user, prefix) starts from the start table
        (``ComposedSimulator.reset(starts=)``); None when there is none or it is off."""
        table = self.table
        if table is None or not table.serves(self.simulator):
            return None
        table.resets += int(user.numel())
        block = torch.from_numpy(table.entry(user.numpy(), prefix.numpy()))  # a copy of the rows
        dim = table.dim
        if self.simulator.choice_model.warm_interest:
            interest = block[:, dim + 2 :]
        else:
            interest = torch.zeros(len(block), self.simulator.n_topics)
        return interest, block[:, :dim], block[:, dim : dim + 2]

    def reset(self, state: UserState, mask: torch.Tensor, generator: torch.Generator) -> None:
        """``simulator.reset`` of the rows of ``mask`` with the normaliser kept and the starts read
        from the table, then those rows' pooled state."""
        self.simulator.reset(state, mask, generator, starts=self.starts, normaliser=self.normaliser)
        rows = torch.nonzero(mask).squeeze(1)
        self._clean(state, rows)
        if self._start_pools is None or rows.numel() == 0:
            self.pool(state, rows)
            return
        start = self._first_row.index_select(0, state.user.index_select(0, rows)) + state.prefix_length.index_select(0, rows)
        missing = ~self._pooled_start.index_select(0, start)
        if bool(missing.any()):
            new_rows, new_starts = rows[missing], start[missing]
            self._start_pools.index_copy_(0, new_starts, self._pool32(state, new_rows))
            self._pooled_start.index_fill_(0, new_starts, True)
        self.pooled.index_copy_(0, rows, self._start_pools.index_select(0, start).to(torch.float64))
        self._normalise(rows)

    def rebuild(self, state: UserState) -> None:
        """Every row's normaliser and pooled state from ``state`` (after it was replaced)."""
        self.normaliser.copy_(self.simulator.choice_model.normaliser(state.choice_state, state.consumed))
        rows = torch.arange(state.batch_size)
        self._clean(state, rows)
        self.pool(state, rows)

    def _clean(self, state: UserState, rows: torch.Tensor) -> None:
        """The observation's responses of the rows ``rows`` from the state (as ``build_observation``)."""
        if rows.numel() == 0:
            return
        history = state.history[:, -self.history_length :].index_select(0, rows)
        responses = state.history_response[:, -self.history_length :].index_select(0, rows)
        self._responses.index_copy_(0, rows, clean_responses(history, responses))

    def observation(self, state: UserState, keys: tuple[str, ...], index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The observation (new tensors) of every user, or of the users ``index``, from the kept parts."""
        history = state.history[:, -self.history_length :]
        values = {"history": history, "responses": self._responses}
        if index is None:
            observation = {key: value.clone() for key, value in values.items() if key in keys}
        else:
            observation = {key: value.index_select(0, index) for key, value in values.items() if key in keys}
        if "llm_state" in keys:
            observation["llm_state"] = self.llm_state(index)
        return {key: observation[key] for key in keys}

    # ------------------------------------------------------------------------------- pooled state

    def pool(self, state: UserState, rows: torch.Tensor) -> None:
        """The pooled sum of the rows ``rows`` (int64) recomputed from their last ``H`` history items."""
        if self.pooled is None or rows.numel() == 0:
            return
        self.pooled.index_copy_(0, rows, self._pool32(state, rows).to(torch.float64))
        self._normalise(rows)

    def _pool32(self, state: UserState, rows: torch.Tensor) -> torch.Tensor:
        """Float32 [len(rows), d]: the pooled sums as ``observation.llm_state`` computes them."""
        history = state.history[:, -self.history_length :].index_select(0, rows)
        weights = _weights(history, state.history_response[:, -self.history_length :].index_select(0, rows))
        return torch.nn.functional.embedding_bag(
            history.clamp(min=0), self._embeddings32, per_sample_weights=weights.to(torch.float32), mode="sum"
        )

    def leaving(self, state: UserState) -> tuple[torch.Tensor, torch.Tensor]:
        """The item (and response) each row drops from its observation window on a click: the oldest."""
        column = -self.history_length
        return state.history[:, column].clone(), state.history_response[:, column].clone()

    def click(self, state: UserState, leaving: tuple[torch.Tensor, torch.Tensor], item: torch.Tensor,
              response: torch.Tensor, clicked: torch.Tensor) -> None:
        """The kept parts after a step, where the state (history, responses) already has the click: the
        clicked rows' pooled sums add ``item`` and drop their ``leaving`` item; their responses cleaned."""
        rows = torch.nonzero(clicked).squeeze(1)
        if rows.numel() == 0:
            return
        self._clean(state, rows)
        if self.pooled is None:
            return
        old, old_response = (t.index_select(0, rows) for t in leaving)
        new, new_response = item.index_select(0, rows), response.index_select(0, rows)
        change = self._embeddings.index_select(0, new) * _weights(new, new_response).unsqueeze(1)
        change -= self._embeddings.index_select(0, old.clamp(min=0)) * _weights(old, old_response).unsqueeze(1)
        self.pooled.index_add_(0, rows, change)
        self._normalise(rows)

    def _normalise(self, rows: torch.Tensor) -> None:
        """``observation.llm_state`` of the rows ``rows`` from their pooled sums (the others keep theirs)."""
        pooled = self.pooled.index_select(0, rows)
        norm = pooled.norm(dim=-1, keepdim=True)
        self._llm_state.index_copy_(0, rows, (pooled / norm.clamp(min=1e-12)).clamp_(-1.0, 1.0).to(torch.float32))

    def llm_state(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 [N, d] (or the rows ``index``), a new tensor: ``observation.llm_state``."""
        return self._llm_state.clone() if index is None else self._llm_state.index_select(0, index)


def _weights(items: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Float64 weights of ``observation.llm_state``: response (NaN -> MAX_RESPONSE, >= 0) + 1; padding 0."""
    responses = torch.nan_to_num(responses, nan=MAX_RESPONSE, posinf=MAX_RESPONSE, neginf=0.0).to(torch.float64)
    return torch.where(items >= 0, responses.clamp(min=0.0) + 1.0, torch.zeros_like(responses))


def _start_table(simulator: Any) -> StartTable | None:
    """The simulator's start table (built once and cached on disk, shared with the single env: it
    belongs to the single env's NumPy choice tables), or None where those tables do not reproduce
    its choice model or the table is over its size bound."""
    if not single_user_choice.supports(simulator.choice_model):
        return None
    return single_user_choice._tables(simulator).starts
