"""The single env's NumPy step for the learned choice (the -v1 composition) against the batched torch path.

Tiny logged users (tests/_choice_fixtures.py: users who walk a cycle through their group's items, a
quickly fitted next-item GRU, a fixed rating table), never MovieLens.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import recarena.simulators as simulators
from recarena.data.splits import leave_last_out
from recarena.envs import RecommendationEnv
from recarena.envs.single_user_choice import NumpyLearnedChoice
from recarena.simulators.choice import LearnedChoice
from tests._choice_fixtures import (
    N_ITEMS,
    QUICK_SEQUENCE,
    TableModel,
    cycle_log,
    cycle_sequences,
    group_embeddings,
    in_group_ratings,
    next_in_group,
    write_ratings_folder,
)
from tests._env_fixtures import assert_same
from tests._learned_env_fixtures import STATE_TOLERANCE, assert_same_state, learned_simulator, pair


@pytest.fixture(scope="module")
def simulator():
    return learned_simulator()


def rollout(env: RecommendationEnv, seed: int, steps: int) -> tuple[list, dict, int]:
    """A rollout whose slates hold the user's likely next item half the time (so users click and the
    GRU advances), resetting on end; with the simulator's statistics and the number of clicks."""
    env.simulator.reset_statistics()
    rng = np.random.default_rng(seed + 100)
    k = env._batch.slate_size
    observation, info = env.reset(seed=seed)
    trace, clicks = [(observation, info)], 0
    for _ in range(steps):
        slate = rng.choice(N_ITEMS, size=k, replace=False)
        last = int(observation["history"][-1])
        if last >= 0 and rng.random() < 0.5 and next_in_group(last) not in slate:
            slate[rng.integers(k)] = next_in_group(last)
        result = env.step(int(slate[0]) if k == 1 else slate)
        trace.append(result)
        observation, clicks = result[0], clicks + result[4]["clicked"]
        if result[2] or result[3]:
            observation, info = env.reset()
            trace.append((observation, info))
    trace.append(env.action_masks())
    return trace, env.simulator.statistics(), clicks


