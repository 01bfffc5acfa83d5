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
per-item table ``v_i W_ih^T + b`` computed once, the logits are ``h (A V^T) + b`` with ``A V^T`` computed
once, both in float64 and rounded to float32. The GRU state and ``log_p`` therefore agree with the
batched path's to float32 tolerance (about 1e-6), not exactly; every random draw is the same (the
choice draws ``k + 1`` uniforms whatever the utilities), so a rollout makes the same choices unless
a Gumbel-max is decided by less than that tolerance (tests compare rollouts over many steps).
Everything else of the step (ratings, boredom, response, leave, observation) stays bit-identical.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from recarena.data.interactions import LIKE_THRESHOLD, MAX_RATING
from recarena.simulators.choice import LearnedChoice
from recarena.simulators.sequence import NextItemGRU

_F32 = np.float32
_THREE, _TWO, _LIKE = _F32(3.0), _F32(2.0), _F32(LIKE_THRESHOLD)


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
        # Hidden side: [h, 1] @ [W_hh^T; (0, 0, b_hn)], so the new gate's bias is multiplied by r.
        hidden = torch.zeros(dim + 1, 3 * dim, dtype=torch.float64)
        hidden[:dim] = w_hh.T
        hidden[dim, 2 * dim :] = b_hh[2 * dim :]
        self.hidden_gates = _f32(hidden)
        output = network.output.detach().to(torch.float64)
        self.scores = _f32(output @ vectors.T)  # [dim, n_items]: logits = h @ scores + bias
        self.bias = _f32(bias)
        self.dim, self.window = dim, int(choice.window)
        weights = self.weights = choice.weights
        self.w_choice, self.w_boredom = _F32(weights.choice), _F32(weights.boredom)
        self.w_rating = _F32(weights.rating) if choice.use_rating else None
        self.no_choice = _F32(weights.no_choice)
        self.exclude_consumed = bool(choice.model.exclude_consumed)


def _f32(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.to(torch.float32).numpy())


_TABLES: weakref.WeakKeyDictionary[Any, tuple[LearnedChoice, _Tables]] = weakref.WeakKeyDictionary()


def supports(choice: Any) -> bool:
    """Whether :class:`NumpyLearnedChoice` reproduces ``choice`` (the stock learned choice, on the CPU)."""
    if type(choice) is not LearnedChoice or type(choice.model.network) is not NextItemGRU:
        return False
    network = choice.model.network
    return network.device.type == "cpu" and network.gru.weight_hh_l0.dtype == torch.float32


def _tables(simulator: Any) -> _Tables:
    """The tables of the simulator's current choice model, built once (rebuilt when the model or its
    weights object was replaced; the model itself is frozen, as for ``LearnedChoice.table``)."""
    entry = _TABLES.get(simulator)
    if entry is None or entry[0] is not simulator.choice_model or entry[1].weights is not simulator.choice_model.weights:
        entry = _TABLES[simulator] = (simulator.choice_model, _Tables(simulator.choice_model))
    return entry[1]


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

    def start(self, items: np.ndarray, responses: np.ndarray) -> None:
        """The state after reading ``items`` (int64 [L], oldest first, no padding) with their
        ``responses`` (float32 [L], no NaN: the sampler's) from the zero state (``NextItemGRU.encode``),
        and its log-normaliser."""
        t = self.tables
        self._h[:] = 0.0
        if len(items):
            inputs = t.item_gates[items]
            if t.response_gates is not None:
                inputs += _features(responses) @ t.response_gates
            dim2 = 2 * t.dim
            self._cells(inputs[:, :dim2], inputs[:, dim2:])
        self.state[:] = self._h
        self.refresh()

    def advance(self, item: int, response: np.float32) -> None:
        """The state after consuming ``item`` with ``response`` (``NextItemGRU.advance`` on a click)."""
        t = self.tables
        inputs = t.item_gates[item : item + 1]
        if t.response_gates is not None:
            inputs = inputs + _features(np.array([response], dtype=np.float32)) @ t.response_gates
        dim2 = 2 * t.dim
        self._cells(inputs[:, :dim2], inputs[:, dim2:])
        self.state[:] = self._h
        self._blocked[item] = -np.inf if t.exclude_consumed else 0.0
        self.refresh(rebuild=False)

    def _cells(self, inputs_rz: np.ndarray, inputs_n: np.ndarray) -> None:
        """GRU steps on ``self._hidden``, one per row of the input side of the gates (biases folded in):
        ``r, z = sigmoid(.)``, ``n = tanh(x_n + r * (W_hn h + b_hn))``, ``h' = (h - n) * z + n``."""
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

    # ------------------------------------------------------------------------------- utilities

    def refresh(self, rebuild: bool = True) -> None:
        """The catalogue's logits for the current state and their log-normaliser over the items the
        user may still choose (``LearnedChoice.log_probabilities``); after a change of state (and,
        with ``rebuild``, of the consumed mask)."""
        t = self.tables
        if rebuild:
            self._blocked[:] = 0.0
            if t.exclude_consumed:
                self._blocked[self.consumed] = -np.inf
        logits, masked = self._logits, self._masked
        np.dot(self._h, t.scores, logits)
        np.add(logits, t.bias, logits)
        np.add(logits, self._blocked, masked)
        shift = masked.max()
        if shift == -np.inf:  # nothing left to choose (or no finite logit): every utility is -inf
            self._shift, self._log_sum = _F32(0.0), _F32(0.0)
            return
        np.subtract(masked, shift, masked)
        np.exp(masked, masked)
        self._shift, self._log_sum = shift, np.log(masked.sum())

    def utilities(self, slate: np.ndarray, predicted: np.ndarray, fatigue: np.ndarray) -> np.ndarray:
        """Float32 [k]: the utility of each slate item (``LearnedChoice.utilities``)."""
        if self.tables.weights is not self.simulator.choice_model.weights:  # new weights were set
            self.tables = _tables(self.simulator)
            self.no_choice = self.tables.no_choice
        t = self.tables
        log_p = (self._logits[slate] - self._shift) - self._log_sum
        utility = t.w_choice * log_p + t.w_boredom * fatigue
        if t.w_rating is not None:
            utility += t.w_rating * (predicted - _THREE)
        if not math.isfinite(np.add.reduce(utility)):  # (a finite sum: every term finite)
            utility = np.nan_to_num(utility, nan=-np.inf)  # as torch.nan_to_num: +-inf to the largest finite
        if t.exclude_consumed:
            utility += self._blocked[slate]  # -inf where consumed
        return utility


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
