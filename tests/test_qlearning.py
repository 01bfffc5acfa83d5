"""Tests of tabular Q-learning over a k-means codebook and of linear / bilinear Q-learning."""

from __future__ import annotations

import pytest
import torch

from recarena.agents.item_scorer import next_item_loss
from recarena.agents.qlearning import (
    LinearQAgent,
    LinearQConfig,
    TabularQAgent,
    TabularQConfig,
)
from recarena.agents.registry import load_agent, make_agent
from recarena.core.config import from_dict
from recarena.core.errors import CheckpointError, ConfigError
from recarena.envs import RecommendationVectorEnv
from tests._resume import straight_and_resumed

BEST_ITEM = 7
N_ITEMS = 30


def best_item_env(num_envs: int = 16, slate_size: int = 1) -> RecommendationVectorEnv:
    """Synthetic users who all rate BEST_ITEM 5 and every other item at most 3.5 (never a like)."""
    return RecommendationVectorEnv(
        num_envs=num_envs,
        simulator="synthetic",
        simulator_config={"n_items": N_ITEMS, "n_users": 50, "events_per_user": 10, "best_item": BEST_ITEM, "seed": 0},
        max_steps=20,
        slate_size=slate_size,
    )


class RecordingLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, float, int]] = []

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        self.records.append((tag, value, step))

    def values(self, tag: str) -> list[float]:
        return [value for name, value, _ in self.records if name == tag]


AGENTS = {
    "tabular_q": {"n_states": 8, "codebook_samples": 256, "exploration_steps": 1500},
    "linear_q": {"form": "bilinear", "exploration_steps": 1500},
    "linear_q/per_item": {"form": "per_item", "exploration_steps": 1500},
}
CANDIDATES = 10
"""Candidate-set size of the ``/candidates`` variants. BEST_ITEM is never logged in the synthetic
env, so it is not a candidate: these variants are left out of the known-answer test."""
VARIANTS = {
    **AGENTS,
    "tabular_q/candidates": {**AGENTS["tabular_q"], "candidates": CANDIDATES},
    "linear_q/candidates": {**AGENTS["linear_q"], "candidates": CANDIDATES, "init_scale": 0.1},
}


def build(key: str, log_every: int | None = None, **overrides):
    name = key.split("/")[0]
    return make_agent(name, N_ITEMS, {**VARIANTS[key], **overrides}, log_every=log_every)


def parameters(agent) -> dict[str, torch.Tensor]:
    return agent.checkpoint_state()[0]


def fraction_best(agent, seed: int = 123) -> float:
    env = best_item_env(num_envs=32)
    observation, _ = env.reset(seed=seed)
    picks = agent.act(observation, 1, env.action_masks())[:, 0]
    return float((picks == BEST_ITEM).to(torch.float32).mean())


# --------------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("key", list(AGENTS))
def test_agent_finds_the_obvious_best_item(key):
    agent = build(key, log_every=500)
    assert fraction_best(agent) < 0.5  # untrained: no idea
    logger = RecordingLogger()
    agent.learn(best_item_env(), 3000, logger)
    assert fraction_best(agent) >= 0.9
    returns = logger.values("charts/episodic_return")
    assert returns and returns[-1] > returns[0]
    assert logger.values("losses/td_loss") and logger.values("charts/epsilon")[-1] == pytest.approx(0.05)


def test_tabular_q_fits_its_codebook_after_the_warm_up():
    agent = build("tabular_q")
    agent.learn(best_item_env(), 128)
    assert not agent.fitted and float(agent.q_table.abs().sum()) == 0.0
    agent.learn(best_item_env(), 256)
    assert agent.fitted and agent.centroids.shape == (8, 32)
    assert int(agent.visits.sum()) >= 256  # warm-up transitions were replayed into the table
    assert float(agent.q_table[:, BEST_ITEM].max()) > 0.0


def test_epsilon_decays_linearly():
    agent = build("linear_q", exploration_initial_eps=1.0, exploration_final_eps=0.1, exploration_steps=100)
    assert [agent.epsilon(s) for s in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])


# ------------------------------------------------------------------------------ determinism/resume


@pytest.mark.parametrize("key", list(VARIANTS))
def test_same_seed_gives_identical_parameters(key):
    first, second, other = build(key), build(key), build(key, seed=1)
    for agent in (first, second, other):
        agent.learn(best_item_env(), 600)
    a, b, c = parameters(first), parameters(second), parameters(other)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if k in c and a[k].dtype.is_floating_point)