CASES = {
    "slate1": {},
    "slate3_rating": dict(slate_size=3, reward="rating"),
    "slate2_click_unmasked": dict(slate_size=2, reward="click", mask_consumed=False, observation_keys=("history", "responses")),
    "short_sessions_window4": dict(slate_size=2, max_steps=7, history_length=4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_learned_choice_rollouts_equal_the_batched_path(simulator, case):
    fast, slow = pair(simulator, **CASES[case])
    trace_fast, statistics_fast, clicks = rollout(fast, 3, 400)
    trace_slow, statistics_slow, _ = rollout(slow, 3, 400)
    assert clicks >= 40  # the GRU advanced on many clicks, and many sessions were read at reset
    assert statistics_fast["leaves"] >= 10
    assert_same(trace_fast, trace_slow)  # every observation, reward, flag and info value
    assert statistics_fast == statistics_slow
    assert_same_state(fast, slow)


LEAVE_CASES = {
    "sessions_drift_hazard": dict(interest={"drift": 0.05}, leave={"hazard": 0.05}),
    "sessions_hazard": dict(leave={"hazard": 0.05}),  # the leave's uniform drawn ahead with the choice noise
    "patience_drift_hazard": dict(interest={"drift": 0.05}, leave={"model": "patience", "hazard": 0.05}),
    "patience_hazard": dict(leave={"model": "patience", "hazard": 0.05}),
    "patience": dict(leave={"model": "patience"}),  # -v2's leaving: no leave draw at all
}


@pytest.mark.parametrize("case", sorted(LEAVE_CASES))
def test_drift_and_leave_draws_stay_in_step(case):
    """With drift and the leave's draws (between the choices) the generators end in the same state."""
    sim = learned_simulator(**LEAVE_CASES[case])
    fast, slow = pair(sim, slate_size=2)
    trace_fast, statistics_fast, clicks = rollout(fast, 8, 300)
    trace_slow, statistics_slow, _ = rollout(slow, 8, 300)
    assert clicks >= 30
    assert_same(trace_fast, trace_slow)
    assert statistics_fast == statistics_slow
    assert_same_state(fast, slow)
    if "drift" in case:  # no noise drawn ahead: the generators end in the same state
        assert torch.equal(fast._batch._generator.get_state(), slow._batch._generator.get_state())


def test_implicit_logs_step_in_numpy_as_the_batched_path():
    sim = learned_simulator(implicit=True)
    assert sim.preference_model is None
    fast, slow = pair(sim, slate_size=2)
    trace_fast, statistics_fast, clicks = rollout(fast, 4, 300)
    trace_slow, statistics_slow, _ = rollout(slow, 4, 300)
    assert clicks >= 30 and statistics_fast["likes"] == statistics_fast["clicks"]  # the reward is the click
    assert_same(trace_fast, trace_slow)
    assert statistics_fast == statistics_slow
    assert_same_state(fast, slow)


def test_state_and_utilities_agree_with_the_learned_choice_model(simulator):
    """After each reset and click: the GRU state, and the utilities of slates holding consumed items
    (-inf) and fresh ones, against LearnedChoice on the same state."""
    fast, slow = pair(simulator, slate_size=4)
    choice: LearnedChoice = simulator.choice_model
    rng = np.random.default_rng(0)
    checked = 0
    for seed in range(12):
        fast.reset(seed=seed)
        slow.reset(seed=seed)
        for _ in range(6):
            state = slow._batch.user_state
            np.testing.assert_allclose(
                fast._batch.user_state.choice_state.numpy(), state.choice_state.numpy(), rtol=0, atol=STATE_TOLERANCE
            )
            consumed = np.flatnonzero(state.consumed[0].numpy())
            slate = np.concatenate([consumed[:1], rng.choice(np.setdiff1d(np.arange(N_ITEMS), consumed), 3, replace=False)])
            tensor = torch.from_numpy(slate).unsqueeze(0)
            fatigue = simulator.interest_model.fatigue(state.interest, tensor)
            predicted = simulator.predicted_ratings(state.user, tensor)
            expected, none = choice.utilities(state.choice_state, state.consumed, tensor, predicted, fatigue)
            got = fast._fast._learned.utilities(slate, predicted.numpy()[0], fatigue.numpy()[0])
            assert got[0] == -np.inf and float(expected[0, 0]) == -np.inf  # a consumed item is never chosen
            np.testing.assert_allclose(got[1:], expected.numpy()[0, 1:], rtol=1e-5, atol=1e-5)
            assert fast._fast._logits[-1] == float(none[0, 0])  # the no-choice utility, exactly
            checked += 1
            likely = next_in_group(int(state.history[0, -1]))  # likely clicked: the GRU advances
            others = rng.choice(np.setdiff1d(np.arange(N_ITEMS), [likely]), 3, replace=False)
            action = np.array([likely, *others], dtype=np.int64)
            outcomes = fast.step(action), slow.step(action)
            assert_same(outcomes[0], outcomes[1])
            if outcomes[0][2] or outcomes[0][3]:
                break
    assert checked >= 40


def test_the_registered_v1_id_takes_the_numpy_step_and_passes_the_env_checkers(tmp_path_factory):
    """``recarena/ML100K-v1``'s own simulator on a tiny MovieLens-format folder: the NumPy step is the
    one taken (a regression to the batched path fails here), and both env checkers pass."""
    folder = write_ratings_folder(tmp_path_factory.mktemp("data"), cycle_sequences(n_users=30))
    quick = {"preference": {"epochs": 1}, "choice": {"sequence": QUICK_SEQUENCE}}
    env = gym.make("recarena/ML100K-v1", data=str(folder), simulator_config=quick)
    fast = env.unwrapped._fast
    assert fast is not None and isinstance(fast._learned, NumpyLearnedChoice)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)
    slow = gym.make("recarena/ML100K-v1", data=str(folder), simulator_config=quick, slate_size=2).unwrapped
    fast2 = gym.make("recarena/ML100K-v1", data=str(folder), simulator_config=quick, slate_size=2).unwrapped
    slow._fast = None
    trace_fast, statistics_fast, _ = rollout(fast2, 1, 200)
    trace_slow, statistics_slow, _ = rollout(slow, 1, 200)
    assert_same(trace_fast, trace_slow)
    assert statistics_fast == statistics_slow


def test_a_deep_copy_of_a_learned_env_steps_on_its_own_state(simulator):
    env = RecommendationEnv(simulator=simulator, slate_size=2, max_steps=200)
    env.reset(seed=0)
    for item in range(4):
        env.step(np.array([item, next_in_group(item)]))
    twin = copy.deepcopy(env)
    for item in range(4, 30):
        action = np.array([item % N_ITEMS, next_in_group(item % N_ITEMS)])
        a, b = env.step(action), twin.step(action)
        assert_same(a, b)
        if a[2] or a[3]:
            assert_same(env.reset(), twin.reset())
    assert torch.equal(env._batch.user_state.choice_state, twin._batch.user_state.choice_state)
    before = twin._batch.user_state.choice_state.clone()
    env.reset(seed=1)
    env.step(np.array([0, 1]))
    assert torch.equal(twin._batch.user_state.choice_state, before)  # the copy steps on its own tensors


def test_weights_set_mid_session_are_used_at_once():
    from recarena.simulators.choice import UtilityWeights

    sim = learned_simulator()
    fast, slow = pair(sim, slate_size=3)
    fitted = sim.choice_model.weights
    changed = UtilityWeights(choice=0.5, rating=1.5, boredom=-0.3, no_choice=-0.5)
    traces = {}
    for name, env in (("fast", fast), ("slow", slow)):
        sim.choice_model.weights = fitted
        env.reset(seed=2)
        trace = [env.step(np.array([0, 1, 2]))]
        sim.choice_model.weights = changed  # mid-session
        for i in range(3, 40):
            trace.append(env.step(np.array([i % 12, i % 12 + 12, i % 12 + 24])))
            if trace[-1][2] or trace[-1][3]:
                trace.append(env.reset())
        traces[name] = trace
    assert_same(traces["fast"], traces["slow"])
    assert fast._fast._logits[-1] == np.float32(-0.5)


def test_parts_the_numpy_step_does_not_know_take_the_batched_path(simulator):
    class OwnChoice(LearnedChoice):
        pass

    sim = learned_simulator()
    sim.choice_model = OwnChoice(sim.next_item_model, sim.choice_model.weights)
    assert RecommendationEnv(simulator=sim)._fast is None
    assert RecommendationEnv(simulator=simulator)._fast is not None


def test_the_numpy_step_covers_both_versions_of_the_answers(simulator):
    """The module's simulator is the -v2 user (calibrated answers, rounded likes: the comparisons above
    are of -v2); the -v1 user ("logged-v1") steps in NumPy as the batched path too."""
    assert simulator.calibration is not None and simulator.answer_table is not None
    assert simulator.like_threshold == 3.5
    log = cycle_log()
    v1 = simulators.make(
        "logged-v1", leave_last_out(log), sampler={"min_prefix": 2}, history_length=6,
        choice={"sequence": QUICK_SEQUENCE},
        components={"item_embeddings": group_embeddings(), "preference_model": TableModel(in_group_ratings(log.n_users))},
    )
    assert v1.calibration is None and v1.like_threshold == 4.0
    for sim in (simulator, v1):
        fast, slow = pair(sim, slate_size=3, reward="like")
        trace_fast, statistics_fast, clicks = rollout(fast, 6, 300)
        trace_slow, statistics_slow, _ = rollout(slow, 6, 300)
        assert clicks >= 30 and statistics_fast["likes"] > 0
        assert_same(trace_fast, trace_slow)
        assert statistics_fast == statistics_slow
        assert_same_state(fast, slow)
