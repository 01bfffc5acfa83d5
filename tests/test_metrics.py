"""Ranking and beyond-accuracy metrics against hand-computed values on a tiny log."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recarena.data.interactions import LogSplit
from recarena.evaluation import metrics
from recarena.evaluation.histories import build_queries, query_batch
from recarena.evaluation.ranking import evaluate_ranking
from tests._eval_fixtures import TINY_SEQUENCES, FixedScoresAgent, last_out_split, make_log, random_embeddings

# Item scores shared by every user; items 2 and 3 tie at 0.5 (the lower index ranks first).
SCORES = [0.9, 0.8, 0.5, 0.5, 0.7, 0.1]
# Ranks by hand (consumed items excluded, ties to the lower index):
# u0 target 3 among {3,4,5}: 4 ahead -> 1        (item 2 ties and has a lower index, but is consumed)
# u1 target 5 among {1,2,3,5}: all ahead -> 3
# u2 target 0 among {0,4,5}: -> 0
# u3 target 2 among {0,1,2,3}: 0, 1 ahead; 3 ties with a higher index -> 2
# u4 target 3 among {2,3,4,5}: 4 ahead, 2 ties with a lower index -> 2
EXPECTED_RANKS = [1, 3, 0, 2, 2]


def tiny_split() -> LogSplit:
    return last_out_split(make_log(TINY_SEQUENCES, n_items=6))


def test_target_ranks_hand_computed() -> None:
    queries = build_queries(tiny_split())
    assert queries.target.tolist() == [3, 5, 0, 2, 3]
    batch = query_batch(queries, np.arange(len(queries)), 4, random_embeddings(6))
    agent = FixedScoresAgent(SCORES)
    ranks = metrics.target_ranks(agent.scores(batch.observation), batch.target, batch.consumed)
    assert ranks.tolist() == EXPECTED_RANKS


def test_metric_formulas() -> None:
    ranks = torch.tensor([0, 1, 3, 9, 10])
    assert metrics.hit_rate(ranks, 10).tolist() == [1, 1, 1, 1, 0]
    assert metrics.hit_rate(ranks, 1).tolist() == [1, 0, 0, 0, 0]
    expected = [1.0, 1 / math.log2(3), 1 / math.log2(5), 1 / math.log2(11), 0.0]
    assert metrics.ndcg(ranks, 10).tolist() == pytest.approx(expected)
    assert metrics.reciprocal_rank(ranks).tolist() == pytest.approx([1, 1 / 2, 1 / 4, 1 / 10, 1 / 11])


def test_evaluate_ranking_on_tiny_log() -> None:
    result = evaluate_ranking(
        FixedScoresAgent(SCORES), build_queries(tiny_split()), random_embeddings(6), k_values=(1, 3), history_length=4
    )
    assert result.per_query_ranks.tolist() == EXPECTED_RANKS
    assert result.metrics["HR@1"] == pytest.approx(1 / 5)
    assert result.metrics["HR@3"] == pytest.approx(4 / 5)
    ndcg3 = (1 / math.log2(3) + 0 + 1 + 1 / math.log2(4) + 1 / math.log2(4)) / 5
    assert result.metrics["NDCG@3"] == pytest.approx(ndcg3)
    assert result.metrics["MRR"] == pytest.approx((1 / 2 + 1 / 4 + 1 + 1 / 3 + 1 / 3) / 5)
    low, high = result.intervals["HR@3"]
    assert 0.0 <= low <= result.metrics["HR@3"] <= high <= 1.0
    assert result.n_queries == 5 and result.n_users == 5
    # Top-3 lists: u0 [4,3,5] u1 [1,2,3] u2 [0,4,5] u3 [0,1,2] u4 [4,2,3] -> all 6 items covered.
    assert result.beyond_accuracy["coverage@3"] == pytest.approx(1.0)


def test_ranking_is_deterministic_and_batch_size_free() -> None:
    queries = build_queries(tiny_split())
    emb = random_embeddings(6)
    a = evaluate_ranking(FixedScoresAgent(SCORES), queries, emb, (2,), history_length=4, batch_size=2)
    b = evaluate_ranking(FixedScoresAgent(SCORES), queries, emb, (2,), history_length=4, batch_size=1024)
    assert a.metrics == b.metrics and a.intervals == b.intervals


def test_consumed_items_are_excluded() -> None:
    # The agent scores consumed items highest; excluded, they must not push the target down.
    scores = torch.tensor([[10.0, 9.0, 1.0, 0.0]])
    consumed = torch.tensor([[True, True, False, False]])
    assert metrics.target_ranks(scores, torch.tensor([2]), consumed).tolist() == [0]
    assert metrics.target_ranks(scores, torch.tensor([2])).tolist() == [2]
    # A target that is also in the consumed mask still gets ranked (never excluded itself).
    assert metrics.target_ranks(scores, torch.tensor([0]), consumed).tolist() == [0]


def test_ties_break_to_lower_index() -> None:
    scores = torch.zeros(1, 5)
    assert [int(metrics.target_ranks(scores, torch.tensor([t]))) for t in range(5)] == [0, 1, 2, 3, 4]
    assert metrics.top_k_items(scores, 3).tolist() == [[0, 1, 2]]


def test_temporal_queries_include_earlier_test_events() -> None:
    log = make_log([[(0, 5.0), (1, 4.0), (2, 3.0), (3, 2.0)]], n_items=5)
    held = np.array([False, False, True, True])
    split = LogSplit(log.select_events(~held), log.select_events(np.zeros(4, bool)), log.select_events(held), "temporal", log)
    queries = build_queries(split)
    assert queries.target.tolist() == [2, 3]
    batch = query_batch(queries, np.arange(2), 3, random_embeddings(5))
    assert batch.observation["history"].tolist() == [[-1, 0, 1], [0, 1, 2]]
    assert batch.consumed.tolist() == [[True, True, False, False, False], [True, True, True, False, False]]
    assert batch.observation["responses"].tolist() == [[0.0, 5.0, 4.0], [5.0, 4.0, 3.0]]


def test_max_users_subsets_deterministically() -> None:
    a = build_queries(tiny_split(), max_users=2, seed=3)
    b = build_queries(tiny_split(), max_users=2, seed=3)
    assert len(a) == 2 and a.user.tolist() == b.user.tolist()
    with pytest.raises(ValueError):
        build_queries(tiny_split(), max_users=0)


def test_beyond_accuracy_metrics() -> None:
    slates = torch.tensor([[0, 1], [1, 2]])
    assert metrics.coverage(slates, 4) == pytest.approx(0.75)
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert metrics.intra_list_diversity(slates, emb).tolist() == pytest.approx([1.0, 0.0])
    # Item 0 seen by 2 of 4 users, item 1 by 1 of 4, item 2 by none (counts as one).
    info = metrics.item_self_information(np.array([0, 0, 1, 0]), np.array([0, 1, 2, 1]), 3, 4)
    assert info.tolist() == pytest.approx([1.0, 2.0, 2.0])
    assert metrics.novelty(slates, info).tolist() == pytest.approx([1.5, 2.0])


def test_bootstrap_interval_is_deterministic_and_covers() -> None:
    values = np.random.default_rng(0).normal(1.0, 1.0, 500)
    a = metrics.bootstrap_mean(values, 500, 0.05, seed=1)
    assert a == metrics.bootstrap_mean(values, 500, 0.05, seed=1)
    assert a[0] < values.mean() < a[1]
    assert a[1] - a[0] == pytest.approx(2 * 1.96 / math.sqrt(500), rel=0.25)


@pytest.mark.parametrize(
    "call",
    [
        lambda: metrics.target_ranks(torch.tensor([[0.1, float("nan")]]), torch.tensor([0])),
        lambda: metrics.target_ranks(torch.zeros(1, 3), torch.tensor([3])),
        lambda: metrics.target_ranks(torch.zeros(2, 3), torch.tensor([0])),
        lambda: metrics.target_ranks(torch.zeros(1, 3), torch.tensor([0]), torch.zeros(1, 2, dtype=torch.bool)),
        lambda: metrics.hit_rate(torch.tensor([0]), 0),
        lambda: metrics.ndcg(torch.tensor([0]), -1),
        lambda: metrics.top_k_items(torch.zeros(1, 3), 4),
        lambda: metrics.intra_list_diversity(torch.tensor([[0]]), torch.eye(2)),
        lambda: metrics.bootstrap_ratio(np.ones(3), np.ones(2)),
        lambda: metrics.bootstrap_mean(np.ones(3), alpha=1.5),
    ],
)
def test_invalid_inputs(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_agent_with_wrong_item_count_is_refused() -> None:
    with pytest.raises(ValueError, match="items"):
        evaluate_ranking(FixedScoresAgent([0.0] * 5), build_queries(tiny_split()), random_embeddings(6))


def test_simulated_return_starts_from_given_users_and_is_deterministic() -> None:
    from recarena import simulators
    from recarena.evaluation.ope_validation import ContentSimilarityAgent
    from recarena.evaluation.simulated import evaluate_simulated

    simulator = simulators.make("synthetic", n_users=20, n_items=30, events_per_user=10)
    agent = ContentSimilarityAgent(simulator.item_embeddings)
    run = lambda: evaluate_simulated(agent, simulator, users=np.arange(8), k=3, max_steps=4, n_bootstrap=50, seed=1)  # noqa: E731
    result = run()
    assert result.users.startswith("held-out users") and result.n_sessions == 8
    assert 1.0 <= result.metrics["session_length"] <= 4.0
    assert 0.0 <= result.metrics["ctr"] <= 1.0 and result.metrics["episodic_return"] >= 0.0
    assert 0.0 < result.metrics["coverage@3"] <= 1.0 and "ILD@3" in result.metrics
    assert result.to_dict() == run().to_dict()
    with pytest.raises(ValueError):
        evaluate_simulated(agent, simulator, users=np.arange(2), k=31)


def test_simulated_sessions_record_the_chosen_items_likes_and_repeats() -> None:
    from recarena import simulators
    from recarena.evaluation.simulated import evaluate_simulated

    class SameSlate:  # shows items 0 and 1 every step, whatever was consumed (so repeats can happen)
        n_items = 30

        def act(self, observation, k, action_mask=None):
            return torch.tensor([[0, 1]]).expand(observation["history"].shape[0], k)

    simulator = simulators.make("synthetic", n_users=20, n_items=30, events_per_user=10, leave={"hazard": 0.0})
    result = evaluate_simulated(SameSlate(), simulator, users=np.arange(8), k=2, max_steps=6, n_bootstrap=20, seed=1)
    clicks = result.per_session["ctr"][0]
    assert [len(items) for items in result.chosen] == clicks.astype(int).tolist()
    assert all(set(items.tolist()) <= {0, 1} for items in result.chosen)
    assert np.all(result.likes <= clicks) and np.all(result.repeats <= clicks)
    assert [len(flags) for flags in result.liked] == [len(items) for items in result.chosen]
    # The third choice of a two-item slate repeats one of the first two at least.
    assert all(result.repeats[i] >= len(items) - 2 for i, items in enumerate(result.chosen))
    assert int(result.repeats.sum()) > 0


def test_graded_ndcg_known_answer_and_single_relevant_case():
    ranked = torch.tensor([[3.0, 0.0, 1.0]])
    ideal = torch.tensor([[3.0, 1.0, 0.0]])
    expected = (3.0 + 1.0 / 2.0) / (3.0 + 1.0 / math.log2(3.0))
    assert float(metrics.graded_ndcg(ranked, ideal, 3)) == pytest.approx(expected)
    assert float(metrics.graded_ndcg(ranked, ideal, 1)) == 1.0  # only the first position counts
    # One relevant item at rank r: the same figure as ndcg(ranks).
    ranks = torch.tensor([0, 2, 5])
    one_hot = torch.nn.functional.one_hot(ranks, 8).double()
    first = torch.zeros(3, 8, dtype=torch.float64)
    first[:, 0] = 1.0
    assert torch.allclose(metrics.graded_ndcg(one_hot, first, 4), metrics.ndcg(ranks, 4))
