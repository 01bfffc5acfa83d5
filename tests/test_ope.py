"""Off-policy estimators: hand-computed values, simulated logs with known truth, invalid inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recarena import simulators
from recarena.evaluation.ope import (
    ESTIMATORS,
    IPS,
    SNIPS,
    DirectMethod,
    DoublyRobust,
    LinearRewardModel,
    LinearSoftmaxPolicy,
    LoggedData,
    frequency_propensities,
    policy_distribution,
)
from recarena.evaluation.ope_validation import validate_estimators
from tests._eval_fixtures import ContentAgent

POLICY = np.array([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5], [0.0, 1.0]])


def hand_data(**changes) -> LoggedData:
    fields = dict(
        action=np.array([0, 1, 0, 1]),
        reward=np.array([1.0, 0.0, 1.0, 1.0]),
        propensity=np.array([0.5, 0.25, 0.8, 0.5]),
        n_actions=2,
        expected_reward=np.array([[0.5, 0.5], [0.2, 0.4], [1.0, 0.0], [0.3, 0.9]]),
    )
    fields.update(changes)
    return LoggedData(**fields)


def test_hand_computed_values() -> None:
    # weights pi/p = [2, 2, 0.625, 2]; w*r = [2, 0, 0.625, 2]
    data = hand_data()
    assert IPS().estimate(data, POLICY).value == pytest.approx(4.625 / 4)
    assert SNIPS().estimate(data, POLICY).value == pytest.approx(4.625 / 6.625)
    assert IPS(clip=1.0).estimate(data, POLICY).value == pytest.approx(2.625 / 4)
    assert DirectMethod().estimate(data, POLICY).value == pytest.approx(0.55)
    # DR terms: [0.5+2*0.5, 0.3+2*(-0.4), 0.5+0.625*0, 0.9+2*0.1] = [1.5, -0.5, 0.5, 1.1]
    assert DoublyRobust().estimate(data, POLICY).value == pytest.approx(0.65)
    estimate = SNIPS(n_bootstrap=200).estimate(data, torch.as_tensor(POLICY))
    assert estimate.low <= estimate.value <= estimate.high and estimate.estimator == "SNIPS" and estimate.n == 4
    assert set(ESTIMATORS) == {"IPS", "SNIPS", "DM", "DR"}


def test_grouped_bootstrap_and_determinism() -> None:
    data = hand_data(group=np.array([0, 0, 1, 1]))
    a = DoublyRobust(n_bootstrap=300, seed=5).estimate(data, POLICY)
    assert a == DoublyRobust(n_bootstrap=300, seed=5).estimate(data, POLICY)
    assert a.value == pytest.approx(0.65)
    # Two groups with means 0.5 and 0.8: every resample lies between them.
    assert 0.5 - 1e-9 <= a.low <= a.high <= 0.8 + 1e-9


def test_policy_distribution_and_frequency_propensities() -> None:
    scores = torch.tensor([[1.0, 3.0, 3.0], [0.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert policy_distribution(scores, mask).tolist() == [[0, 1, 0], [1, 0, 0]]
    soft = policy_distribution(scores, mask, temperature=1.0)
    assert soft[1].tolist() == pytest.approx([0.5, 0.5, 0.0])
    p = frequency_propensities(np.array([0, 0, 1]), np.array([0, 1, 2]), 3, smoothing=1.0)
    assert p.tolist() == pytest.approx([3 / 6, 2 / 6, 1 / 6])


def closed_form_bandit(n: int, seed: int = 0):
    """Contexts, a softmax logging policy, Bernoulli rewards and a softmax target: truth in closed form."""
    g = torch.Generator().manual_seed(seed)
    d, n_actions = 4, 6
    x = torch.randn(n, d, generator=g)
    logging = torch.softmax(0.5 * x @ torch.randn(d, n_actions, generator=g), dim=1)
    reward_prob = torch.sigmoid(x @ torch.randn(d, n_actions, generator=g))
    target = torch.softmax(x @ torch.randn(d, n_actions, generator=g), dim=1)
    action = torch.multinomial(logging, 1, generator=g).squeeze(1)
    reward = torch.bernoulli(reward_prob.gather(1, action[:, None]).squeeze(1), generator=g)
    truth = float((target * reward_prob).sum(dim=1).mean())
    return x, logging, action, reward, target, truth


def test_estimators_recover_closed_form_truth() -> None:
    x, logging, action, reward, target, truth = closed_form_bandit(30_000)
    true_p = logging.gather(1, action[:, None]).squeeze(1).double().numpy()
    data = LoggedData(action.numpy(), reward.double().numpy(), true_p, 6)
    for estimator in (IPS(n_bootstrap=200), SNIPS(n_bootstrap=200)):
        estimate = estimator.estimate(data, target.double())
        assert abs(estimate.value - truth) / truth < 0.03
        assert estimate.low < truth < estimate.high
    fitted = LinearSoftmaxPolicy(4, 6).fit(x, action)
    reward_model = LinearRewardModel(4, 6).fit(x, action, reward)
    estimated = LoggedData(action.numpy(), reward.double().numpy(), fitted.propensity(x, action), 6, reward_model.predict(x))
    for estimator in (SNIPS(n_bootstrap=100), DoublyRobust(n_bootstrap=100)):
        assert abs(estimator.estimate(estimated, target.double()).value - truth) / truth < 0.05


def test_clipping_bounds_weights() -> None:
    x, logging, action, reward, target, truth = closed_form_bandit(2000, seed=1)
    p = logging.gather(1, action[:, None]).squeeze(1).double().numpy()
    data = LoggedData(action.numpy(), reward.double().numpy(), p, 6)
    assert IPS(clip=2.0).weights(data, target.double().numpy()).max() <= 2.0
    assert IPS(clip=2.0).estimate(data, target).value <= IPS().estimate(data, target).value


def test_validation_on_synthetic_simulator_fast() -> None:
    """A small version of the 1e5-event check (looser bound); the full one is the slow test below."""
    simulator = simulators.make("synthetic")
    report = validate_estimators(simulator, ContentAgent(simulator.item_embeddings), n_events=20_000, n_true=100_000, n_bootstrap=50)
    errors = {row["estimator"]: row["rel_error"] for row in report["estimators"]}
    assert errors["SNIPS"] < 0.15 and errors["DR"] < 0.15 and errors["IPS (true propensities)"] < 0.15


@pytest.mark.slow
def test_validation_on_synthetic_simulator_1e5_events_within_5_percent() -> None:
    simulator = simulators.make("synthetic")
    report = validate_estimators(simulator, ContentAgent(simulator.item_embeddings), n_events=100_000, n_true=400_000)
    errors = {row["estimator"]: row["rel_error"] for row in report["estimators"]}
    assert errors["SNIPS"] < 0.05 and errors["DR"] < 0.05


@pytest.mark.parametrize(
    "changes",
    [
        {"propensity": np.array([0.5, 0.0, 0.8, 0.5])},
        {"propensity": np.array([0.5, 1.5, 0.8, 0.5])},
        {"action": np.array([0, 1, 2, 1])},
        {"action": np.array([0, -1, 0, 1])},
        {"reward": np.array([1.0, np.nan, 1.0, 1.0])},
        {"reward": np.array([1.0, 0.0])},
        {"expected_reward": np.zeros((4, 3))},
        {"group": np.array([0, 1])},
        {"action": np.array([], dtype=np.int64), "reward": np.array([]), "propensity": np.array([]), "expected_reward": None},
    ],
)
def test_invalid_logged_data(changes) -> None:
    with pytest.raises(ValueError):
        hand_data(**changes)


@pytest.mark.parametrize(
    "call",
    [
        lambda: IPS().estimate(hand_data(), POLICY[:3]),
        lambda: IPS().estimate(hand_data(), POLICY * 2),
        lambda: IPS().estimate(hand_data(), -POLICY),
        lambda: DoublyRobust().estimate(hand_data(expected_reward=None), POLICY),
        lambda: DirectMethod().estimate(hand_data(expected_reward=None), POLICY),
        lambda: IPS(clip=0.0),
        lambda: IPS(n_bootstrap=0),
        lambda: SNIPS(alpha=1.0),
        lambda: policy_distribution(torch.zeros(1, 2), temperature=0.0),
    ],
)
def test_invalid_estimator_calls(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_deterministic_policy_equals_one_hot() -> None:
    data = hand_data()
    actions = np.array([0, 1, 1, 1])
    one_hot = np.eye(2)[actions]
    for cls in (IPS, SNIPS, DirectMethod, DoublyRobust):
        assert cls(n_bootstrap=50).estimate(data, actions) == cls(n_bootstrap=50).estimate(data, one_hot)
    with pytest.raises(ValueError):
        IPS().estimate(data, np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError):
        IPS().estimate(data, np.array([0.0, 1.0, 1.0, 1.0]))
