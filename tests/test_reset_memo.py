"""The single env's reset memo (recarena.envs.reset_memo) on the NumPy learned-choice path: bit for bit
the same rollouts as without it, copies in and out, invalidated with the choice tables, bounded.

Tiny learned users (tests/_choice_fixtures.py); a GRU window of 4 so that both kinds of reset read
occur: from the user's first item (prefix <= window, kept as a chain) and a sliding window.
"""

from __future__ import annotations

import copy
import tracemalloc

import numpy as np
import pytest
import torch

from recarena.envs import RecommendationEnv
from recarena.envs import start_table as start_table_module
from recarena.envs.reset_memo import ENTRY_OVERHEAD, ResetMemo
from recarena.envs.single_user_choice import reset_memo, start_table
from recarena.simulators.choice import UtilityWeights
from tests._choice_fixtures import QUICK_SEQUENCE, next_in_group
from tests._env_fixtures import assert_same
from tests._learned_env_fixtures import STATE_TOLERANCE, learned_simulator, pair, rollout


@pytest.fixture(autouse=True)
def no_start_table(monkeypatch):
    """The memo alone: no start table (recarena.envs.start_table) ahead of it."""
    monkeypatch.setattr(start_table_module, "MAX_TABLE_BYTES", 0)


@pytest.fixture(scope="module")
def simulator():
    return learned_simulator(choice={"sequence": {**QUICK_SEQUENCE, "window": 4}})


def fresh_memo(simulator, max_bytes: int | None = None) -> ResetMemo:
    """An empty memo of ``max_bytes`` (default: the module's) in place of the simulator's current one
    (this module's fixture keeps the start table, which would serve resets ahead of the memo, off)."""
    RecommendationEnv(simulator=simulator)  # builds the choice tables if needed
    assert start_table(simulator) is None
    memo = reset_memo(simulator)
    memo.clear()
    memo.resets = memo.hits = memo.extended = memo.clears = 0
    memo.max_bytes = ResetMemo(1).max_bytes if max_bytes is None else max_bytes
    return memo


def test_rollouts_with_the_memo_equal_rollouts_without_it_bit_for_bit(simulator):
    env = RecommendationEnv(simulator=simulator, slate_size=2, max_steps=3)
    memo = fresh_memo(simulator, max_bytes=0)
    off = rollout(env, 0, 600)
    assert memo.statistics()["entries"] == 0 and memo.hits == 0
    memo = fresh_memo(simulator)
    filling, warm = rollout(env, 0, 600), rollout(env, 0, 600)  # the second one replays every start
    stats = memo.statistics()
    assert stats["resets"] >= 2 * 150 and stats["hit_rate"] > 0.6 and stats["extended"] > 10
    assert any(len(entry) == memo.dim for entry in memo.entries.values())  # chain states kept
    assert any(key[1] > 4 for key in memo.entries)  # sliding-window reads kept
    assert_same(off, filling)  # observations, rewards, infos; GRU state and interest exactly
    assert_same(off, warm)
    # A memo so small that it is cleared again and again, also while a chain is being kept.
    memo = fresh_memo(simulator, max_bytes=40 * (memo.dim * 4 + ENTRY_OVERHEAD))
    tight = rollout(env, 0, 600)
    assert memo.clears >= 3 and memo.hits > 0
    assert_same(off, tight)


def test_memo_and_batched_path_agree_within_the_state_tolerance(simulator):
    fresh_memo(simulator)
    fast, slow = pair(simulator, slate_size=2, max_steps=3)
    for _ in range(2):  # the second pass starts from the memo
        for seed in range(20):
            fast.reset(seed=seed)
            slow.reset(seed=seed)
            np.testing.assert_allclose(
                fast._batch.user_state.choice_state.numpy(), slow._batch.user_state.choice_state.numpy(),
                rtol=0, atol=STATE_TOLERANCE,
            )
            assert torch.equal(fast._batch.user_state.interest, slow._batch.user_state.interest)
    assert reset_memo(simulator).hits >= 20


