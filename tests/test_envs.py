"""Tests of the single-user RecommendationEnv and the registration of the recarena ids."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from recarena import envs
from recarena.core.errors import ConfigError
from recarena.envs import RecommendationEnv
from recarena.envs.observation import build_observation, history_item_mask
from recarena.simulators.base import StepOutcome
from recarena.simulators.synthetic import SyntheticConfig, SyntheticSimulator
from tests._env_fixtures import assert_same, trajectory_digest

NEVER_LEAVE = {"leave": {"no_click_cost": 0.0, "dislike_cost": 0.0, "hazard": 0.0}}
ALWAYS_LEAVE = {"leave": {"hazard": 1.0}}


def make(**kwargs) -> RecommendationEnv:
    return gym.make("recarena/Synthetic-v0", **kwargs).unwrapped


def rollout(env: gym.Env, seed: int, steps: int) -> list:
    """(observation, reward, terminated, truncated, info) of a fixed-action rollout, resetting on end."""
    rng = np.random.default_rng(123)
    observation, info = env.reset(seed=seed)
    trace = [(observation, info)]
    for _ in range(steps):
        action = _valid_action(env, rng)
        result = env.step(action)
        trace.append(result)
        if result[2] or result[3]:
            trace.append(env.reset())
    return trace


def _valid_action(env: gym.Env, rng: np.random.Generator):
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return np.int64(rng.integers(space.n))
    return rng.choice(space.nvec[0], size=len(space.nvec), replace=False).astype(np.int64)


# ---------------------------------------------------------------------------------- registration


def test_ids_are_registered_with_lazy_entry_points():
    for env_id in ("recarena/ML100K-v1", "recarena/ML1M-v1", "recarena/ML100K-v0", "recarena/ML1M-v0", "recarena/Synthetic-v0"):
        spec = gym.spec(env_id)
        assert spec.entry_point == "recarena.envs.recommendation_env:RecommendationEnv"
        assert spec.vector_entry_point == "recarena.envs.vector_env:RecommendationVectorEnv"
    assert set(envs.ENV_KWARGS) <= set(gym.registry)
    before = {env_id: gym.spec(env_id) for env_id in envs.ENV_KWARGS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is registered again
        envs.register_envs()  # idempotent: no "overriding" re-registration
    assert all(gym.spec(env_id) is spec for env_id, spec in before.items())


@pytest.mark.parametrize("slate_size", [1, 3])
def test_synthetic_passes_both_env_checkers(slate_size):
    gym_check_env(make(slate_size=slate_size), skip_render_check=True)
    sb3_check_env(make(slate_size=slate_size), warn=True)


def test_spaces_follow_options():
    env = make(slate_size=1)
    assert env.action_space == gym.spaces.Discrete(env.n_items)
    env = make(slate_size=4, history_length=7, observation_keys=["llm_state", "history"])
    assert isinstance(env.action_space, gym.spaces.MultiDiscrete)  # what SB3 and Gymnasium dispatch on
    assert list(env.action_space.nvec) == [env.n_items] * 4
    samples = [env.action_space.sample() for _ in range(200)]
    assert all(len(set(s.tolist())) == 4 and env.action_space.contains(s) for s in samples)
    assert not env.action_space.contains(np.array([1, 2, 1, 3]))
    assert set(env.observation_space.spaces) == {"history", "llm_state"}
    assert env.observation_space["history"].shape == (7,)
    observation, _ = env.reset(seed=0)
    assert set(observation) == {"history", "llm_state"}
    assert env.observation_space.contains(observation)


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="unknown env option"):
        make(slate=3)
    with pytest.raises(ConfigError, match="reward"):
        make(reward="money")
    with pytest.raises(ConfigError, match="observation_keys"):
        make(observation_keys=["history", "mood"])
    with pytest.raises(ConfigError, match="max_steps"):
        make(max_steps=0)
    with pytest.raises(ConfigError, match="history_length"):
        make(history_length=50, simulator_config={"history_length": 10})
    with pytest.raises(ConfigError, match="unknown simulator"):
        make(simulator="nonexistent")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(max_steps=0), r"^max_steps: must be >= 1, got 0$"),
        (dict(max_steps=2**70), r"^max_steps: must be <= 9223372036854775807, got 1180591620717411303424$"),
        (dict(slate_size=np.uint64(2**64 - 1)), r"^slate_size: must be <= 9223372036854775807, got 18446744073709551615$"),
        (dict(slate=3), r"^unknown env option\(s\) \['slate'\] \(did you mean 'slate_size'\?\); the options are"),
        (dict(simulator_config={"leave": {"hazard": 2}}), r"^simulator_config\.leave\.hazard: must be <= 1\.0, got 2$"),
        (dict(simulator_config={"best_item": 500}), r"^simulator_config: best_item must be in \[0, 100\), got 500$"),
        (dict(simulator_config={"choice": {"temp": 1.0}}), r"^unknown config key\(s\) \['simulator_config\.choice\.temp'\]"),
        (
            dict(history_length=30, simulator_config={"history_length": 10}),
            r"^history_length: 30 exceeds the simulator's history length \(simulator_config\.history_length = 10\)",
        ),
        (dict(device="tpu"), r"^device: must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'$"),
        (dict(reward="money"), r"^reward: must be None or one of \['click', 'dwell', 'like', 'rating'\], got 'money'$"),
    ],
)
def test_option_errors_name_the_keyword_argument_as_given(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        gym.make("recarena/Synthetic-v0", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_envs=0), r"^num_envs: must be >= 1, got 0$"),
        (dict(num_envs=2**64), r"^num_envs: must be <= 9223372036854775807, got 18446744073709551616$"),
        (dict(num_envs="4"), r"^num_envs: expected an integer, got '4'$"),
        (dict(num_envs=2, as_numpy="yes"), r"^as_numpy: expected true or false, got 'yes'$"),
        (dict(num_envs=2, autoreset_mode="next"), r"^autoreset_mode: must be an AutoresetMode or one of"),
    ],
)
def test_vector_option_errors_name_the_keyword_argument_as_given(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        gym.make_vec("recarena/Synthetic-v0", vectorization_mode="vector_entry_point", **kwargs)


def test_option_errors_come_before_any_data_is_loaded(monkeypatch):
    """A bad option of a MovieLens id fails at once, not after loading the log and fitting models."""
    import sys

    import recarena.data.logs
    import recarena.simulators.preference_store  # noqa: F401  (its from-imports are patched below too)
    from recarena.envs import common

    def loading(*args, **kwargs):
        raise AssertionError("the data was loaded before the options were checked")

    for name, module in list(sys.modules.items()):  # load_logs and every name it was imported under
        if name.startswith("recarena.") and getattr(module, "load_logs", None) is recarena.data.logs.load_logs:
            monkeypatch.setattr(module, "load_logs", loading)
    monkeypatch.setattr(recarena.simulators.preference_store, "_split", loading)  # the named-data entry
    monkeypatch.setattr(common, "_SIMULATORS", {})  # nothing built earlier in this process
    cases = [
        dict(max_steps=0),
        dict(slate_size=2**64),
        dict(device="tpu"),
        dict(simulator_config={"leave": {"hazard": 2}}),
        dict(simulator_config={"preference": {"epochs": 0}}),
        dict(history_length=30, simulator_config={"history_length": 10}),
    ]
    if not torch.cuda.is_available():
        cases.append(dict(device="cuda"))  # "CUDA is not available here", before the data
    for env_id in ("recarena/ML100K-v0", "recarena/ML1M-v1"):
        for kwargs in cases:
            with pytest.raises(ConfigError, match=next(iter(kwargs)).split("_config")[0]):
                gym.make(env_id, **kwargs)
        with pytest.raises(ConfigError, match="num_envs"):
            gym.make_vec(env_id, num_envs=0, vectorization_mode="vector_entry_point")


# ---------------------------------------------------------------------------------- dynamics


def test_same_seed_two_copies_roll_out_identically_and_seeds_differ():
    a, b = make(slate_size=2), make(slate_size=2)
    trace_a, trace_b = rollout(a, 7, 80), rollout(b, 7, 80)
    assert_same(trace_a, trace_b)
    trace_c = rollout(make(slate_size=2), 8, 80)
    with pytest.raises(AssertionError):
        assert_same(trace_a, trace_c)


def test_reset_seed_restarts_the_same_session():
    env = make()
    first, _ = env.reset(seed=3)
    env.step(0)
    again, _ = env.reset(seed=3)
    assert_same(first, again)


def test_observation_is_the_shared_builder_applied_to_the_user_state():
    env = make(simulator_config=NEVER_LEAVE)
    env.reset(seed=0)
    for item in range(5):
        observation, *_ = env.step(item)
    state = env._batch.user_state
    expected = build_observation(state.history, state.history_response, env.simulator.item_embeddings)
    for key in expected:
        np.testing.assert_allclose(observation[key], expected[key][0].numpy(), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(3))
def test_history_item_mask_matches_a_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n_items = 7
    history = torch.randint(-1, n_items, (12, 9), generator=g)  # padding -1 anywhere, repeats likely
    history[0] = -1
    history[1] = 3
    expected = torch.zeros(12, n_items, dtype=torch.bool)
    for row, items in enumerate(history.tolist()):
        for item in items:
            if item >= 0:
                expected[row, item] = True
    mask = history_item_mask(history, n_items)
    assert mask.dtype == torch.bool and mask.shape == (12, n_items)
    assert torch.equal(mask, expected)
    assert torch.equal(history_item_mask(history[:, :0], n_items), torch.zeros(12, n_items, dtype=torch.bool))


def test_session_cap_truncates_and_leaving_terminates():
    env = make(max_steps=4, simulator_config=NEVER_LEAVE)
    env.reset(seed=0)
    ends = [env.step(step)[2:4] for step in range(4)]
    assert ends == [(False, False)] * 3 + [(False, True)]
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)

    env = make(max_steps=4, simulator_config=ALWAYS_LEAVE)
    env.reset(seed=0)
    _, _, terminated, truncated, _ = env.step(0)
    assert (terminated, truncated) == (True, False)


def test_step_before_reset_raises():
    with pytest.raises(gym.error.ResetNeeded):
        make().step(0)


def test_info_and_action_mask_track_consumed_items():
    env = make(simulator_config=NEVER_LEAVE)
    _, info = env.reset(seed=1)
    mask = info["action_mask"]
    assert mask.dtype == np.bool_ and mask.shape == (env.n_items,)
    np.testing.assert_array_equal(mask, ~env._batch.user_state.consumed[0].numpy())
    assert not mask.all()  # the starting history is consumed
    clicked_item = None
    for item in np.flatnonzero(mask)[:30]:
        _, reward, _, _, info = env.step(int(item))
        assert set(info) == {"action_mask", "clicked", "liked", "from_log", "item", "response"}
        assert info["item"] == (int(item) if info["clicked"] else -1)
        assert reward == float(info["liked"])  # the synthetic simulator's default reward is "like"
        if info["clicked"]:
            clicked_item = int(item)
            assert not info["action_mask"][clicked_item]
    assert clicked_item is not None
    np.testing.assert_array_equal(env.action_masks(), info["action_mask"])
    assert make(mask_consumed=False).reset(seed=1)[1]["action_mask"].all()


@pytest.mark.parametrize("reward", ["click", "like", "rating", "dwell"])
def test_reward_option_is_a_function_of_the_step_outcome(reward):
    env = make(reward=reward, simulator_config=NEVER_LEAVE)
    env.reset(seed=2)
    for item in range(20):
        _, value, _, _, info = env.step(item)
        clicked, response = info["clicked"], info["response"]
        expected = {
            "click": float(clicked),
            "like": float(info["liked"]),
            "rating": response if clicked else 0.0,
            "dwell": response / 5.0 if clicked else 0.0,
        }[reward]
        assert value == pytest.approx(expected)


# ---------------------------------------------------------------------------------- invalid actions


@pytest.mark.parametrize(
    ("slate_size", "action", "error", "message"),
    [
        (1, -1, ValueError, r"expected item indices in \[0, 100\)"),
        (1, 100, ValueError, r"expected item indices in \[0, 100\)"),
        (1, 2.0, TypeError, "integer item indices"),
        (1, float("nan"), TypeError, "integer item indices"),
        (1, np.array([np.nan]), TypeError, "integer item indices"),
        (1, True, TypeError, "bool"),
        (1, "3", TypeError, "integer item indices"),
        (1, np.array([1, 2]), ValueError, "a scalar item index"),
        (3, np.array([1, 2, 1]), ValueError, "3 distinct items"),
        (3, np.array([1, 2]), ValueError, r"shape \(3,\)"),
        (3, np.array([[1, 2, 3]]), ValueError, r"shape \(3,\)"),
        (3, np.array([1, 2, 300]), ValueError, r"\[0, 100\)"),
        (3, np.array([1.0, 2.0, 3.0]), TypeError, "integer item indices"),
    ],
)
def test_invalid_actions_raise_saying_what_was_expected(slate_size, action, error, message):
    env = make(slate_size=slate_size)
    env.reset(seed=0)
    before = env._batch.get_state()
    with pytest.raises(error, match=message):
        env.step(action)
    assert_same(  # a rejected action leaves the user untouched
        {k: v.numpy() for k, v in before["user_state"].items()},
        {k: v.numpy() for k, v in env._batch.get_state()["user_state"].items()},
    )


@pytest.mark.parametrize(
    "action", [2**63, 2**64 - 1, 2**64 + 3, 2**70, -(2**70), np.uint64(2**64 - 1), np.array([2**63], dtype=np.uint64)]
)
def test_actions_beyond_int64_are_reported_as_the_numbers_given(action):
    env = make()
    env.reset(seed=0)
    given = int(np.asarray(action).reshape(-1)[0])
    with pytest.raises(ValueError, match=rf"expected item indices in \[0, 100\), got \[?{given}\b"):
        env.step(action)


class NaNSimulator(SyntheticSimulator):
    """A broken simulator that answers NaN/inf: the env must not pass them on."""

    def step(self, state, slate, generator) -> StepOutcome:
        outcome = super().step(state, slate, generator)
        state.history_response[:, -1] = float("nan")
        state.history_response[:, -2] = float("inf")
        outcome.reward = torch.full_like(outcome.reward, float("nan"))
        outcome.response = torch.full_like(outcome.response, float("inf"))
        return outcome


def test_nan_and_inf_never_reach_observations_or_rewards():
    env = make(simulator=NaNSimulator(SyntheticConfig()))
    env.reset(seed=0)
    for item in range(10):
        observation, reward, terminated, truncated, info = env.step(item)
        assert np.isfinite(reward)
        assert np.isfinite(info["response"])
        for value in observation.values():
            assert np.isfinite(value).all()
        assert env.observation_space.contains(observation)
        if terminated or truncated:
            env.reset()


_PROPERTY_ENV = {}


def _property_env(slate_size: int) -> RecommendationEnv:
    if slate_size not in _PROPERTY_ENV:
        _PROPERTY_ENV[slate_size] = make(slate_size=slate_size, max_steps=15)
    return _PROPERTY_ENV[slate_size]


_ANY_ACTION = st.one_of(
    st.integers(-5, 110),
    st.lists(st.integers(-3, 105), min_size=0, max_size=4).map(lambda xs: np.array(xs, dtype=np.int64)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    slate_size=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**31 - 1),
    actions=st.lists(_ANY_ACTION, max_size=25),
)
def test_property_random_actions_keep_observations_in_space(slate_size, seed, actions):
    env = _property_env(slate_size)
    observation, _ = env.reset(seed=seed)
    assert env.observation_space.contains(observation)
    for action in actions:
        if slate_size == 3 and isinstance(action, (int, np.integer)) and not isinstance(action, bool):
            action = np.array([action, action + 1, action + 2], dtype=np.int64)
        valid = _is_valid(action, slate_size, env.n_items)
        if not valid:
            with pytest.raises((ValueError, TypeError)):
                env.step(action)
            continue
        observation, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(observation)
        assert np.isfinite(reward) and info["action_mask"].shape == (env.n_items,)
        if terminated or truncated:
            observation, _ = env.reset()
            assert env.observation_space.contains(observation)


def _is_valid(action, slate_size: int, n_items: int) -> bool:
    if isinstance(action, (bool, float)):
        return False
    array = np.asarray(action)
    if array.dtype.kind not in "iu":
        return False
    if slate_size == 1:
        return array.shape in [(), (1,)] and bool(((array >= 0) & (array < n_items)).all())
    return (
        array.shape == (slate_size,)
        and bool(((array >= 0) & (array < n_items)).all())
        and len(set(array.tolist())) == slate_size
    )


# ---------------------------------------------------------------------------------- SB3


def test_stock_ppo_trains_on_the_single_env_through_gymnasium_make():
    from stable_baselines3 import PPO

    env = gym.make("recarena/Synthetic-v0")
    model = PPO("MultiInputPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    observation, _ = env.reset(seed=0)
    action, _ = model.predict(observation, deterministic=True)
    env.step(action)


def test_maskable_ppo_reads_the_action_mask():
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    env = gym.make("recarena/Synthetic-v0")
    assert is_masking_supported(env)
    env.reset(seed=0)
    np.testing.assert_array_equal(get_action_masks(env), env.unwrapped.action_masks())
    model = MaskablePPO("MultiInputPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    assert model.num_timesteps >= 128


# ---------------------------------------------------------------------------------- MovieLens ids

QUICK_PREFERENCE = {"preference": {"epochs": 1}}
"""A quickly fitted preference model (cached in $RECARENA_CACHE after the first run; same step cost)."""


QUICK_CHOICE = {"choice": {"sequence": {"epochs": 1}}}
"""A quickly fitted next-item model for the learned choice (v1 ids)."""


@pytest.mark.parametrize(
    "env_id",
    [
        "recarena/ML100K-v0",
        pytest.param("recarena/ML1M-v0", marks=pytest.mark.slow),
        pytest.param("recarena/ML100K-v1", marks=pytest.mark.slow),
        pytest.param("recarena/ML1M-v1", marks=pytest.mark.slow),
    ],
)
def test_movielens_ids_pass_both_env_checkers_and_answer_from_the_log(env_id):
    # v1: a user who picks only what they would pick next may pass on many items: keep them in the session
    quick = QUICK_PREFERENCE if env_id.endswith("-v0") else {**QUICK_PREFERENCE, **QUICK_CHOICE, "leave": {"no_click_cost": 0.0}}
    env = gym.make(env_id, simulator_config=quick).unwrapped
    assert env.observation_space["llm_state"].shape == (384,)  # MiniLM item encodings
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)
    # Logged users: recommending items from the user's real future answers from the log.
    env.reset(seed=0)
    state = env._batch.user_state
    log = env.simulator.log
    user, prefix = int(state.user[0]), int(state.prefix_length[0])
    future = log.item[log.user_offsets[user] + prefix : log.user_offsets[user + 1]]
    from_log, clicks = [], 0
    shown = future[:10] if env_id.endswith("-v0") else np.resize(future, 50)  # v1: offer the future repeatedly
    for item in shown:
        observation, reward, terminated, truncated, info = env.step(int(item))
        from_log.append(info["from_log"] or not info["clicked"])
        clicks += int(info["clicked"])
        assert env.observation_space.contains(observation) and np.isfinite(reward)
        if terminated or truncated:
            break
    assert clicks > 0, "the check below needs a click"
    assert all(from_log)  # every consumed item of the real future was answered by the logged rating


MOVIELENS_IDS = sorted(env_id for env_id, kwargs in envs.ENV_KWARGS.items() if kwargs.get("data") in ("ml-100k", "ml-1m"))


@pytest.mark.parametrize("env_id", MOVIELENS_IDS)
def test_every_movielens_id_passes_the_env_checkers_on_a_tiny_data_folder(env_id, tmp_path_factory):
    """Each registered MovieLens id's own simulator and choice model, built on a tiny folder of the
    same format (fast); the ML-sized checks above are marked slow except ML100K-v0."""
    from recarena.simulators.choice import LearnedChoice
    from tests._choice_fixtures import QUICK_SEQUENCE, cycle_sequences, write_ratings_folder

    folder = write_ratings_folder(tmp_path_factory.mktemp("data"), cycle_sequences(n_users=30))
    quick = {"preference": {"epochs": 1}, "choice": {"sequence": QUICK_SEQUENCE}}
    env = gym.make(env_id, data=str(folder), simulator_config=quick).unwrapped
    assert isinstance(env.simulator.choice_model, LearnedChoice) == (not env_id.endswith("-v0"))
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)
    env.reset(seed=0)
    assert env.step(int(np.flatnonzero(env.action_masks())[0]))[1] in (0.0, 1.0)


def test_movielens_env_construction_is_fast_once_cached():
    import time

    gym.make("recarena/ML100K-v0", simulator_config=QUICK_PREFERENCE)  # fits/loads and caches
    start = time.perf_counter()
    gym.make("recarena/ML100K-v0", simulator_config=QUICK_PREFERENCE, slate_size=2)
    assert time.perf_counter() - start < 5.0  # the simulator is shared within the process


# ---------------------------------------------------------------------------------- the NumPy step

TRAJECTORY_CASES = {
    "default": {},
    "slate3_drift_hazard": dict(
        slate_size=3,
        reward="rating",
        simulator_config={
            "n_items": 300,
            "interest": {"drift": 0.1, "boredom_penalty": 0.7, "fatigue_decay": 0.6, "topics": "kmeans", "n_clusters": 7},
            "choice": {"temperature": 0.7, "no_choice_rating": 2.5},
            "leave": {"hazard": 0.05},
        },
    ),
    "slate5_dwell": dict(
        slate_size=5,
        reward="dwell",
        observation_keys=("history", "responses"),
        mask_consumed=False,
        history_length=10,
        max_steps=17,
        simulator_config={"n_topics": 19, "leave": {"like_bonus": 1.0, "initial_patience": 3.0}},
    ),
    "click_events": dict(
        reward="click", history_length=4, simulator_config={"sampler": {"weighting": "events"}, "history_length": 30}
    ),
}
"""Synthetic-v0 options whose rollouts cover every branch of the single env's NumPy step."""

