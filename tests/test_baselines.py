"""Tests of the baselines (random, most-popular, greedy, SASRec-style sequence model) and the agent registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recarena.agents.baselines import (
    GreedyAgent,
    GreedyConfig,
    MostPopularAgent,
    MostPopularConfig,
    RandomAgent,
    RandomConfig,
    RatingTable,
    SequenceModelAgent,
    SequenceModelConfig,
    history_item_mask,
    preferences_of,
    training_windows,
)
from recarena.agents.registry import agent_config, available_agents, load_agent, make_agent, register_agent
from recarena.core.config import from_dict
from recarena.core.errors import CheckpointError, ConfigError
from recarena.data.interactions import InteractionLog
from tests._baseline_fixtures import make_log, observation


def successor_log(n_items: int = 20, n_users: int = 60, length: int = 12, seed: int = 0) -> InteractionLog:
    rng = np.random.default_rng(seed)
    starts = rng.integers(n_items, size=n_users)
    return make_log([[(int(s) + t) % n_items for t in range(length)] for s in starts], n_items)


SMALL_SASREC = {"max_length": 10, "hidden_dim": 32, "n_heads": 2, "feedforward_dim": 64, "epochs": 12,
                "batch_size": 16, "dropout": 0.1, "learning_rate": 5e-3, "n_negatives": 16,
                "exclude_history": False}


# ------------------------------------------------------------------------------------------- helpers


def test_history_item_mask_marks_history_items_only():
    mask = history_item_mask(torch.tensor([[-1, 2, 0], [-1, -1, -1]]), 4)
    assert mask.tolist() == [[True, False, True, False], [False, False, False, False]]


# -------------------------------------------------------------------------------------------- random


def test_random_is_uniform_and_respects_mask():
    agent = RandomAgent(5, RandomConfig(seed=1))
    obs = observation([[0]] * 4000, 3, 5)
    mask = torch.tensor([True, False, True, True, True]).expand(4000, 5)
    picks = agent.act(obs, 1, mask)[:, 0]
    assert not bool((picks == 1).any())
    counts = torch.bincount(picks, minlength=5)[[0, 2, 3, 4]].to(torch.float64)
    # Chi-square with 3 degrees of freedom: 16.3 is the 0.999 quantile.
    chi2 = float(((counts - 1000.0) ** 2 / 1000.0).sum())
    assert chi2 < 16.3, counts


def test_random_slates_are_distinct_allowed_items():
    agent = RandomAgent(6, RandomConfig(seed=0))
    mask = torch.tensor([[True, True, False, True, True, False]] * 50)
    slates = agent.act(observation([[]] * 50, 3, 6), 3, mask)
    assert slates.shape == (50, 3)
    for row in slates.tolist():
        assert len(set(row)) == 3 and set(row) <= {0, 1, 3, 4}


def test_random_is_deterministic_and_save_load_continues_the_stream(tmp_path):
    obs = observation([[1, 2]] * 3, 4, 8)
    a, b = RandomAgent(8, RandomConfig(seed=7)), RandomAgent(8, RandomConfig(seed=7))
    assert torch.equal(a.scores(obs), b.scores(obs))
    a.save(tmp_path / "random")
    loaded = RandomAgent.load(tmp_path / "random")
    assert torch.equal(loaded.scores(obs), a.scores(obs))
    assert not torch.equal(RandomAgent(8, RandomConfig(seed=8)).scores(obs), RandomAgent(8, RandomConfig(seed=7)).scores(obs))


# -------------------------------------------------------------------------------------- most popular


def test_most_popular_ranks_by_counts_with_ties_by_index():
    # counts: item0 1, item1 3, item2 3, item3 0, item4 2
    log = make_log([[1, 2, 4], [1, 2, 0], [1, 2, 4]], 5)
    agent = MostPopularAgent(5, MostPopularConfig(exclude_history=False)).fit(log)
    assert agent.counts.tolist() == [1, 3, 3, 0, 2]
    ranking = agent.act(observation([[]], 2, 5), 5)[0].tolist()
    assert ranking == [1, 2, 4, 0, 3]


def test_most_popular_liked_counts_and_history_exclusion():
    log = make_log([[0, 1, 2], [0, 1, 3]], 4, ratings=[[5, 2, 4], [5, 1, 4]])
    agent = MostPopularAgent(4, MostPopularConfig(count="liked")).fit(log)
    assert agent.counts.tolist() == [2, 0, 1, 1]
    scores = agent.scores(observation([[0]], 3, 4))
    assert scores[0, 0] == float("-inf")
    assert agent.act(observation([[0]], 3, 4), 1)[0, 0] == 2


def test_most_popular_errors_and_round_trip(tmp_path):
    agent = MostPopularAgent(4)
    with pytest.raises(RuntimeError, match="fit"):
        agent.scores(observation([[0]], 2, 4))
    with pytest.raises(ValueError, match="items"):
        agent.fit(make_log([[0, 1]], 5))
    agent.fit(make_log([[3, 3, 1]], 4))
    agent.save(tmp_path / "pop")
    loaded = load_agent(tmp_path / "pop")
    assert isinstance(loaded, MostPopularAgent)
    obs = observation([[1]], 2, 4)
    assert torch.equal(loaded.scores(obs), agent.scores(obs))


# -------------------------------------------------------------------------------------------- greedy


def _rating_table() -> torch.Tensor:
    return torch.tensor([[1.0, 5.0, 3.0, 4.0], [4.5, 2.0, 3.0, 1.0], [2.0, 2.0, 4.0, 2.0]])


def test_greedy_picks_the_highest_predicted_item_for_known_users():
    agent = GreedyAgent(4, GreedyConfig(exclude_history=False), preference_model=RatingTable(_rating_table()))
    obs = observation([[], [], []], 3, 4)
    obs["user"] = torch.tensor([0, 1, 2])
    assert agent.act(obs, 1)[:, 0].tolist() == [1, 0, 2]
    assert agent.act(obs, 2)[0].tolist() == [1, 3]


def test_greedy_excludes_history_and_falls_back_to_population_mean():
    agent = GreedyAgent(4, preference_model=RatingTable(_rating_table()))
    obs = observation([[1], [2]], 3, 4)
    obs["user"] = torch.tensor([0, -1])  # the second user is unknown: cold start
    expected_population = _rating_table().mean(dim=0)  # [2.5, 3.0, 3.33, 2.33]
    assert torch.allclose(agent.population_scores(), expected_population)
    picks = agent.act(obs, 1)[:, 0].tolist()
    assert picks == [3, 1]  # user 0: best is 1 but it is in the history; cold user: 2 is in the history


def test_greedy_uses_predict_history_when_the_model_has_it():
    class WithHistory(RatingTable):
        def predict_history(self, history, responses):
            return torch.nn.functional.one_hot((history[:, -1] + 1) % 4, 4).to(torch.float32)

    agent = GreedyAgent(4, GreedyConfig(exclude_history=False), preference_model=WithHistory(_rating_table()))
    assert agent.act(observation([[0], [3]], 2, 4), 1)[:, 0].tolist() == [1, 0]


def test_greedy_on_the_synthetic_simulator_matches_true_ratings():
    from recarena import simulators

    simulator = simulators.make("synthetic", n_items=30, n_users=20, events_per_user=10, best_item=4)
    agent = GreedyAgent(30, GreedyConfig(exclude_history=False), preference_model=preferences_of(simulator))
    obs = observation([[0]] * 20, 3, 30)
    obs["user"] = torch.arange(20)
    assert agent.act(obs, 1)[:, 0].tolist() == [4] * 20


def test_greedy_save_load_needs_a_model(tmp_path):
    agent = GreedyAgent(4, preference_model=RatingTable(_rating_table()))
    agent.save(tmp_path / "greedy")
    with pytest.raises(CheckpointError, match="preference_model"):
        GreedyAgent.load(tmp_path / "greedy")
    loaded = load_agent(tmp_path / "greedy", preference_model=RatingTable(_rating_table()))
    obs = observation([[1]], 2, 4)
    assert torch.equal(loaded.scores(obs), agent.scores(obs))
    with pytest.raises(ConfigError, match="preference_model"):
        GreedyAgent(4)


# ----------------------------------------------------------------------------------- sequence model


def _hit_rate_at_1(agent: SequenceModelAgent, n_items: int) -> float:
    histories = [[(s + t) % n_items for t in range(5)] for s in range(n_items)]
    top = agent.act(observation(histories, 8, n_items), 1)[:, 0]
    expected = torch.tensor([(h[-1] + 1) % n_items for h in histories])
    return float((top == expected).to(torch.float32).mean())


@pytest.mark.parametrize("loss", ["full_softmax", "sampled_softmax"])
def test_sequence_model_learns_a_successor_pattern(loss):
    config = from_dict(SequenceModelConfig, {**SMALL_SASREC, "loss": loss, "n_negatives": 8})
    agent = SequenceModelAgent(20, config).fit(successor_log())
    assert _hit_rate_at_1(agent, 20) >= 0.95


def test_untrained_sequence_model_does_not_know_the_pattern():
    agent = SequenceModelAgent(20, from_dict(SequenceModelConfig, SMALL_SASREC))
    assert _hit_rate_at_1(agent, 20) < 0.5


def test_sequence_model_fit_is_deterministic_and_leaves_global_rng_alone():
    config = from_dict(SequenceModelConfig, {**SMALL_SASREC, "epochs": 2})
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = SequenceModelAgent(20, config).fit(successor_log())
    assert torch.equal(torch.random.get_rng_state(), before)
    b = SequenceModelAgent(20, config).fit(successor_log())
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    c = SequenceModelAgent(20, from_dict(SequenceModelConfig, {**SMALL_SASREC, "epochs": 2, "seed": 1})).fit(successor_log())
    assert not torch.equal(a.model.item_embedding, c.model.item_embedding)


def test_sequence_model_scores_do_not_depend_on_padding_or_history_window():
    agent = SequenceModelAgent(20, from_dict(SequenceModelConfig, {**SMALL_SASREC, "epochs": 1}))
    short = agent.scores(observation([[3, 4, 5]], 4, 20))
    long = agent.scores(observation([[3, 4, 5]], 30, 20))  # more padding, window longer than max_length
    assert torch.allclose(short, long, atol=1e-5)
    batch = agent.scores(observation([[3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8]], 12, 20))
    assert torch.allclose(batch[0], short[0], atol=1e-5)


def test_sequence_model_masks_history_and_handles_empty_histories():
    agent = SequenceModelAgent(20, from_dict(SequenceModelConfig, {**SMALL_SASREC, "exclude_history": True}))
    scores = agent.scores(observation([[3, 4], []], 4, 20))
    assert scores[0, 3] == float("-inf") and scores[0, 4] == float("-inf")
    assert bool(torch.isfinite(scores[1]).all())


def test_sequence_model_llm_initialisation_uses_item_encodings():
    encodings = torch.nn.functional.normalize(torch.randn(20, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    config = from_dict(SequenceModelConfig, {**SMALL_SASREC, "epochs": 1, "learning_rate": 1e-9, "hidden_dim": 8})
    agent = SequenceModelAgent(20, config).fit(successor_log(), item_embeddings=encodings)
    weights = agent.model.item_embedding.detach()
    # PCA coordinates preserve the encodings' geometry: item-item similarity correlates strongly.
    centred = encodings - encodings.mean(0)
    corr = torch.corrcoef(torch.stack([(centred @ centred.T).flatten(), (weights @ weights.T).flatten()]))[0, 1]
    assert corr > 0.9
    with pytest.raises(ValueError, match="rows"):
        SequenceModelAgent(20, config).fit(successor_log(), item_embeddings=encodings[:5])


def test_training_windows_shift_targets_by_one():
    log = make_log([[5, 6, 7], [1], [2, 3, 4, 5, 6, 7]], 10, ratings=[[1, 2, 3], [4], [1, 2, 3, 4, 5, 1]])
    inputs, responses, targets = training_windows(log, 4)
    # the 1-event user is skipped; rows sorted by length; padding is -1 (responses 0).
    assert inputs.tolist() == [[-1, -1, 5, 6], [3, 4, 5, 6]]
    assert responses.tolist() == [[0, 0, 1, 2], [2, 3, 4, 5]]
    assert targets.tolist() == [[-1, -1, 6, 7], [4, 5, 6, 7]]


def test_sequence_model_save_load_round_trip(tmp_path):
    agent = SequenceModelAgent(20, from_dict(SequenceModelConfig, {**SMALL_SASREC, "epochs": 2})).fit(successor_log())
    agent.save(tmp_path / "sasrec")
    loaded = load_agent(tmp_path / "sasrec")
    obs = observation([[1, 2, 3], [7]], 6, 20)
    assert torch.equal(loaded.scores(obs), agent.scores(obs))
    assert loaded.fitted and loaded.fit_info["epochs"] == 2


@pytest.mark.parametrize(
    "data, match",
    [
        ({"hidden_dim": 30, "n_heads": 4}, "divisible"),
        ({"dropout": 1.0}, "dropout"),
        ({"epochs": 0}, "epochs"),
        ({"loss": "bpr"}, "full_softmax"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"hidden": 64}, "valid keys"),
        ({"epochs": "ten"}, "integer"),
    ],
)
def test_sequence_model_invalid_configs(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(SequenceModelConfig, data)


# ------------------------------------------------------------------------------------------ registry


def test_registry_lists_and_builds_agents():
    assert {"random", "most_popular", "greedy", "sasrec", "tabular_q", "linear_q"} <= set(available_agents())
    agent = make_agent("random", 5, {"seed": 3})
    assert isinstance(agent, RandomAgent) and agent.config.seed == 3
    assert agent_config("sasrec", {"epochs": 2}).epochs == 2


def test_registry_errors_name_the_problem():
    with pytest.raises(ConfigError, match="available agents"):
        make_agent("nope", 5)
    with pytest.raises(ConfigError, match="valid keys"):
        make_agent("random", 5, {"sed": 3})
    with pytest.raises(ConfigError, match="must be >= 1"):
        make_agent("sasrec", 5, {"n_layers": 0})
    with pytest.raises(ConfigError, match="n_items"):
        make_agent("random", 0)
    with pytest.raises(ValueError, match="already registered"):
        register_agent("random", "recarena.agents.baselines:MostPopularAgent")
    with pytest.raises(ValueError, match="module:ClassName"):
        register_agent("other", "recarena.agents.baselines.RandomAgent")


def test_loading_broken_or_mismatched_agent_directories(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_agent(tmp_path / "missing")
    MostPopularAgent(3).fit(make_log([[0, 1]], 3)).save(tmp_path / "pop")
    with pytest.raises(CheckpointError, match="not a 'random' agent"):
        RandomAgent.load(tmp_path / "pop")
    (tmp_path / "pop" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_agent(tmp_path / "pop")
    (tmp_path / "pop" / "agent.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_agent(tmp_path / "pop")
    meta = {"agent": "random", "format_version": 99, "config": {}, "extra": {}}
    (tmp_path / "pop" / "agent.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version"):
        load_agent(tmp_path / "pop")
