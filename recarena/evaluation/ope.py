"""Off-policy estimators behind one interface: ``Estimator.estimate(logged_data, policy) -> Estimate``.

Logged data are contextual-bandit events (context x_i, logged action a_i, reward r_i) with the
logging policy's probability p_i = pi_0(a_i | x_i), known or estimated. ``policy`` is the evaluated
policy's action distribution pi(a | x_i), a dense [N, n_actions] array, or the chosen action per
context (int [N]) for a deterministic policy. With importance weights
w_i = min(pi(a_i | x_i) / p_i, clip):

* IPS:   V = (1/N) sum_i w_i r_i
* SNIPS: V = sum_i w_i r_i / sum_i w_i
* DM:    V = (1/N) sum_i sum_a pi(a | x_i) q(x_i, a)
* DR:    V = (1/N) sum_i [ sum_a pi(a | x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i)) ]

where q is a reward model (``LoggedData.expected_reward``). Intervals are percentile bootstraps
over events (or over ``LoggedData.group``, e.g. users, when events of a unit are correlated).
The logging policy can be estimated from logged frequencies (:func:`frequency_propensities`) or by
a fitted softmax classifier (:class:`LinearSoftmaxPolicy`); the reward model by
:class:`LinearRewardModel`. The interface follows the spirit of Open Bandit Pipeline's estimators.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from recarena.evaluation.metrics import bootstrap_ratio, group_sums


@dataclass(frozen=True)
class Estimate:
    """A policy value with its bootstrap interval."""

    value: float
    low: float
    high: float
    estimator: str = ""
    n: int = 0

    def to_dict(self) -> dict:
        return {"estimator": self.estimator, "value": self.value, "low": self.low, "high": self.high, "n": self.n}


@dataclass(frozen=True)
class LoggedData:
    """Logged bandit events. ``propensity`` is pi_0(action | context), true or estimated."""

    action: np.ndarray  # int64 [N]
    reward: np.ndarray  # float64 [N]
    propensity: np.ndarray  # float64 [N], in (0, 1]
    n_actions: int
    expected_reward: np.ndarray | None = None  # float [N, n_actions]: reward model q(x_i, a)
    group: np.ndarray | None = None  # [N]: bootstrap units (e.g. user ids); None = events

    def __post_init__(self) -> None:
        n = len(self.action)
        if n == 0:
            raise ValueError("logged data is empty")
        if self.reward.shape != (n,) or self.propensity.shape != (n,):
            raise ValueError(f"action, reward and propensity must all have shape ({n},)")
        if self.n_actions < 1 or self.action.min() < 0 or self.action.max() >= self.n_actions:
            raise ValueError(f"actions must lie in [0, {self.n_actions})")
        if not np.all(np.isfinite(self.reward)):
            raise ValueError("rewards must be finite")
        if not np.all((self.propensity > 0) & (self.propensity <= 1)):
            raise ValueError("propensities must lie in (0, 1]; clip or smooth an estimated logging policy")
        if self.expected_reward is not None and self.expected_reward.shape != (n, self.n_actions):
            raise ValueError(f"expected_reward must have shape ({n}, {self.n_actions})")
        if self.group is not None and self.group.shape != (n,):
            raise ValueError(f"group must have shape ({n},)")

    def __len__(self) -> int:
        return len(self.action)


class Estimator(ABC):
    """An off-policy estimator; ``clip`` caps importance weights (None = no clipping)."""

    name: ClassVar[str]
    needs_reward_model: ClassVar[bool] = False

    def __init__(self, clip: float | None = None, n_bootstrap: int = 1000, alpha: float = 0.05, seed: int = 0) -> None:
        if clip is not None and clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        if n_bootstrap < 1:
            raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.clip, self.n_bootstrap, self.alpha, self.seed = clip, n_bootstrap, alpha, seed

    def estimate(self, logged_data: LoggedData, policy: np.ndarray | torch.Tensor) -> Estimate:
        """Value of ``policy`` with its bootstrap interval.

        ``policy`` is the evaluated policy's action probabilities per logged context ([N, n_actions],
        rows summing to 1) or, for a deterministic policy, its chosen action per context (int [N]).
        """
        target, direct = _policy_terms(policy, logged_data, self.needs_reward_model)
        numerator, denominator = self._terms(logged_data, self._clip(target / logged_data.propensity), direct)
        value = float(numerator.sum() / denominator.sum()) if denominator.sum() > 0 else float("nan")
        if logged_data.group is not None:
            numerator, denominator = group_sums(logged_data.group, numerator, denominator)
        low, high = bootstrap_ratio(numerator, denominator, self.n_bootstrap, self.alpha, self.seed)
        return Estimate(value, low, high, self.name, len(logged_data))

    def weights(self, logged_data: LoggedData, policy: np.ndarray | torch.Tensor) -> np.ndarray:
        """Importance weights pi(a_i | x_i) / p_i, clipped at ``clip``."""
        target, _ = _policy_terms(policy, logged_data, False)
        return self._clip(target / logged_data.propensity)

    def _clip(self, w: np.ndarray) -> np.ndarray:
        return np.minimum(w, self.clip) if self.clip is not None else w

    @abstractmethod
    def _terms(self, data: LoggedData, w: np.ndarray, direct: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Per-event (numerator, denominator) from the weights and sum_a pi(a|x_i) q(x_i, a)."""


