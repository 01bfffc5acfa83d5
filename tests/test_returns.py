"""Known answers for the agents' pure RL arithmetic (recarena.agents.returns)."""

import pytest
import torch

from recarena.agents.returns import gae, linear_schedule, td_target

REWARDS = torch.tensor([[1.0], [0.0], [2.0]])
VALUES = torch.tensor([[0.5], [0.4], [0.3]])
LAST = torch.tensor([0.2])
NO_DONES = torch.zeros(3, 1)


def test_gae_by_hand():
    # gamma 0.9, lambda 0.8: deltas 0.86, -0.13, 1.88; A2 = 1.88, A1 = -0.13 + 0.72 * 1.88, A0 = 0.86 + 0.72 * A1
    advantages = gae(REWARDS, VALUES, NO_DONES, LAST, gamma=0.9, gae_lambda=0.8)
    assert torch.allclose(advantages.squeeze(1), torch.tensor([1.740992, 1.2236, 1.88]), atol=1e-6)


def test_gae_lambda_one_is_monte_carlo_return_minus_value_and_zero_is_the_td_error():
    returns = torch.tensor([1 + 0.9 * (0.9 * (2 + 0.9 * 0.2)), 0.9 * (2 + 0.9 * 0.2), 2 + 0.9 * 0.2])
    monte_carlo = gae(REWARDS, VALUES, NO_DONES, LAST, gamma=0.9, gae_lambda=1.0).squeeze(1)
    assert torch.allclose(monte_carlo, returns - VALUES.squeeze(1), atol=1e-6)
    td_errors = gae(REWARDS, VALUES, NO_DONES, LAST, gamma=0.9, gae_lambda=0.0).squeeze(1)
    assert torch.allclose(td_errors, torch.tensor([0.86, -0.13, 1.88]), atol=1e-6)


def test_gae_stops_at_a_session_end_and_treats_env_columns_independently():
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    # step 1 ends its session: no bootstrap from V(step 2), and A0 carries only A1
    advantages = gae(REWARDS, VALUES, dones, LAST, gamma=0.9, gae_lambda=0.8).squeeze(1)
    assert torch.allclose(advantages, torch.tensor([0.86 + 0.72 * -0.4, -0.4, 1.88]), atol=1e-6)
    two = gae(REWARDS.repeat(1, 2), VALUES.repeat(1, 2), torch.cat([NO_DONES, dones], 1), LAST.repeat(2), 0.9, 0.8)
    assert torch.allclose(two[:, 0], gae(REWARDS, VALUES, NO_DONES, LAST, 0.9, 0.8)[:, 0])
    assert torch.allclose(two[:, 1], advantages)
    assert torch.equal(gae(REWARDS, VALUES, dones.bool(), LAST, 0.9, 0.8).squeeze(1), advantages)  # bool dones too


def test_gae_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"one \[T, N\] shape"):
        gae(REWARDS, VALUES[:2], NO_DONES, LAST, 0.9, 0.8)
    with pytest.raises(ValueError, match=r"last_values must be \[N\]"):
        gae(REWARDS, VALUES, NO_DONES, torch.zeros(2), 0.9, 0.8)


def test_td_target_bootstraps_only_where_the_episode_goes_on():
    target = td_target(torch.tensor([1.0, 2.0]), torch.tensor([5.0, float("-inf")]), torch.tensor([False, True]), 0.5)
    assert torch.equal(target, torch.tensor([3.5, 2.0]))  # -inf behind a terminated step never leaks
    slate = td_target(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[4.0], [4.0]]),
                      torch.tensor([[False], [True]]), 0.5)  # a slate's [B, k] rewards against [B, 1]
    assert torch.equal(slate, torch.tensor([[3.0, 2.0], [0.0, 0.0]]))


def test_linear_schedule():
    assert [linear_schedule(1.0, 0.1, 10, step) for step in (0, 5, 10, 20)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    assert linear_schedule(0.0, 1.0, 1, 1) == 1.0 and linear_schedule(0.5, 0.5, 100, 7) == 0.5
