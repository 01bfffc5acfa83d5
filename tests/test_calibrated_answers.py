"""Calibrated answers and rounded likes of the logged users (env -v2) against the -v1 ones.

Tiny logged users (tests/_choice_fixtures.py), never MovieLens, except the registered-id checks on a
tiny MovieLens-format folder.
"""

from __future__ import annotations

import hashlib
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env

import recarena.simulators as simulators
from recarena.core.errors import ConfigError
from recarena.data.splits import leave_last_out
from recarena.envs import RecommendationEnv
from recarena.simulators.answers import (
    AnswerCalibration,
    answer_noise,
    answer_probabilities,
    answer_uniform,
    calibrated_answers,
    fit_answer_calibration,
)
from recarena.simulators.behaviour import reward_function
from tests._choice_fixtures import (
    QUICK_SEQUENCE,
    TableModel,
    cycle_log,
    cycle_sequences,
    group_embeddings,
    in_group_ratings,
    next_in_group,
    write_ratings_folder,
)
from tests._env_fixtures import trajectory_digest


def tiny_simulator(name: str = "logged", ratings: torch.Tensor | None = None, **options):
    """The logged simulator ``name`` on the tiny cycle log (its leave-last-out split), with a fixed rating table."""
    log = cycle_log()
    table = in_group_ratings(log.n_users) if ratings is None else ratings
    components = {"item_embeddings": group_embeddings(), "preference_model": TableModel(table)}
    options.setdefault("history_length", 6)
    options.setdefault("choice", {"sequence": QUICK_SEQUENCE})
    return simulators.make(name, leave_last_out(log), sampler={"min_prefix": 2}, components=components, **options)


@pytest.fixture(scope="module")
def v2():
    return tiny_simulator("logged")


# ------------------------------------------------------------------------------ the ordinal fit


@pytest.mark.parametrize("truth", [(1.0, 0.0, 1.0), (1.3, -0.8, 0.7), (0.6, 1.5, 1.4)])
def test_the_ordinal_fit_recovers_known_parameters(truth):
    a, b, sd = truth
    rng = np.random.default_rng(1)
    predicted = rng.uniform(1.5, 4.8, 30_000)
    z = rng.standard_normal(predicted.shape)
    ratings = np.clip(np.floor(a * predicted + b + sd * z + 0.5), 1, 5)
    fitted = fit_answer_calibration(predicted, ratings)
    assert fitted.a == pytest.approx(a, abs=0.04)
    assert fitted.b == pytest.approx(b, abs=0.12)
    assert fitted.sd == pytest.approx(sd, abs=0.04)
    assert fitted.info["log_loss"] <= fitted.info["log_loss_start"]
    assert fitted.info["real_like_rate"] == pytest.approx(float((ratings >= 4).mean()))
    assert fitted.info["calibrated_like_rate"] == pytest.approx(fitted.info["real_like_rate"], abs=0.01)


def test_the_ordinal_fit_refuses_too_few_or_mismatched_events():
    with pytest.raises(ValueError, match="at least 3"):
        fit_answer_calibration([3.0, 4.0, 2.0], [4.0, np.nan, 3.0])
    with pytest.raises(ValueError, match="differ in shape"):
        fit_answer_calibration([3.0, 4.0], [4.0])


def test_answer_probabilities_are_the_ordered_probit_and_match_the_draws():
    calibration = AnswerCalibration(1.1, -0.2, 0.8)
    predicted = torch.tensor([1.0, 2.7, 3.5, 4.9], dtype=torch.float64)
    mass = answer_probabilities(predicted, calibration)
    assert torch.allclose(mass.sum(-1), torch.ones(4, dtype=torch.float64))
    mu = 1.1 * 2.7 - 0.2
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    expected = [phi((1.5 - mu) / 0.8)] + [phi((r + 0.5 - mu) / 0.8) - phi((r - 0.5 - mu) / 0.8) for r in (2, 3, 4)]
    expected.append(1 - phi((4.5 - mu) / 0.8))
    assert mass[1].tolist() == pytest.approx(expected, abs=1e-12)
    # The drawn answers of many (user, item) pairs follow it.
    users, items = torch.arange(400).unsqueeze(1), torch.arange(500).unsqueeze(0)
    draws = calibrated_answers(torch.full((400, 500), 2.7), answer_noise(3, users, items), calibration)
    shares = [float((draws == r).double().mean()) for r in range(1, 6)]
    assert shares == pytest.approx(expected, abs=0.005)


# ------------------------------------------------------------------------------ fixed draws