RECORDED_DIGESTS = {
    "default": ("48e0cdf205fb1d4c", 199, 98.0),
    "slate3_drift_hazard": ("9207d337ecbb862e", 352, 1334.943),
    "slate5_dwell": ("55aa9a7e11c76ad2", 350, 269.752),
    "click_events": ("67d367cce19a7ead", 194, 194.0),
}
"""``trajectory_digest(env, seed=5, steps=400)`` of each case, recorded from the batched torch step
(before the single env stepped in NumPy): the same seed must keep giving the same rollout."""


@pytest.mark.parametrize("case", sorted(TRAJECTORY_CASES))
def test_single_env_rollouts_match_those_recorded_before_the_numpy_step(case):
    env = gym.make("recarena/Synthetic-v0", **TRAJECTORY_CASES[case])
    assert env.unwrapped._fast is not None  # the NumPy step is the one being checked
    assert trajectory_digest(env, seed=5, steps=400) == RECORDED_DIGESTS[case]


def _batched(env: RecommendationEnv) -> RecommendationEnv:
    env._fast = None  # step the batch of one through the vector env's torch path
    return env


def _rollout_with_statistics(env: RecommendationEnv, seed: int, steps: int) -> tuple[list, dict]:
    env.simulator.reset_statistics()
    trace = rollout(env, seed, steps)
    trace.append(env.action_masks())
    return trace, env.simulator.statistics()


