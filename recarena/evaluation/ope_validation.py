"""Validate the off-policy estimators on simulated logs whose true answer is known.

A simulator (any :class:`recarena.simulators.base.Simulator`, e.g. ``recarena.simulators.make("synthetic")``) plays
a one-step contextual bandit: a freshly reset user is the context, a known softmax logging policy
over the LLM state recommends one item, the simulator's response gives the reward. The estimators
then value an evaluated policy from these logs with an *estimated* logging policy and a fitted
reward model, and the true value of the evaluated policy is computed by simulating it on fresh
users drawn from the same start distribution. The report shows each estimator's error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from recarena.agents.base import Agent
from recarena.envs.observation import build_observation
from recarena.evaluation.ope import (
    IPS,
    SNIPS,
    DirectMethod,
    DoublyRobust,
    LinearRewardModel,
    LinearSoftmaxPolicy,
    LoggedData,
    policy_distribution,
)
from recarena.simulators.base import Simulator


class ContentSimilarityAgent(Agent):
    """A simple evaluated policy: score = cosine of the item encoding with the user's LLM state."""

    name = "content_similarity"

    def __init__(self, item_embeddings: torch.Tensor) -> None:
        self.item_embeddings = torch.nn.functional.normalize(item_embeddings.to(torch.float32), dim=1)
        self.n_items = int(item_embeddings.shape[0])

    def scores(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        state = observation["llm_state"].to(torch.float32)
        return state @ self.item_embeddings.to(state.device).T

    def save(self, directory) -> None:
        raise NotImplementedError("ContentSimilarityAgent has nothing to save; rebuild it from the item encodings")

    @classmethod
    def load(cls, directory) -> Agent:
        raise NotImplementedError("ContentSimilarityAgent has nothing to load; rebuild it from the item encodings")


class SoftmaxLoggingPolicy:
    """pi_0(a | x) = softmax_a(llm_state . W_a / temperature) over unconsumed items; W is fixed and known."""

    def __init__(self, embedding_dim: int, n_items: int, scale: float = 1.0, temperature: float = 1.0, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.weight = scale * torch.randn(embedding_dim, n_items, generator=generator)
        self.temperature = temperature

    def probabilities(self, observation: dict[str, torch.Tensor], action_mask: torch.Tensor) -> torch.Tensor:
        logits = observation["llm_state"].to(torch.float32) @ self.weight.to(action_mask.device) / self.temperature
        return torch.softmax(logits.masked_fill(~action_mask, float("-inf")), dim=1)


@dataclass
class BanditLog:
    """One-step logs: observation features, action mask, logged action, reward and true propensity."""

    features: torch.Tensor  # float32 [N, d]: the llm_state of each context
    scores: torch.Tensor  # float32 [N, n_items]: the evaluated agent's scores (for its action distribution)
    action_mask: torch.Tensor  # bool [N, n_items]: unconsumed items
    action: torch.Tensor  # int64 [N]
    reward: torch.Tensor  # float32 [N]
    true_propensity: torch.Tensor  # float64 [N]


def _start_users(simulator: Simulator, n: int, generator: torch.Generator):
    state = simulator.init_state(n)
    simulator.reset(state, torch.ones(n, dtype=torch.bool, device=state.device), generator)
    observation = build_observation(state.history, state.history_response, simulator.item_embeddings)
    return state, observation


@torch.no_grad()
def simulate_bandit_log(
    simulator: Simulator,
    logging_policy: SoftmaxLoggingPolicy,
    agent: Agent,
    n_events: int,
    seed: int = 0,
    batch_size: int = 20_000,
) -> BanditLog:
    """Log ``n_events`` one-step interactions under ``logging_policy``; store the agent's scores too."""
    generator = torch.Generator(device=simulator.device).manual_seed(seed)
    parts: list[tuple[torch.Tensor, ...]] = []
    for begin in range(0, n_events, batch_size):
        n = min(batch_size, n_events - begin)
        state, observation = _start_users(simulator, n, generator)
        mask = ~state.consumed
        probabilities = logging_policy.probabilities(observation, mask)
        action = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
        outcome = simulator.step(state, action[:, None], generator)
        parts.append(
            (
                observation["llm_state"].cpu(),
                agent.scores(observation).to(torch.float32).cpu(),
                mask.cpu(),
                action.cpu(),
                outcome.reward.cpu(),
                probabilities.gather(1, action[:, None]).squeeze(1).to(torch.float64).cpu(),
            )
        )
    return BanditLog(*(torch.cat(columns) for columns in zip(*parts, strict=False)))


@torch.no_grad()
def true_policy_value(
    simulator: Simulator, agent: Agent, temperature: float | None, n_users: int, seed: int = 1, batch_size: int = 20_000
) -> tuple[float, float]:
    """(mean one-step reward, its standard error) of the agent's policy on fresh simulated users."""
    generator = torch.Generator(device=simulator.device).manual_seed(seed)
    rewards = []
    for begin in range(0, n_users, batch_size):
        n = min(batch_size, n_users - begin)
        state, observation = _start_users(simulator, n, generator)
        distribution = policy_distribution(agent.scores(observation), ~state.consumed, temperature)
        action = torch.multinomial(distribution.to(torch.float32), 1, generator=generator)
        rewards.append(simulator.step(state, action, generator).reward.to(torch.float64).cpu())
    reward = torch.cat(rewards)
    return float(reward.mean()), float(reward.std() / math.sqrt(len(reward)))


def validate_estimators(
    simulator: Simulator,
    agent: Agent,
    n_events: int = 100_000,
    temperature: float | None = 0.1,
    logging_scale: float = 1.0,
    clip: float | None = None,
    n_true: int = 400_000,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> dict:
    """Estimate the agent's one-step value from simulated logs and compare with the simulated truth.

    The logging policy is estimated (a softmax classifier fitted on the logged contexts) and DR/DM
    use a fitted linear reward model, as on real data; ``IPS (true propensities)`` is added as a
    reference. Returns plain data: the truth, and per estimator value, interval and error.
    """
    embedding_dim = int(simulator.item_embeddings.shape[1])
    logging_policy = SoftmaxLoggingPolicy(embedding_dim, simulator.n_items, scale=logging_scale, seed=seed)
    log = simulate_bandit_log(simulator, logging_policy, agent, n_events, seed=seed)
    truth, truth_se = true_policy_value(simulator, agent, temperature, n_true, seed=seed + 1)

    estimated = LinearSoftmaxPolicy(embedding_dim, simulator.n_items).fit(log.features, log.action, log.action_mask, seed=seed)
    reward_model = LinearRewardModel(embedding_dim, simulator.n_items).fit(log.features, log.action, log.reward, seed=seed)
    policy = policy_distribution(log.scores, log.action_mask, temperature).numpy()
    data = LoggedData(
        action=log.action.numpy(),
        reward=log.reward.to(torch.float64).numpy(),
        propensity=estimated.propensity(log.features, log.action, log.action_mask),
        n_actions=simulator.n_items,
        expected_reward=reward_model.predict(log.features),
    )
    true_data = LoggedData(data.action, data.reward, log.true_propensity.numpy(), data.n_actions)
    options = {"clip": clip, "n_bootstrap": n_bootstrap, "seed": seed}
    runs = [
        ("IPS (true propensities)", IPS(**options), true_data),
        ("IPS", IPS(**options), data),
        ("SNIPS", SNIPS(**options), data),
        ("DM", DirectMethod(**options), data),
        ("DR", DoublyRobust(**options), data),
    ]
    rows = []
    for label, estimator, logged in runs:
        estimate = estimator.estimate(logged, policy)
        rows.append(
            {
                "estimator": label,
                "value": estimate.value,
                "low": estimate.low,
                "high": estimate.high,
                "abs_error": abs(estimate.value - truth),
                "rel_error": abs(estimate.value - truth) / abs(truth) if truth else float("nan"),
            }
        )
    return {
        "n_events": n_events,
        "true_value": truth,
        "true_value_se": truth_se,
        "n_true": n_true,
        "logging_policy": f"softmax(llm_state . W, W ~ N(0, {logging_scale}^2)) over unconsumed items",
        "evaluated_policy": "greedy" if temperature is None else f"softmax(scores / {temperature})",
        "clip": clip,
        "estimators": rows,
    }
