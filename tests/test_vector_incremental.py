"""The learned-choice vector env's per-user kept parts (recarena.envs.vector_incremental): rollouts
against the full computation, the kept normaliser and pooled LLM state against a rebuild from the
state while the observation window rolls over, resets from the start table against the replay,
what a step recomputes, determinism and resume, and the static-shape path left as it was.

Tiny learned users (tests/_choice_fixtures.py), a GRU window of 4 and an observation window of 3,
so sessions click through several windows.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from recarena.envs import RecommendationVectorEnv
from recarena.envs.observation import build_observation
from recarena.envs.single_user_choice import start_table
from tests._choice_fixtures import N_ITEMS, WINDOW4, next_in_group
from tests._learned_env_fixtures import STATE_TOLERANCE, learned_simulator

N = 24
NEVER_LEAVE = {"no_click_cost": 0.0, "dislike_cost": 0.0, "hazard": 0.0}


@pytest.fixture(scope="module")
def simulator():
    return learned_simulator(choice=WINDOW4)


@pytest.fixture(scope="module")
def long_sessions():
    """Users who never leave: sessions run to max_steps, clicking through many windows."""
    return learned_simulator(choice=WINDOW4, leave=NEVER_LEAVE)


def make(simulator, incremental: bool = True, **kwargs) -> RecommendationVectorEnv:
    kwargs = {"max_steps": 8, "slate_size": 2, "history_length": 3, **kwargs}
    # incremental=False: the full computation (catalogue log-probabilities, replayed starts, pooling)
    env = RecommendationVectorEnv(N, simulator=simulator, incremental=incremental, **kwargs)
    assert (env._incremental is not None and env._incremental.table is not None) == incremental
    return env


def slates(env: RecommendationVectorEnv, rng: np.random.Generator) -> torch.Tensor:
    """Random slates holding each user's likely next item most of the time (so users click)."""
    keys = torch.from_numpy(rng.random((N, N_ITEMS)))
    slate = keys.topk(2, dim=1).indices
    last = env.user_state.history[:, -1]
    for row in np.flatnonzero((last >= 0).numpy() & (rng.random(N) < 0.8)).tolist():
        target = next_in_group(int(last[row]))
        if target not in slate[row].tolist():
            slate[row, 0] = target
    return slate


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
def test_rollouts_equal_the_full_computation(simulator, mode):
    """Same seed and slates: the same choices, rewards and ends; states within float32 rounding."""
    fast, full = make(simulator, autoreset_mode=mode), make(simulator, incremental=False, autoreset_mode=mode)
    obs_f, _ = fast.reset(seed=7)
    obs_s, _ = full.reset(seed=7)
    rng = np.random.default_rng(7)
    clicks = ends = 0
    for _ in range(80):
        slate = slates(fast, rng)
        obs_f, reward_f, term_f, trunc_f, info_f = fast.step(slate)
        obs_s, reward_s, term_s, trunc_s, info_s = full.step(slate)
        for a, b in ((reward_f, reward_s), (term_f, term_s), (trunc_f, trunc_s), (info_f["item"], info_s["item"]),
                     (obs_f["history"], obs_s["history"]), (obs_f["responses"], obs_s["responses"])):
            assert torch.equal(a, b)
        torch.testing.assert_close(obs_f["llm_state"], obs_s["llm_state"], rtol=0, atol=1e-6)
        if mode == AutoresetMode.SAME_STEP:
            torch.testing.assert_close(info_f["final_obs"]["llm_state"], info_s["final_obs"]["llm_state"], rtol=0, atol=1e-6)
        state_f, state_s = fast.user_state, full.user_state
        torch.testing.assert_close(state_f.choice_state, state_s.choice_state, rtol=0, atol=STATE_TOLERANCE)
        torch.testing.assert_close(state_f.interest, state_s.interest, rtol=0, atol=1e-6)
        clicks += int(info_f["clicked"].sum())
        ends += int((term_f | trunc_f).sum())
    assert clicks > 500 and ends > 100