@pytest.mark.parametrize("key", list(VARIANTS))
def test_resumed_training_matches_uninterrupted_training(key, tmp_path):
    """Agent and env state restored mid-session (as train.py does) continue exactly."""
    # 168: tabular is still warming up at this boundary; users are mid-session
    uninterrupted, resumed = straight_and_resumed(lambda: build(key), best_item_env, 168, 320)
    a, b = parameters(uninterrupted), parameters(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert uninterrupted.steps_done == resumed.steps_done == 496


@pytest.mark.parametrize("key", list(VARIANTS))
def test_save_load_round_trip(key, tmp_path):
    agent = build(key)
    agent.learn(best_item_env(), 400)
    agent.save(tmp_path / "agent")
    loaded = load_agent(tmp_path / "agent", device="cpu")  # evaluate.py passes its device to every run
    assert type(loaded) is type(agent) and loaded.config == agent.config
    observation, _ = best_item_env().reset(seed=5)
    assert torch.equal(loaded.scores(observation), agent.scores(observation))
    a, b = parameters(agent), parameters(loaded)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_scores_exclude_history_and_cover_the_catalogue():
    agent = build("tabular_q")
    agent.learn(best_item_env(), 400)
    observation, _ = best_item_env().reset(seed=1)
    scores = agent.scores(observation)
    assert scores.shape == (16, N_ITEMS)
    history = observation["history"]
    for row in range(16):
        items = history[row][history[row] >= 0]
        assert bool(torch.isinf(scores[row, items]).all()) and int(torch.isfinite(scores[row]).sum()) == N_ITEMS - len(items.unique())


# ------------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    "cls, data, match",
    [
        (TabularQConfig, {"n_states": 0}, ">= 1"),
        (TabularQConfig, {"learning_rate": 1.5}, "learning_rate"),
        (TabularQConfig, {"gamma": 1.2}, "gamma"),
        (TabularQConfig, {"exploration_final_eps": -0.1}, "exploration_final_eps"),
        (TabularQConfig, {"states": 8}, "valid keys"),
        (TabularQConfig, {"candidates": -1}, "candidates"),
        (LinearQConfig, {"form": "deep"}, "bilinear"),
        (LinearQConfig, {"learning_rate": 0}, "learning_rate"),
        (LinearQConfig, {"exploration_steps": 0}, "exploration_steps"),
        (LinearQConfig, {"seed": -1}, "seed"),
    ],
)
def test_invalid_configs(cls, data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(cls, data)


def test_env_mismatches_are_refused():
    with pytest.raises(ConfigError, match="slate_size"):
        build("tabular_q").learn(best_item_env(slate_size=2), 10)
    with pytest.raises(ConfigError, match="items"):
        make_agent("linear_q", N_ITEMS + 1).learn(best_item_env(), 10)
    with pytest.raises(ConfigError, match="item_embeddings"):
        LinearQAgent(N_ITEMS, item_embeddings=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="steps"):
        build("linear_q").learn(best_item_env(), -1)


def test_mismatched_checkpoints_are_refused():
    source = TabularQAgent(N_ITEMS, TabularQConfig(n_states=8, codebook_samples=64))
    source.learn(best_item_env(), 128)
    tensors, metadata = source.checkpoint_state()
    with pytest.raises(CheckpointError, match="q_table"):
        TabularQAgent(N_ITEMS, TabularQConfig(n_states=4)).restore_checkpoint_state(tensors, metadata)
    with pytest.raises(CheckpointError, match="items"):
        TabularQAgent(N_ITEMS + 1, TabularQConfig(n_states=8)).restore_checkpoint_state(tensors, metadata)
    del tensors["generator"]
    with pytest.raises(CheckpointError, match="generator"):
        TabularQAgent(N_ITEMS, TabularQConfig(n_states=8)).restore_checkpoint_state(tensors, metadata)


# ------------------------------------------------------------------------- next-item loss (linear Q)


def test_linear_q_next_item_step_is_the_cross_entropy_gradient():
    env = best_item_env()
    agent = build("linear_q", next_item_coef=2.0, learning_rate=0.05, init_scale=0.1)
    agent.learn(env, 64)  # weights, item encodings and the logged examples come from the env
    weight = agent.weight.clone().requires_grad_(True)
    bias = agent.item_bias.clone().requires_grad_(True)
    draw = agent.generator.get_state()
    observation, target = agent.logged.sample(agent.config.next_item_batch_size, agent.generator)
    agent.generator.set_state(draw)  # the update draws the same examples
    phi = torch.cat([observation["llm_state"], torch.ones(len(target), 1)], dim=1)
    scores = (phi @ weight) @ agent.item_embeddings.T + bias
    next_item_loss(scores, observation["history"], target).backward()
    agent._next_item_update()
    rate = 0.05 * 2.0
    torch.testing.assert_close(agent.weight, weight.detach() - rate * weight.grad)
    torch.testing.assert_close(agent.item_bias, bias.detach() - rate * bias.grad)


def test_tabular_q_next_item_step_moves_each_code_by_its_mean_gradient():
    env = best_item_env()
    agent = build("tabular_q", next_item_coef=2.0, learning_rate=0.5, codebook_samples=64)
    agent.learn(env, 256)  # past the warm-up: the codebook exists
    assert agent.fitted
    before = agent.q_table.clone()
    draw = agent.generator.get_state()
    observation, target = agent.logged.sample(agent.config.next_item_batch_size, agent.generator)
    agent.generator.set_state(draw)
    agent._next_item_update()
    codes = agent.states_of(observation["llm_state"])
    expected = before.clone()
    for code in codes.unique():
        rows = codes == code
        scores = before[code].expand(int(rows.sum()), -1).clone().requires_grad_(True)
        next_item_loss(scores, observation["history"][rows], target[rows]).backward()
        expected[code] -= 0.5 * 2.0 * scores.grad.sum(dim=0)  # the loss is a mean: grad sums to the mean step
    torch.testing.assert_close(agent.q_table, expected)


def test_linear_q_next_item_loss_is_checked_and_needs_logged_users():
    with pytest.raises(ConfigError, match="bilinear"):
        build("linear_q/per_item", next_item_coef=1.0)
    with pytest.raises(ConfigError, match="next_item_coef"):
        build("linear_q", next_item_coef=-1.0)
    agent = build("linear_q", next_item_coef=1.0)
    agent.learn(best_item_env(), 64)
    assert agent.logged is not None


# ------------------------------------------------------------------------------------ candidate set


def logged_counts(env: RecommendationVectorEnv) -> torch.Tensor:
    return torch.bincount(env.logged_sequences.item, minlength=N_ITEMS)


@pytest.mark.parametrize("key", ["tabular_q/candidates", "linear_q/candidates"])
def test_candidates_are_the_most_logged_items_and_rank_first(key):
    env = best_item_env()
    agent = build(key)
    agent.learn(env, 600)
    counts = logged_counts(env)
    expected = torch.zeros(N_ITEMS, dtype=torch.bool)
    expected[torch.argsort(counts, descending=True, stable=True)[:CANDIDATES]] = True
    assert torch.equal(agent.candidate_mask, expected) and not bool(agent.candidate_mask[BEST_ITEM])

    observation, _ = env.reset(seed=3)
    scores = agent.scores(observation)
    for row in scores:
        finite = torch.isfinite(row)  # history items are -inf
        inside, outside = row[finite & expected], row[finite & ~expected]
        assert float(inside.min()) > float(outside.max())
        # outside the set, more logged items score higher
        order = torch.argsort(outside, descending=True)
        assert bool((counts[finite & ~expected][order].diff() <= 0).all())
    picks = agent.act(observation, 1, env.action_masks())[:, 0]
    assert bool(expected[picks].all())


def test_exploration_stays_among_allowed_candidates_unless_none_is_left():
    agent = build("tabular_q/candidates")
    agent.learn(best_item_env(), 64)  # chooses the candidates (still in the warm-up: every pick is random)
    candidates = agent.candidate_mask
    mask = torch.ones(2, N_ITEMS, dtype=torch.bool)
    mask[1, candidates] = False  # user 1 has consumed every candidate
    for _ in range(50):
        picks = agent._explore_or_exploit(torch.zeros(2, N_ITEMS), mask, epsilon=1.0)
        assert bool(candidates[picks[0]]) and not bool(candidates[picks[1]])


def test_next_item_loss_keeps_to_the_candidates():
    env = best_item_env()
    agent = build("tabular_q/candidates", next_item_coef=2.0, learning_rate=0.5, codebook_samples=64)
    agent.learn(env, 256)
    before = agent.q_table.clone()
    draw = agent.generator.get_state()
    observation, target = agent.logged.sample(agent.config.next_item_batch_size, agent.generator)
    agent.generator.set_state(draw)
    agent._next_item_update()
    outside = ~agent.candidate_mask
    assert bool((target[target >= 0] >= 0).all()) and bool(outside[target.clamp(min=0)].any())
    # never moved, not even by the examples whose target is outside
    assert torch.equal(agent.q_table[:, outside], before[:, outside])
    assert not torch.equal(agent.q_table, before)


def test_candidates_need_logged_sequences_and_a_matching_checkpoint():
    class NoLogSimulator:
        pass

    class Env:
        n_items, slate_size, simulator = N_ITEMS, 1, NoLogSimulator()

    with pytest.raises(ConfigError, match="logged sequences"):
        build("tabular_q/candidates").learn(Env(), 10)
    trained = build("tabular_q/candidates")
    trained.learn(best_item_env(), 300)
    tensors, metadata = trained.checkpoint_state()
    del tensors["candidate_mask"]
    with pytest.raises(CheckpointError, match="candidate_mask"):
        build("tabular_q/candidates").restore_checkpoint_state(tensors, metadata)