def _reference_uniform(seed: int, user: int, item: int) -> float:
    """answer_uniform in plain Python integers (no tensor, no overflow): the counter-based hash."""
    mask = 0xFFFFFFFF

    def mix(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) & mask
        x ^= x >> 15
        x = (x * 0x846CA68B) & mask
        return x ^ (x >> 16)

    seed_word = mix((seed & mask) ^ mix((seed >> 32) & mask))
    word = mix(((user + 0x9E3779B9) & mask) ^ seed_word)
    word = mix(((word + (item & mask) + 0x7F4A7C15) & mask) ^ 0x85EBCA6B)
    return (word + 0.5) / 2.0**32


def test_draws_are_a_fixed_function_of_seed_user_and_item_whatever_the_batch_layout():
    users, items = torch.arange(37).unsqueeze(1), torch.arange(53).unsqueeze(0)
    grid = answer_noise(11, users, items)
    flat = answer_noise(11, users.expand(37, 53).reshape(-1), items.expand(37, 53).reshape(-1)).view(37, 53)
    order = torch.randperm(37 * 53, generator=torch.Generator().manual_seed(0))
    shuffled = answer_noise(11, users.expand(37, 53).reshape(-1)[order], items.expand(37, 53).reshape(-1)[order])
    assert torch.equal(grid, flat)
    assert torch.equal(grid.reshape(-1)[order], shuffled)
    assert torch.equal(grid[5:9, 20:30], answer_noise(11, users[5:9], items[:, 20:30]))
    big = 2**40 + 7  # seeds above 32 bits count
    for seed, user, item in [(0, 0, 0), (11, 36, 52), (big, 6039, 3705), (2**63 - 1, 1, 2)]:
        got = float(answer_uniform(seed, torch.tensor(user), torch.tensor(item)))
        assert got == _reference_uniform(seed, user, item)  # exact: integer hash, one float64 division
    assert not torch.equal(grid, answer_noise(12, users, items))
    assert abs(float(grid.mean())) < 0.1 and abs(float(grid.std()) - 1.0) < 0.05