def test_a_memo_hit_is_a_copy_that_in_place_updates_cannot_corrupt():
    # Users who stay for the eight liked clicks below: the patience rules (-v3's logged-session
    # hazard could end the session after any click).
    simulator = learned_simulator(choice={"sequence": {**QUICK_SEQUENCE, "window": 4}}, leave={"model": "patience"})
    memo = fresh_memo(simulator)
    env = RecommendationEnv(simulator=simulator, slate_size=2, max_steps=50)
    state = env._batch.user_state
    env.reset(seed=5)
    first = (state.choice_state.clone(), state.interest.clone(), env._fast._learned._log_sum)
    entries = copy.deepcopy(memo.entries)
    for _ in range(2):
        hits = memo.hits
        for item in range(8):  # clicks advance the GRU state and change the interest in place
            env.step(np.array([next_in_group(int(state.history[0, -1])), item]))
        state.choice_state.fill_(7.0)
        state.interest.fill_(-1.0)
        env.reset(seed=5)
        assert memo.hits == hits + 1
        assert torch.equal(state.choice_state, first[0]) and torch.equal(state.interest, first[1])
        assert env._fast._learned._log_sum == first[2]
    assert memo.entries.keys() == entries.keys()
    for key, entry in entries.items():
        np.testing.assert_array_equal(memo.entries[key], entry)


def test_new_weights_or_a_new_choice_model_start_a_new_memo(simulator):
    sim = learned_simulator(choice={"sequence": {**QUICK_SEQUENCE, "window": 4}})
    fast, slow = pair(sim, slate_size=2, max_steps=3)
    fitted, old = sim.choice_model.weights, reset_memo(sim)
    fast.reset(seed=3)
    fast.reset(seed=3)
    assert old.hits == 1
    # New utility weights: new tables, a new empty memo (what the state needs is recomputed).
    sim.choice_model.weights = UtilityWeights(choice=0.5, rating=1.5, boredom=-0.3, no_choice=-0.5)
    fast.reset(seed=3)
    memo = reset_memo(sim)
    assert memo is not old and memo.hits == 0 and memo.resets == 1 and old.resets == 2
    # A new choice model whose GRU differs: the state follows it (a reused memo would not).
    before = fast._batch.user_state.choice_state.clone()
    changed = copy.deepcopy(sim.choice_model)
    with torch.no_grad():
        changed.model.network.gru.weight_hh_l0.mul_(-1.0)
    sim.choice_model = changed
    fast.reset(seed=3)
    slow.reset(seed=3)
    after = fast._batch.user_state.choice_state
    assert reset_memo(sim) is not memo and reset_memo(sim).hits == 0
    assert not torch.allclose(before, after, atol=1e-3)
    np.testing.assert_allclose(after.numpy(), slow._batch.user_state.choice_state.numpy(), rtol=0, atol=STATE_TOLERANCE)
    sim.choice_model.weights = fitted


def test_the_memo_stays_within_its_bound_and_counts_more_than_it_takes():
    dim, cap = 64, 2_000_000
    memo = ResetMemo(dim, max_bytes=cap)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        state, rest = np.arange(dim, dtype=np.float32), np.arange(20, dtype=np.float32)
        for user in range(300, 2300):  # ints past the small-int cache, as for real users
            memo.put_chain(user, 0, [state] * 4)
            for prefix in range(1, 5):
                memo.complete((user, prefix), rest)
            for prefix in range(400, 403):
                memo.put_state((user, prefix), state)
                memo.complete((user, prefix), rest)
            assert memo.bytes <= cap
            if user == 650:
                peak = tracemalloc.get_traced_memory()[0] - start
                assert memo.clears == 0 and peak <= memo.bytes  # the count is not below the real size
    finally:
        tracemalloc.stop()
    assert memo.clears >= 2
    np.testing.assert_array_equal(memo.full((2299, 401)), np.concatenate([state, rest]))
    assert memo.full((2299, 4)) is not None and memo.chain[2299] == 4
    assert ResetMemo(dim, max_bytes=0).enabled is False


def test_an_entry_is_completed_once_and_only_next_to_its_state():
    memo = ResetMemo(2)
    memo.complete((0, 1), np.ones(2, dtype=np.float32))  # no state there: nothing kept
    assert memo.full((0, 1)) is None and memo.bytes == 0
    memo.put_chain(0, 1, [np.zeros(2, dtype=np.float32)])  # a chain starts at prefix 1
    assert memo.entries == {}
    memo.put_chain(0, 0, [np.zeros(2, dtype=np.float32), np.ones(2, dtype=np.float32)])
    memo.complete((0, 2), np.full(2, 5.0, dtype=np.float32))
    memo.complete((0, 2), np.full(2, 6.0, dtype=np.float32))
    np.testing.assert_array_equal(memo.full((0, 2)), [1, 1, 5, 5])
    assert memo.full((0, 1)) is None and memo.chain == {0: 2}