@pytest.mark.parametrize("case", sorted(TRAJECTORY_CASES))
def test_numpy_step_equals_the_batched_torch_step(case):
    kwargs = TRAJECTORY_CASES[case]
    fast, slow = make(**kwargs), _batched(make(**kwargs))
    assert fast._fast is not None
    trace_fast, statistics_fast = _rollout_with_statistics(fast, 3, 300)
    trace_slow, statistics_slow = _rollout_with_statistics(slow, 3, 300)
    assert_same(trace_fast, trace_slow)
    assert statistics_fast == statistics_slow
    # the state the NumPy step leaves is the vector env's own, tensor for tensor
    state_fast, state_slow = fast._batch.get_state(), slow._batch.get_state()
    assert_same(
        {k: v.numpy() for k, v in state_fast["user_state"].items()} | {"steps": state_fast["steps"].numpy()},
        {k: v.numpy() for k, v in state_slow["user_state"].items()} | {"steps": state_slow["steps"].numpy()},
    )


def test_a_deep_copy_of_the_single_env_steps_on_its_own_state():
    import copy

    env = make(simulator_config=NEVER_LEAVE, max_steps=500)
    env.reset(seed=0)
    for item in range(5):
        env.step(item)
    twin = copy.deepcopy(env)
    for item in range(5, 40):
        assert_same(env.step(item), twin.step(item))
    state, twin_state = env._batch.get_state(), twin._batch.get_state()
    assert_same(
        {k: v.numpy() for k, v in state["user_state"].items()},
        {k: v.numpy() for k, v in twin_state["user_state"].items()},
    )
    assert env.simulator.statistics() == twin.simulator.statistics()


