"""The learned slate choice of one user in NumPy: the next-item GRU state and the slate's utilities.

:class:`recarena.envs.single_user.SingleUserStep` uses :class:`NumpyLearnedChoice` for a simulator whose
choice model is :class:`recarena.simulators.choice.LearnedChoice` over a
:class:`recarena.simulators.sequence.NextItemGRU`. It computes what the batched path computes:

* the GRU state read from the last ``window`` prefix items at reset (``NextItemGRU.encode``) and
  advanced by the chosen item and its response on a click (``NextItemGRU.advance``), written into
  the vector env's ``UserState.choice_state``;
* ``log P(next = i | state)`` of the slate items only: the catalogue's logits and their
  log-normaliser over the not-consumed items are recomputed when the state changes (a click or a
  reset), never on the other steps;
* the utilities ``w_choice * log_p + w_boredom * fatigue (+ w_rating * (predicted - 3))``, -inf for
  a consumed item where the model excludes them, and the no-choice utility ``w_no_choice``.

**Not bit for bit.** The GRU's matrix products and gates (torch's sgemm, sigmoid and tanh kernels) and
the catalogue's logits cannot be reproduced bit for bit in NumPy: here the input side of the GRU is a
per-item table ``v_i W_ih^T + b`` computed once (the response features' part added elementwise, so
a row's bits do not depend on how many rows are computed), the logits are ``h (A V^T) + b`` with
``A V^T`` computed once, both tables in float64 and rounded to float32. The GRU state and ``log_p`` therefore agree with the
batched path's to float32 tolerance (about 1e-6), not exactly; every random draw is the same (the
choice draws ``k + 1`` uniforms whatever the utilities), so a rollout makes the same choices unless
a Gumbel-max is decided by less than that tolerance (tests compare rollouts over many steps).
Everything else of the step (ratings, boredom, response, leave, observation) stays bit-identical.

**Reset memo** (:mod:`recarena.envs.reset_memo`). The reset's GRU state, its log-normaliser and the
warm-started interest depend on the (user, prefix length) of the session alone (the models are
frozen), and the read costs about 30 GRU steps on ML-100K. Each simulator's tables keep them in a
:class:`~recarena.envs.reset_memo.ResetMemo` (:func:`reset_memo`): a reset at a (user, prefix) seen
before copies them out instead of recomputing them (figures: docs/benchmarks.md), and a read from
the user's first item continues from the longest such prefix kept.
*Cost*: at most ``MEMO_BYTES`` (64 MiB) per simulator, counted generously and cleared when full;
ML-100K's 93,399 starts fit. *Safe*: the memo holds copies of exactly what the code computes (the
inputs of each GRU step computed row by row, so a continued read has the same bits), hits are copied
out, so rollouts are bit-identical with and without it (tested); it belongs to the tables, which are
rebuilt with an empty memo whenever the simulator's choice model or its weights object is replaced.

**Start table** (:mod:`recarena.envs.start_table`). Ahead of the memo: the same results for *every*
(user, prefix) of the sampler's log, computed batched once per simulator (torch's GRU kernels: equal
to the NumPy read within the state tolerance above, not bit for bit) and cached on disk; a reset
copies its row, and the catalogue's logits wait for the session's first click (until then
:meth:`NumpyLearnedChoice.utilities` scores the slate's items alone, from the row's normaliser). The
memo serves the resets only where the table is off (``start_table(simulator).enabled = False``) or
over its size bound.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from recarena.data.interactions import LIKE_THRESHOLD, MAX_RATING
from recarena.envs.reset_memo import ResetMemo
from recarena.envs.start_table import StartTable
from recarena.envs.start_table import start_table as build_start_table
from recarena.simulators.choice import LearnedChoice
from recarena.simulators.sequence import NextItemGRU

_F32 = np.float32
_THREE, _TWO, _LIKE = _F32(3.0), _F32(2.0), _F32(LIKE_THRESHOLD)
_ZERO, _NEG_INF = _F32(0.0), _F32(-np.inf)


class _Tables:
    """Per-simulator constants of a frozen next-item model (shared by every env built on it)."""

    def __init__(self, choice: LearnedChoice) -> None:
        network = choice.model.network
        dim = network.dim
        vectors, bias = (t.detach().to(torch.float64) for t in choice.table())
        gru = network.gru
        w_ih, w_hh = gru.weight_ih_l0.detach().to(torch.float64), gru.weight_hh_l0.detach().to(torch.float64)
        b_ih, b_hh = gru.bias_ih_l0.detach().to(torch.float64), gru.bias_hh_l0.detach().to(torch.float64)
        # Input side of each item: v_i W_ih^T + b_ih, plus the hidden biases of the r and z gates.
        folded = b_ih.clone()
        folded[: 2 * dim] += b_hh[: 2 * dim]
        self.item_gates = _f32(vectors @ w_ih[:, :dim].T + folded)  # [n_items, 3 dim]
        # The response features' columns [2, 3 dim] (None: the model reads no responses).
        self.response_gates = _f32(w_ih[:, dim : dim + 2].T) if network.config.use_responses else None
        # The reset's results by (user, prefix): valid as long as these tables (reset_memo module).
        self.memo = ResetMemo(dim)
        self.starts: StartTable | None = None  # every (user, prefix)'s results (start_table module)
        # Hidden side: [h, 1] @ [W_hh^T; (0, 0, b_hn)], so the new gate's bias is multiplied by r.
        hidden = torch.zeros(dim + 1, 3 * dim, dtype=torch.float64)
        hidden[:dim] = w_hh.T
        hidden[dim, 2 * dim :] = b_hh[2 * dim :]
        self.hidden_gates = _f32(hidden)
        output = network.output.detach().to(torch.float64)
        self.scores = _f32(output @ vectors.T)  # [dim, n_items]: logits = h @ scores + bias
        self.item_scores = np.ascontiguousarray(self.scores.T)  # [n_items, dim]: one item's logit = row . h
        self.bias = _f32(bias)
        self.dim, self.window = dim, int(choice.window)
        self.choice = choice
        weights = self.weights = choice.weights
        self.w_choice, self.w_boredom = _F32(weights.choice), _F32(weights.boredom)
        self.w_rating = _F32(weights.rating) if choice.use_rating else None
        self.no_choice = _F32(weights.no_choice)
        self.exclude_consumed = bool(choice.model.exclude_consumed)

    def current(self, choice: LearnedChoice) -> bool:
        """Whether these are the tables of ``choice`` as it is now (the same model and weights objects)."""
        return self.choice is choice and self.weights is choice.weights


def _f32(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.to(torch.float32).numpy())


_TABLES: weakref.WeakKeyDictionary[Any, _Tables] = weakref.WeakKeyDictionary()


def supports(choice: Any) -> bool:
    """Whether :class:`NumpyLearnedChoice` reproduces ``choice`` (the stock learned choice, on the CPU)."""
    if type(choice) is not LearnedChoice or type(choice.model.network) is not NextItemGRU:
        return False
    network = choice.model.network
    return network.device.type == "cpu" and network.gru.weight_hh_l0.dtype == torch.float32


def _tables(simulator: Any) -> _Tables:
    """The tables of the simulator's current choice model, built once (rebuilt, with a new empty reset
    memo, when the model or its weights object was replaced - the start table is kept when only the
    weights were; the model itself is frozen, as for ``LearnedChoice.table``)."""
    old = _TABLES.get(simulator)
    if old is not None and old.current(simulator.choice_model):
        return old
    tables = _TABLES[simulator] = _Tables(simulator.choice_model)
    if old is not None and old.choice is tables.choice and old.starts is not None:
        tables.starts = old.starts  # new utility weights alone: the rows do not depend on them
    else:
        tables.starts = build_start_table(simulator, tables)  # from the disk cache after the first time
    return tables


def start_table(simulator: Any) -> StartTable | None:
    """The start table of ``simulator``'s current choice tables (None before a NumPy learned env was
    built on it, or over the size bound): its ``statistics()``, or ``enabled = False`` to turn it off."""
    tables = _TABLES.get(simulator)
    return tables.starts if tables is not None and tables.current(simulator.choice_model) else None


def reset_memo(simulator: Any) -> ResetMemo | None:
    """The reset memo of ``simulator``'s current choice tables (None before a NumPy learned env was
    built on it): its ``statistics()``, or ``max_bytes = 0`` to turn it off."""
    tables = _TABLES.get(simulator)
    return tables.memo if tables is not None and tables.current(simulator.choice_model) else None


class NumpyLearnedChoice:
    """The learned choice of one user (see the module docstring); ``state`` is a float32 [dim] view of
    ``UserState.choice_state[0]``, ``consumed`` a bool [n_items] view of ``UserState.consumed[0]``."""

    def __init__(self, simulator: Any) -> None:
        self.simulator = simulator
        self.tables = _tables(simulator)
        self.no_choice = self.tables.no_choice
        self._buffers()
        self.state: np.ndarray = np.zeros(self.tables.dim, dtype=np.float32)
        self.consumed: np.ndarray = np.zeros(0, dtype=bool)

    def _buffers(self) -> None:
        """Work arrays and their fixed views (a view costs as much as a small ufunc: taken once)."""
        dim, n_items = self.tables.dim, len(self.tables.bias)
        self._hidden = np.zeros(dim + 1, dtype=np.float32)  # [h, 1]
        self._hidden[dim] = 1.0
        self._h = self._hidden[:dim]
        self._gates = np.empty(3 * dim, dtype=np.float32)
        self._gates_rz, self._gates_n = self._gates[: 2 * dim], self._gates[2 * dim :]
        self._rz = np.empty(2 * dim, dtype=np.float32)
        self._r, self._z = self._rz[:dim], self._rz[dim:]
        self._new = np.empty(dim, dtype=np.float32)
        self._step = np.empty(dim, dtype=np.float32)
        self._logits = np.empty(n_items, dtype=np.float32)  # h @ scores + bias
        self._masked = np.empty(n_items, dtype=np.float32)  # the same, -inf where consumed (if excluded)
        self._blocked = np.zeros(n_items, dtype=np.float32)  # 0, or -inf where consumed (if excluded)
        self._shift = _F32(0.0)  # log_p = (logits - shift) - log_sum, shift the largest allowed logit
        self._lazy = False  # after a start-table reset: the logits and the block are not computed yet
        self._log_sum = _F32(0.0)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["tables"]  # rebuilt from the simulator
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.tables = _tables(self.simulator)
        self._buffers()  # the views of a copy must be of the copy's buffers

    def bind(self, state: np.ndarray, consumed: np.ndarray) -> None:
        """Read and write the GRU state in ``state`` and the consumed mask from ``consumed`` (views)."""
        self.state, self.consumed = state, consumed
        self._h[:] = state
        self.refresh()

    # ------------------------------------------------------------------------------- GRU

    def _current(self) -> _Tables:
        """The tables, rebuilt first if the simulator's choice model or its weights were replaced."""
        if not self.tables.current(self.simulator.choice_model):
            self.tables = _tables(self.simulator)
            self.no_choice = self.tables.no_choice
        return self.tables

    def recall(self, user: int, prefix: int, extra: np.ndarray | None) -> bool:
        """The reset at (``user``, ``prefix``) from the start table, else from the memo if it holds it:
        the state, the logits and their normaliser set as :meth:`start` sets them, the caller's ``extra``
        copied into ``extra`` (the consumed mask must already be the reset's)."""
        t = self._current()
        starts = t.starts
        from_table = starts is not None and starts.serves(self.simulator)
        if from_table:
            starts.resets += 1
            entry = starts.entry(user, prefix)
        else:
            memo = t.memo
            memo.resets += 1
            entry = memo.full((user, prefix))
            if entry is None:
                return False
            memo.hits += 1
        dim = self.tables.dim
        np.copyto(self._h, entry[:dim])
        self.state[:] = self._h
        if from_table:  # (within the state tolerance already: the slate's logits alone until a click)
            self._lazy = True
        else:
            self._logits_of_state(rebuild=True)
        self._shift, self._log_sum = entry[dim], entry[dim + 1]
        if extra is not None:
            np.copyto(extra, entry[dim + 2 :])
        return True

    def start(
        self, items: np.ndarray, responses: np.ndarray, user: int = -1, prefix: int = -1,
        extra: np.ndarray | None = None,
    ) -> None:
        """The state after reading ``items`` (int64 [L], oldest first, no padding) with their
        ``responses`` (float32 [L], no NaN: the sampler's) from the zero state (``NextItemGRU.encode``),
        and its log-normaliser. With the reset's (``user``, ``prefix``) (``items`` its last ``window``
        prefix items), the results and ``extra`` (the caller's, e.g. the warm-started interest) go to
        the memo, and a prefix within the window continues from the longest one the memo holds."""
        t = self._current()
        memo = t.memo if user >= 0 and t.memo.enabled else None
        chained = memo is not None and prefix <= t.window  # read from the user's first item
        first = min(memo.chain.get(user, 0), len(items)) if chained else 0
        if first:
            memo.extended += 1
            self._h[:] = memo.state((user, first))
        else:
            self._h[:] = 0.0
        record: list[np.ndarray] | None = [] if chained else None
        if first < len(items):
            inputs = t.item_gates[items[first:]]
            if t.response_gates is not None:
                inputs += _response_inputs(responses[first:], t.response_gates)
            dim2 = 2 * t.dim
            self._cells(inputs[:, :dim2], inputs[:, dim2:], record)
        self.state[:] = self._h
        self.refresh()
        if memo is None:
            return
        key = (user, prefix)
        if record:
            memo.put_chain(user, first, record)
        elif not chained:
            memo.put_state(key, self._h)
        rest = np.empty(2 + (0 if extra is None else len(extra)), dtype=np.float32)
        rest[0], rest[1] = self._shift, self._log_sum
        if extra is not None:
            rest[2:] = extra
        memo.complete(key, rest)

    def advance(self, item: int, response: np.float32) -> None:
        """The state after consuming ``item`` with ``response`` (``NextItemGRU.advance`` on a click)."""
        t = self.tables
        inputs = t.item_gates[item : item + 1]
        if t.response_gates is not None:
            inputs = inputs + _response_inputs(np.array([response], dtype=np.float32), t.response_gates)
        dim2 = 2 * t.dim
        self._cells(inputs[:, :dim2], inputs[:, dim2:])
        self.state[:] = self._h
        self._blocked[item] = -np.inf if t.exclude_consumed else 0.0
        self.refresh(rebuild=False)

    def _cells(self, inputs_rz: np.ndarray, inputs_n: np.ndarray, record: list[np.ndarray] | None = None) -> None:
        """GRU steps on ``self._hidden``, one per row of the input side of the gates (biases folded in):
        ``r, z = sigmoid(.)``, ``n = tanh(x_n + r * (W_hn h + b_hn))``, ``h' = (h - n) * z + n``; with
        ``record``, a copy of each new state appended to it."""
        hidden, h, table = self._hidden, self._h, self.tables.hidden_gates
        gates, gates_rz, gates_n = self._gates, self._gates_rz, self._gates_n
        rz, r, z, new, step = self._rz, self._r, self._z, self._new, self._step
        dot, add, multiply, subtract, tanh = np.dot, np.add, np.multiply, np.subtract, np.tanh
        for x_rz, x_n in zip(inputs_rz, inputs_n, strict=True):
            dot(hidden, table, gates)
            add(x_rz, gates_rz, rz)
            expit(rz, rz)
            multiply(r, gates_n, new)
            add(new, x_n, new)
            tanh(new, new)
            subtract(h, new, step)
            multiply(step, z, step)
            add(step, new, h)
            if record is not None:
                record.append(h.copy())

    # ------------------------------------------------------------------------------- utilities

    def refresh(self, rebuild: bool = True) -> None:
        """The catalogue's logits for the current state and their log-normaliser over the items the
        user may still choose (``LearnedChoice.log_probabilities``); after a change of state (and,
        with ``rebuild``, of the consumed mask)."""
        self._logits_of_state(rebuild)
        masked = self._masked
        np.add(self._logits, self._blocked, masked)
        shift = masked.max()
        if shift == -np.inf:  # nothing left to choose (or no finite logit): every utility is -inf
            self._shift, self._log_sum = _F32(0.0), _F32(0.0)
            return
        np.subtract(masked, shift, masked)
        np.exp(masked, masked)
        self._shift, self._log_sum = shift, np.log(masked.sum())

    def _logits_of_state(self, rebuild: bool) -> None:
        """``h @ scores + bias`` into the logits (and, with ``rebuild`` or after a start-table reset, -inf
        where consumed into the block)."""
        t = self.tables
        if rebuild or self._lazy:
            self._lazy = False
            self._blocked[:] = 0.0
            if t.exclude_consumed:
                self._blocked[self.consumed] = -np.inf
        np.dot(self._h, t.scores, self._logits)
        np.add(self._logits, t.bias, self._logits)

    def utilities(self, slate: np.ndarray, predicted: np.ndarray, fatigue: np.ndarray) -> np.ndarray:
        """Float32 [k]: the utility of each slate item (``LearnedChoice.utilities``)."""
        t = self._current()  # new weights may have been set mid-session
        if self._lazy:  # the slate's logits alone (start table: no catalogue logits until a click)
            logits = t.item_scores[slate] @ self._h + t.bias[slate]
            log_p = (logits - self._shift) - self._log_sum
        else:
            log_p = (self._logits[slate] - self._shift) - self._log_sum
        utility = t.w_choice * log_p + t.w_boredom * fatigue
        if t.w_rating is not None:
            utility += t.w_rating * (predicted - _THREE)
        if not math.isfinite(np.add.reduce(utility)):  # (a finite sum: every term finite)
            utility = np.nan_to_num(utility, nan=-np.inf)  # as torch.nan_to_num: +-inf to the largest finite
        if t.exclude_consumed:
            utility += np.where(self.consumed[slate], _NEG_INF, _ZERO) if self._lazy else self._blocked[slate]
        return utility


def _response_inputs(responses: np.ndarray, gates: np.ndarray) -> np.ndarray:
    """The response features' part of the GRU's input side, float32 [L, 3 dim]: ``f0 * gates[0] + f1 *
    gates[1]`` elementwise, so each row is the same bits however many rows are computed at once
    (the reset memo continues a read from a kept state)."""
    features = _features(responses)
    part = features[:, :1] * gates[0]
    part += features[:, 1:] * gates[1]
    return part


def _features(responses: np.ndarray) -> np.ndarray:
    """``recarena.simulators.sequence.response_features`` in float32 [L, 2]: [(r - 3) / 2, r >= 4]
    (a NaN response counts as ``MAX_RATING``)."""
    features = np.empty((len(responses), 2), dtype=np.float32)
    np.subtract(responses, _THREE, features[:, 0])
    features[:, 0] /= _TWO
    np.greater_equal(responses, _LIKE, features[:, 1])
    if np.isnan(responses).any():
        nan = np.isnan(responses)
        features[nan] = ((_F32(MAX_RATING) - _THREE) / _TWO, _F32(MAX_RATING >= LIKE_THRESHOLD))
    return features