class IPS(Estimator):
    name = "IPS"

    def _terms(self, data: LoggedData, w: np.ndarray, direct: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return w * data.reward, np.ones(len(data))


class SNIPS(Estimator):
    name = "SNIPS"

    def _terms(self, data: LoggedData, w: np.ndarray, direct: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return w * data.reward, w


class DirectMethod(Estimator):
    name = "DM"
    needs_reward_model = True

    def _terms(self, data: LoggedData, w: np.ndarray, direct: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return direct, np.ones(len(data))


class DoublyRobust(Estimator):
    name = "DR"
    needs_reward_model = True

    def _terms(self, data: LoggedData, w: np.ndarray, direct: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        logged_q = np.asarray(data.expected_reward[np.arange(len(data)), data.action], dtype=np.float64)
        return direct + w * (data.reward - logged_q), np.ones(len(data))


ESTIMATORS: dict[str, type[Estimator]] = {cls.name: cls for cls in (IPS, SNIPS, DirectMethod, DoublyRobust)}


def _policy_terms(policy: np.ndarray | torch.Tensor, data: LoggedData, needs_direct: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(pi(a_i | x_i) [N], sum_a pi(a | x_i) q(x_i, a) [N] or None) for a dense or deterministic policy."""
    if isinstance(policy, torch.Tensor):
        policy = policy.detach().cpu().numpy()
    policy = np.asarray(policy)
    n, rows = len(data), np.arange(len(data))
    if needs_direct and data.expected_reward is None:
        raise ValueError("this estimator needs a reward model: set LoggedData.expected_reward")
    if policy.ndim == 1:  # deterministic: the chosen action per context
        if policy.shape != (n,) or not np.issubdtype(policy.dtype, np.integer):
            raise ValueError(f"a deterministic policy must be int actions of shape ({n},), got {policy.dtype} {policy.shape}")
        if policy.min() < 0 or policy.max() >= data.n_actions:
            raise ValueError(f"policy actions must lie in [0, {data.n_actions})")
        target = (policy == data.action).astype(np.float64)
        direct = np.asarray(data.expected_reward[rows, policy], dtype=np.float64) if needs_direct else None
        return target, direct
    if policy.shape != (n, data.n_actions):
        raise ValueError(f"policy must have shape ({n}, {data.n_actions}) or ({n},), got {policy.shape}")
    if not np.all(np.isfinite(policy)) or policy.min() < 0:
        raise ValueError("policy probabilities must be finite and non-negative")
    if not np.allclose(policy.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("policy probabilities must sum to 1 over actions for every context")
    target = np.asarray(policy[rows, data.action], dtype=np.float64)
    direct = (policy * data.expected_reward).sum(axis=1, dtype=np.float64) if needs_direct else None
    return target, direct


# --- the evaluated policy's action distribution ---------------------------------------------


def policy_distribution(scores: torch.Tensor, action_mask: torch.Tensor | None = None, temperature: float | None = None) -> torch.Tensor:
    """Action probabilities [B, n] from scores: greedy one-hot (ties: lower index) or softmax(scores / T)."""
    scores = scores.to(torch.float64)
    if action_mask is not None:
        scores = scores.masked_fill(~action_mask.to(scores.device), float("-inf"))
    if temperature is None:
        best = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, 0]
        return torch.nn.functional.one_hot(best, scores.shape[1]).to(torch.float64)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return torch.softmax(scores / temperature, dim=1)


# --- estimated logging policies and reward models -------------------------------------------


def frequency_propensities(train_actions: np.ndarray, actions: np.ndarray, n_actions: int, smoothing: float = 1.0) -> np.ndarray:
    """Context-free estimate pi_0(a) = (count(a) + smoothing) / (N + smoothing * n_actions)."""
    counts = np.bincount(train_actions, minlength=n_actions).astype(np.float64)
    probabilities = (counts + smoothing) / (counts.sum() + smoothing * n_actions)
    return probabilities[actions]


def _with_bias(features: torch.Tensor) -> torch.Tensor:
    return torch.cat([features.to(torch.float32), torch.ones(len(features), 1)], dim=1)


class LinearSoftmaxPolicy:
    """Estimated logging policy pi_0(a | x) = softmax_a(x . W_a + b_a) over allowed actions, fitted by max likelihood."""

    def __init__(self, n_features: int, n_actions: int) -> None:
        self.weight = torch.zeros(n_features + 1, n_actions)

    def logits(self, features: torch.Tensor, action_mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = _with_bias(features) @ self.weight
        if action_mask is not None:
            logits = logits.masked_fill(~action_mask, float("-inf"))
        return logits

    def probabilities(self, features: torch.Tensor, action_mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.softmax(self.logits(features, action_mask), dim=1)

    def propensity(self, features: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor | None = None) -> np.ndarray:
        """pi_0(a_i | x_i) for the logged actions, as float64 numpy."""
        probs = self.probabilities(features, action_mask)
        return probs.gather(1, actions[:, None]).squeeze(1).to(torch.float64).clamp(min=1e-12).numpy()

    def fit(
        self,
        features: torch.Tensor,
        actions: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        epochs: int = 20,
        batch_size: int = 2048,
        lr: float = 0.05,
        l2: float = 1e-5,
        seed: int = 0,
    ) -> LinearSoftmaxPolicy:
        weight = self.weight.clone().requires_grad_(True)
        generator = torch.Generator().manual_seed(seed)
        x = _with_bias(features)
        with torch.enable_grad():  # callers may be under torch.no_grad()
            self._train_softmax(weight, x, actions, action_mask, epochs, batch_size, lr, l2, generator)
        self.weight = weight.detach()
        return self

    @staticmethod
    def _train_softmax(weight, x, actions, action_mask, epochs, batch_size, lr, l2, generator) -> None:
        optimizer = torch.optim.Adam([weight], lr=lr)
        for _ in range(epochs):
            for index in torch.randperm(len(x), generator=generator).split(batch_size):
                logits = x[index] @ weight
                if action_mask is not None:
                    logits = logits.masked_fill(~action_mask[index], float("-inf"))
                loss = torch.nn.functional.cross_entropy(logits, actions[index]) + l2 * (weight[:-1] ** 2).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()


class LinearRewardModel:
    """Reward model q(x, a) = x . W_a + b_a (one linear head per action), fitted by least squares on logged events."""

    def __init__(self, n_features: int, n_actions: int) -> None:
        self.weight = torch.zeros(n_actions, n_features + 1)

    def predict(self, features: torch.Tensor) -> np.ndarray:
        """Float64 [N, n_actions]."""
        return (_with_bias(features) @ self.weight.T).to(torch.float64).numpy()

    def fit(
        self,
        features: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        epochs: int = 20,
        batch_size: int = 2048,
        lr: float = 0.05,
        l2: float = 1e-4,
        seed: int = 0,
    ) -> LinearRewardModel:
        weight = self.weight.clone()
        # Start each head at the mean reward so rarely logged actions predict the average.
        weight[:, -1] = float(rewards.to(torch.float32).mean())
        weight.requires_grad_(True)
        generator = torch.Generator().manual_seed(seed)
        x = _with_bias(features)
        y = rewards.to(torch.float32)
        with torch.enable_grad():  # callers may be under torch.no_grad()
            self._train(weight, x, actions, y, epochs, batch_size, lr, l2, generator)
        self.weight = weight.detach()
        return self

    @staticmethod
    def _train(weight, x, actions, y, epochs, batch_size, lr, l2, generator) -> None:
        optimizer = torch.optim.Adam([weight], lr=lr)
        for _ in range(epochs):
            for index in torch.randperm(len(x), generator=generator).split(batch_size):
                rows = weight[actions[index]]
                prediction = (x[index] * rows).sum(dim=1)
                loss = ((prediction - y[index]) ** 2).mean() + l2 * (rows[:, :-1] ** 2).sum(dim=1).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
