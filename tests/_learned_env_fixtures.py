"""Tiny learned-choice users and the comparison of the single env's NumPy step with the batched torch
path, shared by the learned-choice env tests (test_single_user_learned.py, test_reset_memo.py,
test_start_table.py, test_vector_incremental.py). Users from tests/_choice_fixtures.py, never MovieLens.
"""

from __future__ import annotations

import numpy as np

import recarena.simulators as simulators
from recarena.data.splits import leave_last_out
from recarena.envs import RecommendationEnv
from tests._choice_fixtures import (
    N_ITEMS,
    QUICK_SEQUENCE,
    TableModel,
    cycle_log,
    group_embeddings,
    in_group_ratings,
    next_in_group,
)

STATE_TOLERANCE = 1e-5
"""The GRU state of the NumPy step agrees with torch's to float32 rounding."""


def learned_simulator(implicit: bool = False, **options):
    """The logged simulator with the learned choice on the tiny cycle log (its leave-last-out split): a quickly
    fitted next-item GRU, a fixed rating table unless ``implicit``, a window of 6; ``options`` override."""
    log = cycle_log(implicit=implicit)
    components = {"item_embeddings": group_embeddings()}
    if not implicit:
        components["preference_model"] = TableModel(in_group_ratings(log.n_users))
    options.setdefault("history_length", 6)
    options.setdefault("choice", {"sequence": QUICK_SEQUENCE})
    return simulators.make("logged", leave_last_out(log), sampler={"min_prefix": 2}, components=components, **options)


def pair(simulator, **kwargs) -> tuple[RecommendationEnv, RecommendationEnv]:
    """(the NumPy step, the batched torch step) of the same simulator and options."""
    fast, slow = RecommendationEnv(simulator=simulator, **kwargs), RecommendationEnv(simulator=simulator, **kwargs)
    assert fast._fast is not None and fast._fast._learned is not None  # the learned choice in NumPy
    slow._fast = None
    return fast, slow


def assert_same_state(fast: RecommendationEnv, slow: RecommendationEnv) -> None:
    """Every state tensor equal, the GRU state to float32 tolerance; the random streams in step."""
    a, b = fast._batch.get_state(), slow._batch.get_state()
    for name, value in a["user_state"].items():
        if name == "choice_state":
            np.testing.assert_allclose(value.numpy(), b["user_state"][name].numpy(), rtol=0, atol=STATE_TOLERANCE)
        else:
            np.testing.assert_array_equal(value.numpy(), b["user_state"][name].numpy(), err_msg=name)
    np.testing.assert_array_equal(a["steps"].numpy(), b["steps"].numpy())
    assert a["np_random"] == b["np_random"]


def rollout(env: RecommendationEnv, seed: int, steps: int) -> list:
    """Slates holding the likely next item half the time (clicks advance the GRU), short sessions
    (many resets); after every step and reset the GRU state and the interest, as exact copies."""
    rng = np.random.default_rng(seed)
    state = env._batch.user_state
    trace = [env.reset(seed=seed)]
    observation = trace[0][0]
    for _ in range(steps):
        slate = rng.choice(N_ITEMS, size=2, replace=False)
        last = int(observation["history"][-1])
        if last >= 0 and rng.random() < 0.5 and next_in_group(last) not in slate:
            slate[0] = next_in_group(last)
        result = env.step(slate)
        trace.append(result)
        observation = result[0]
        if result[2] or result[3]:
            trace.append(env.reset())
            observation = trace[-1][0]
        trace.append((state.choice_state.numpy().copy(), state.interest.numpy().copy()))
    return trace