def test_numpy_step_rejects_the_same_actions_with_the_same_errors():
    for slate_size, validate in [(1, True), (3, True), (3, False)]:
        fast = make(slate_size=slate_size, validate_actions=validate)
        slow = _batched(make(slate_size=slate_size, validate_actions=validate))
        for env in (fast, slow):
            env.reset(seed=0)
        bad = [-1, 100, 2**63, 2**64 + 1] if slate_size == 1 else [np.array([1, 2, 100]), np.array([-1, 2, 3])]
        if validate and slate_size > 1:
            bad.append(np.array([4, 4, 5]))
        for action in bad:
            messages = []
            for env in (fast, slow):
                with pytest.raises(ValueError) as error:
                    env.step(action)
                messages.append(str(error.value))
            assert messages[0] == messages[1], action
    duplicates = make(slate_size=3, validate_actions=False)  # as in the vector env: not checked
    duplicates.reset(seed=0)
    duplicates.step(np.array([4, 4, 5]))


def test_choice_noise_drawn_ahead_equals_one_draw_per_step():
    """torch's uniforms are one stream however they are batched, and its Gumbel transform of a long
    tensor equals that of short ones: what lets the NumPy step draw the choice noise ahead."""
    from recarena.envs.single_user import _gumbel

    ahead = _gumbel(torch.rand(4096, generator=torch.Generator().manual_seed(1)))
    generator, parts = torch.Generator().manual_seed(1), []
    for size in [2, 3, 1, 4, 6, 2] * 200:
        parts.append(_gumbel(torch.rand((1, size), generator=generator)).reshape(-1))
    per_step = np.concatenate(parts)
    np.testing.assert_array_equal(ahead[: len(per_step)], per_step)


