"""Replay (Li et al. 2011) on a tiny log with a hand-computable answer."""

from __future__ import annotations

import pytest

from recarena.evaluation.histories import build_queries
from recarena.evaluation.replay import BIAS_NOTE, evaluate_replay
from tests._eval_fixtures import TINY_SEQUENCES, FixedScoresAgent, last_out_split, make_log, random_embeddings

# No ties, so slates are unambiguous. With k = 2 (consumed items excluded):
# u0 {3,4,5} -> [4,3] matches 3 (rating 5, liked)   u1 {1,2,3,5} -> [1,2] misses 5
# u2 {0,4,5} -> [0,4] matches 0 (rating 2, not liked) u3 {0,1,2,3} -> [0,1] misses 2
# u4 {2,3,4,5} -> [4,2] misses 3
SCORES = [0.9, 0.8, 0.5, 0.4, 0.7, 0.1]


def run(k: int = 2, reward: str = "like", **options):
    queries = build_queries(last_out_split(make_log(TINY_SEQUENCES, n_items=6)))
    return evaluate_replay(FixedScoresAgent(SCORES), queries, random_embeddings(6), k=k, reward=reward, history_length=3, **options)


def test_replay_hand_computed() -> None:
    result = run()
    assert result.n_events == 5 and result.n_users == 5
    assert result.n_matched == 2
    assert result.match_rate == pytest.approx(0.4)
    assert result.reward == pytest.approx(0.5)
    low, high = result.interval
    assert 0.0 <= low <= 0.5 <= high <= 1.0
    assert result.note == BIAS_NOTE and "MovieLens" in BIAS_NOTE and "biased" in BIAS_NOTE


def test_replay_rating_reward() -> None:
    assert run(reward="rating").reward == pytest.approx((5.0 + 2.0) / 2)


def test_replay_full_slate_matches_everything() -> None:
    # A slate of every item matches each event, so replay reward = mean logged like rate.
    result = run(k=6)
    assert result.n_matched == 5
    assert result.reward == pytest.approx(3 / 5)  # test ratings 5, 4, 2, 4, 1


def test_replay_no_match_reports_none() -> None:
    result = run(k=1)  # slates [4], [1], [0], [0], [4]: only u2 (target 0) matches
    assert result.n_matched == 1 and result.reward == pytest.approx(0.0)
    queries = build_queries(last_out_split(make_log(TINY_SEQUENCES, n_items=6)))
    never = evaluate_replay(FixedScoresAgent([0.0, 0.0, 0.0, 0.0, 0.0, 9.0]), queries.subset([2]), random_embeddings(6), k=1)
    assert never.n_matched == 0 and never.reward is None and never.interval is None


def test_replay_is_deterministic_and_batch_free() -> None:
    assert run(batch_size=1).to_dict() == run(batch_size=100).to_dict()


@pytest.mark.parametrize("options", [{"k": 0}, {"k": 7}, {"reward": "money"}, {"batch_size": 0}])
def test_replay_invalid_inputs(options) -> None:
    with pytest.raises(ValueError):
        run(**options)