def test_kept_parts_equal_a_rebuild_from_the_state_as_the_window_rolls_over(long_sessions):
    """Sessions of 30 steps, 3-item observation window: the running pooled sum drops each item that
    leaves the window; it and the normaliser equal what the state gives when recomputed."""
    env = make(long_sessions, max_steps=30)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    choice, kept = long_sessions.choice_model, env._incremental
    rolled = 0
    for _ in range(60):
        observation, *_, info = env.step(slates(env, rng))
        state = env.user_state
        window = state.history[:, -3:]
        expected = build_observation(window, state.history_response[:, -3:], env.item_embeddings)["llm_state"]
        torch.testing.assert_close(observation["llm_state"], expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(kept.normaliser, choice.normaliser(state.choice_state, state.consumed), rtol=1e-5, atol=1e-5)
        rolled += int(((state.step > 3) & info["clicked"]).sum())  # a click past the window's length
    assert rolled > 200


def test_resets_read_the_start_table_and_equal_the_replay(simulator):
    """A reset's GRU state, interest and normaliser from the table equal the simulator's own replay,
    with the table on and off (off: the simulator replays, as before)."""
    table = start_table(make(simulator).simulator)
    for enabled in (True, False):
        table.enabled = enabled
        try:
            env = make(simulator)
            before = table.resets
            env.reset(seed=3)
            assert table.resets - before == (N if enabled else 0)
            state = env.user_state
            interest, choice_state = simulator._session_start(state.user, state.prefix_length, state.history)
            torch.testing.assert_close(state.choice_state, choice_state, rtol=0, atol=STATE_TOLERANCE)
            torch.testing.assert_close(state.interest, interest, rtol=0, atol=1e-6)
            expected = simulator.choice_model.normaliser(choice_state, state.consumed)
            torch.testing.assert_close(env._incremental.normaliser, expected, rtol=1e-5, atol=1e-5)
        finally:
            table.enabled = True


def test_a_choice_model_replaced_after_the_env_was_built_gets_its_own_starts():
    """Resets after ``simulator.choice_model`` was replaced start from the new model's states (its own
    start table), not from the table of the model the env was built with."""
    simulator = learned_simulator(choice=WINDOW4)
    env = make(simulator)
    env.reset(seed=3)
    before = env.user_state.choice_state.clone()
    changed = copy.deepcopy(simulator.choice_model)
    with torch.no_grad():
        changed.model.network.gru.weight_hh_l0.mul_(-1.0)
    simulator.choice_model = changed
    env.reset(seed=3)
    state = env.user_state
    assert start_table(simulator).resets == N
    _, choice_state = simulator._session_start(state.user, state.prefix_length, state.history)
    assert not torch.allclose(before, state.choice_state, atol=1e-3)
    torch.testing.assert_close(state.choice_state, choice_state, rtol=0, atol=STATE_TOLERANCE)
    expected = changed.normaliser(choice_state, state.consumed)
    torch.testing.assert_close(env._incremental.normaliser, expected, rtol=1e-5, atol=1e-5)


def test_a_step_recomputes_only_the_clicked_and_reset_rows(simulator, monkeypatch):
    """The catalogue-wide normaliser runs for the rows whose state changed, never for every user."""
    env = make(simulator)
    choice = simulator.choice_model
    rows_seen: list[int] = []
    original = type(choice).normaliser

    def counting(self, choice_state, consumed):
        rows_seen.append(choice_state.shape[0])
        return original(self, choice_state, consumed)

    monkeypatch.setattr(type(choice), "normaliser", counting)
    table = start_table(simulator)
    assert table is not None and table.enabled
    env.reset(seed=5)
    assert sum(rows_seen) == 0  # the table holds the resets' normalisers
    rng = np.random.default_rng(5)
    for _ in range(20):
        rows_seen.clear()
        *_, info = env.step(slates(env, rng))
        assert sum(rows_seen) == int(info["clicked"].sum())


def test_same_seed_same_rollout_and_resume_from_get_state(simulator):
    a, b = make(simulator), make(simulator)
    a.reset(seed=9)
    b.reset(seed=9)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    for _ in range(15):
        out_a, out_b = a.step(slates(a, rng_a)), b.step(slates(b, rng_b))
        for key in out_a[0]:
            assert torch.equal(out_a[0][key], out_b[0][key])
        assert torch.equal(out_a[1], out_b[1]) and torch.equal(out_a[4]["item"], out_b[4]["item"])
    saved, rng_saved = a.get_state(), copy.deepcopy(rng_a)
    resumed = make(simulator)
    resumed.set_state(saved)
    for _ in range(15):
        slate = slates(a, rng_a)
        assert torch.equal(slate, slates(resumed, rng_saved))
        out_a, out_r = a.step(slate), resumed.step(slate)
        assert torch.equal(out_a[1], out_r[1]) and torch.equal(out_a[4]["item"], out_r[4]["item"])
        assert torch.equal(out_a[0]["history"], out_r[0]["history"])
        torch.testing.assert_close(out_a[0]["llm_state"], out_r[0]["llm_state"], rtol=0, atol=1e-6)


def test_static_shapes_keep_the_full_computation():
    """Forced static shapes (the accelerator path, here on the CPU): nothing is selected by row."""
    simulator = learned_simulator(choice=WINDOW4)
    simulator.static_shapes = True
    env = RecommendationVectorEnv(8, simulator=simulator, max_steps=3)
    assert env._incremental is None
    env.reset(seed=0)
    for step in range(6):
        env.step(torch.full((8,), step))