def test_the_batched_path_steps_what_the_numpy_step_does_not_know():
    assert make(simulator=NaNSimulator(SyntheticConfig()))._fast is None  # overrides step
    assert make(simulator_config={"leave": {"hazard": 0.5}})._fast is not None
    # torch's bmm sums k x T products in topic order below 400 of them only (then a BLAS kernel)
    assert make(slate_size=79, simulator_config={"n_topics": 5})._fast is not None
    assert make(slate_size=80, simulator_config={"n_topics": 5})._fast is None


@pytest.mark.parametrize("options", [{}, {"slate_size": 3, "reward": "rating"}, {"slate_size": 21}])
def test_numpy_step_equals_the_batched_step_on_logged_movielens_users(options):
    """Multi-genre items (19 genres), logged answers, up to 21 x 19 = 399 fatigue products."""
    kwargs = dict(simulator_config=QUICK_PREFERENCE, **options)
    fast = gym.make("recarena/ML100K-v0", **kwargs).unwrapped
    slow = _batched(gym.make("recarena/ML100K-v0", **kwargs).unwrapped)
    assert fast._fast is not None
    trace_fast, statistics_fast = _rollout_with_statistics(fast, 4, 300)
    trace_slow, statistics_slow = _rollout_with_statistics(slow, 4, 300)
    assert_same(trace_fast, trace_slow)
    assert statistics_fast == statistics_slow
    assert statistics_fast["chosen_from_log"] > 0  # the logged answers were exercised too