def test_the_simulator_answers_each_user_item_pair_once_and_the_table_equals_the_batched_draw(v2):
    assert v2.calibration is not None and v2.answer_table is not None and v2.like_threshold == 3.5
    users = torch.arange(v2.rating_table.shape[0]).unsqueeze(1)
    items = torch.arange(v2.n_items).unsqueeze(0)
    expected = calibrated_answers(v2.rating_table, answer_noise(v2.answer_seed, users, items), v2.calibration)
    assert torch.equal(v2.answer_table, expected)
    # The on-the-fly path (no table) gives the same answers, in any slate layout, twice.
    state = v2.start_from(torch.tensor([0, 1, 2, 0]), torch.Generator().manual_seed(0), prefix=torch.tensor([2, 2, 2, 2]))
    slate = torch.tensor([[30, 31, 32], [3, 4, 5], [17, 18, 19], [32, 30, 31]])
    table_answers = v2.model_answers(state.user, slate, v2.predicted_ratings(state.user, slate))
    saved, v2.answer_table = v2.answer_table, None
    try:
        fly = v2.model_answers(state.user, slate, v2.predicted_ratings(state.user, slate))
    finally:
        v2.answer_table = saved
    assert torch.equal(table_answers, fly)
    assert torch.equal(table_answers[0, [2, 0, 1]], table_answers[3])
    assert set(torch.unique(table_answers).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_the_fitted_calibration_is_in_the_run_metadata(v2):
    import json

    from recarena.training.run import simulator_fingerprints

    record = json.loads(json.dumps(simulator_fingerprints(v2)))
    answers = record["choice_fit"]["answers"]
    assert (answers["a"], answers["b"], answers["sd"]) == (v2.calibration.a, v2.calibration.b, v2.calibration.sd)
    assert record["config"]["answers"] == "calibrated" and record["config"]["like_rounding"] is True


def test_the_answer_seed_is_an_option_and_the_env_seed_does_not_change_the_answers():
    other = tiny_simulator("logged", answer_seed=5)
    base = tiny_simulator("logged")
    assert other.calibration.to_dict()["a"] == base.calibration.to_dict()["a"]
    assert not torch.equal(other.answer_table, base.answer_table)
    before = base.answer_table.clone()
    env = RecommendationEnv(simulator=base)
    env.reset(seed=123)
    env.step(0)
    assert torch.equal(base.answer_table, before)
    with pytest.raises(ConfigError, match="answers"):
        tiny_simulator("logged", answers="drawn")
    with pytest.raises(ConfigError, match="answer_seed"):
        tiny_simulator("logged", answer_seed=-1)


# ------------------------------------------------------------------------------ the fit and the like rate


def test_the_calibration_is_fitted_on_validation_ratings_only():
    """Validation ratings 5 or 3 (half each) and every test rating 1: the fit counts the validation ones."""
    sequences = cycle_sequences()
    for user, events in enumerate(sequences):
        events[-2] = (events[-2][0], 5.0 if user % 2 else 3.0)  # leave-last-out: the validation event
        events[-1] = (events[-1][0], 1.0)  # the test event
    from tests._eval_fixtures import make_log

    log = make_log(sequences, 36)
    components = {"item_embeddings": group_embeddings(), "preference_model": TableModel(in_group_ratings(log.n_users))}
    sim = simulators.make("logged", leave_last_out(log), sampler={"min_prefix": 2}, history_length=6,
                          choice={"sequence": QUICK_SEQUENCE}, components=components)
    answers = sim.choice_fit["answers"]
    assert answers["info"]["events"] == "validation" and answers["info"]["n_events"] == log.n_users
    assert answers["info"]["real_like_rate"] == 0.5  # no test rating (all 1) counted
    assert 3.0 < answers["a"] * 4.5 + answers["b"] < 5.0  # the validation ratings' middle (test: 1)
    assert answers["info"]["log_loss"] < answers["info"]["log_loss_start"]


def test_the_like_rate_of_model_answered_picks_matches_the_fitted_distribution(v2):
    """Rollouts: among chosen items the model answered (no boredom), the share liked equals the mean
    calibrated like probability of those (user, item) pairs."""
    # No fatigue (no boredom); every answer from the model; a rating table of many levels.
    ratings = torch.linspace(2.0, 4.6, 36).repeat(60, 1)
    sim = tiny_simulator("logged", ratings=ratings, mode="model-only", interest={"fatigue_gain": 0.0})
    env = RecommendationEnv(simulator=sim, slate_size=3, max_steps=30)
    rng = np.random.default_rng(0)
    liked, expected = [], []
    for seed in range(60):
        observation, _ = env.reset(seed=seed)
        user = int(env._batch.user_state.user[0])
        for _ in range(30):
            mask = env.action_masks()
            if mask.sum() < 3:
                break
            slate = rng.choice(np.flatnonzero(mask), size=3, replace=False)
            likely = next_in_group(int(observation["history"][-1]))
            if mask[likely] and likely not in slate:
                slate[0] = likely  # users pick their cycle's next item: clicks
            observation, _, terminated, truncated, info = env.step(slate)
            if info["clicked"]:
                assert not info["from_log"]
                liked.append(info["liked"])
                predicted = sim.rating_table[user, info["item"]]
                expected.append(float(answer_probabilities(predicted, sim.calibration)[3:].sum()))
            if terminated or truncated:
                break
    assert len(liked) >= 150
    standard_error = math.sqrt(np.mean(expected) * (1 - np.mean(expected)) / len(liked))
    assert abs(np.mean(liked) - np.mean(expected)) < 4 * standard_error + 0.02


# ------------------------------------------------------------------------------ rounding of likes


def _logged_four(sim):
    """(state, slate) of a user one step before a logged rating of 4 in their future, with fatigue 1 on every topic."""
    log = sim.log
    for user in range(log.n_users):
        start, end = log.user_offsets[user], log.user_offsets[user + 1]
        for position in range(3, end - start):
            if log.rating[start + position] == 4.0:
                state = sim.start_from(torch.tensor([user]), torch.Generator().manual_seed(0), prefix=torch.tensor([position]))
                state.interest.fill_(1.0)
                return state, torch.tensor([[int(log.item[start + position])]])
    raise AssertionError("no logged 4 in the tiny log")


@pytest.mark.parametrize(("name", "liked"), [("logged", True), ("logged-v1", False)])
def test_a_logged_four_under_a_small_boredom_penalty_is_liked_in_v2_only(name, liked):
    sim = tiny_simulator(name)
    sim.response_penalty = 0.014  # the fitted ML-1M penalty
    state, slate = _logged_four(sim)
    clicks = 0
    for seed in range(200):
        outcome = sim.step(state.clone(), slate, torch.Generator().manual_seed(seed))
        if bool(outcome.clicked[0]):
            clicks += 1
            assert bool(outcome.from_log[0]) and 3.9 < float(outcome.response[0]) < 4.0
            assert bool(outcome.liked[0]) is liked
            assert float(outcome.reward[0]) == float(liked)
    assert clicks >= 5
    value = sim.expected_reward(state, slate)
    click = sim.expected_reward(state, slate, reward="click")
    assert float(value[0, 0]) == pytest.approx(float(click[0, 0]) if liked else 0.0)


# ------------------------------------------------------------------------------ expected reward


def test_expected_reward_equals_the_monte_carlo_like_rate_over_the_hidden_draws():
    """expected_reward never reads the draw: over many answer seeds (populations), the mean reward of
    a one-item slate equals it, for model-answered and log-answered items."""
    ratings = torch.linspace(2.0, 4.6, 36).repeat(60, 1)  # a spread of predictions: like rates 0.1 .. 0.9
    sim = tiny_simulator("logged", ratings=ratings)
    sim.response_penalty = 0.4  # boredom moves the threshold: fatigue matters
    rows = 48
    state = sim.start_from(torch.full((rows,), 7), torch.Generator().manual_seed(0), prefix=torch.full((rows,), 3))
    state.interest.copy_(torch.linspace(-0.5, 2.0, state.interest.numel()).view_as(state.interest))
    unconsumed = torch.nonzero(~state.consumed[0]).squeeze(1)
    items = unconsumed[torch.linspace(0, len(unconsumed) - 1, rows).long()].unsqueeze(1)
    for reward in ("like", "rating"):
        expected = sim.expected_reward(state, items, reward=reward).squeeze(1)
        total = torch.zeros(rows, dtype=torch.float64)
        n_seeds = 400
        original = sim.reward_fn
        sim.reward_fn = reward_function(reward)
        try:
            for seed in range(n_seeds):
                sim.reseed_answers(seed)
                total += sim.step(state.clone(), items, torch.Generator().manual_seed(seed)).reward.double()
        finally:
            sim.reward_fn = original
            sim.reseed_answers(0)
        monte_carlo = total / n_seeds
        tolerance = 0.06 if reward == "like" else 0.3
        assert torch.allclose(monte_carlo, expected.double(), atol=tolerance), (reward, monte_carlo, expected)
        assert float((monte_carlo - expected.double()).abs().mean()) < tolerance / 3
    # The greedy value does not depend on the draws.
    sim.reseed_answers(99)
    again = sim.expected_reward(state, items)
    sim.reseed_answers(0)
    assert torch.equal(again, sim.expected_reward(state, items))


# ------------------------------------------------------------------------------ -v1 unchanged


def v1_rollout_digest(name: str) -> str:
    """A short rollout (slates of 2) and the greedy values of a -v1 simulator, hashed."""
    sim = tiny_simulator(name)
    env = RecommendationEnv(simulator=sim, slate_size=2, max_steps=20)
    digest, clicks, total = trajectory_digest(env, seed=4, steps=300)
    state = sim.start_from(torch.arange(6), torch.Generator().manual_seed(1), prefix=torch.full((6,), 3))
    values = sim.expected_reward(state, torch.arange(36).repeat(6, 1)).numpy()
    return hashlib.sha256(f"{digest} {clicks} {total:.6f}".encode() + values.tobytes()).hexdigest()[:16]


V1_DIGEST = "063f026144670f85"
"""``v1_rollout_digest("logged")`` recorded with the code before -v2 (commit d35f468), where "logged" was -v1."""


V2_DIGEST = "dad4135b43549f96"
"""``v1_rollout_digest("logged")`` recorded with the code before -v3 (commit 3dd83f0), where "logged" was -v2."""


def test_v1_is_bit_identical_to_before():
    assert v1_rollout_digest("logged-v1") == V1_DIGEST
    assert v1_rollout_digest("logged") != V1_DIGEST  # -v2 differs


def test_v2_is_bit_identical_to_before():
    assert v1_rollout_digest("logged-v2") == V2_DIGEST
    assert v1_rollout_digest("logged") != V2_DIGEST  # -v3's users leave by the logged sessions


# ------------------------------------------------------------------------------ registered ids


@pytest.mark.parametrize("env_id", ["recarena/ML100K-v3", "recarena/ML1M-v3", "recarena/ML100K-v2", "recarena/ML1M-v2",
                                    "recarena/ML100K-v1"])
def test_registered_ids_carry_their_version_of_the_answers(env_id, tmp_path_factory):
    folder = write_ratings_folder(tmp_path_factory.mktemp("data"), cycle_sequences(n_users=30))
    quick = {"preference": {"epochs": 1}, "choice": {"sequence": QUICK_SEQUENCE}}
    env = gym.make(env_id, data=str(folder), simulator_config=quick).unwrapped
    calibrated = not env_id.endswith("-v1")
    assert (env.simulator.calibration is not None) is calibrated
    assert env.simulator.like_threshold == (3.5 if calibrated else 4.0)
    assert env.simulator.config.leave.model == ("sessions" if env_id.endswith("-v3") else "patience")
    assert env._fast is not None  # the NumPy single env
    gym_check_env(env, skip_render_check=True)
