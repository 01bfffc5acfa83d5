"""The RL agents' pure arithmetic: TD targets, GAE advantages and the linear exploration schedule.

Kept apart from the agents so each formula exists once, reads in a few lines and is tested against
hand-computed answers (tests/test_returns.py). Conventions shared by every agent:

* ``terminated`` cuts the bootstrap (the user left: nothing follows); a *truncated* session is not
  terminated, so its target still bootstraps (the agents add ``gamma * V(final observation)`` to the
  reward of a truncated step before calling :func:`gae`, whose ``dones`` then only stops the
  advantage from running into the next session of the same env slot).
* Everything is float32 torch on the tensors' own device; nothing here draws random numbers.
"""

from __future__ import annotations

import torch


def td_target(rewards: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """The one-step TD target ``r + gamma * V(s')``, with no bootstrap where the episode terminated.

    ``rewards``, ``next_values`` and ``terminated`` (bool) broadcast together, e.g. ``[B]`` or a
    slate's ``[B, k]`` against ``[B, 1]``; where ``terminated`` is true the target is ``r`` exactly,
    whatever ``next_values`` holds there (even -inf for a state with no allowed action)."""
    bootstrap = torch.where(terminated, torch.zeros_like(next_values), next_values)
    return rewards + gamma * bootstrap


def gae(
    rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_values: torch.Tensor,
    gamma: float, gae_lambda: float,
) -> torch.Tensor:
    """Generalised advantage estimates (Schulman et al. 2016) for a rollout of ``T`` steps of ``N`` envs.

    ``rewards``, ``values`` and ``dones`` are ``[T, N]`` (``dones`` float or bool: the session ended at
    step t, so step t + 1 belongs to a new one); ``last_values`` ``[N]`` is ``V`` of the observation
    after the rollout's last step. ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}`` with
    ``delta_t = r_t + gamma * (1 - done_t) * V_{t+1} - V_t``. ``gae_lambda = 1`` gives Monte-Carlo
    returns minus values, ``0`` the one-step TD errors. The returns (critic targets) are
    ``advantages + values``."""
    if rewards.shape != values.shape or rewards.shape != dones.shape or rewards.dim() != 2:
        raise ValueError(f"gae: rewards, values and dones must share one [T, N] shape, got "
                         f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(dones.shape)}")
    if last_values.shape != rewards.shape[1:]:
        raise ValueError(f"gae: last_values must be [N] = {tuple(rewards.shape[1:])}, got {tuple(last_values.shape)}")
    not_dones = 1.0 - dones.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_values)
    for t in reversed(range(rewards.shape[0])):
        following_value = last_values if t == rewards.shape[0] - 1 else values[t + 1]
        delta = rewards[t] + gamma * following_value * not_dones[t] - values[t]
        running = delta + gamma * gae_lambda * not_dones[t] * running
        advantages[t] = running
    return advantages


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """``start`` moving linearly to ``end`` over ``duration`` steps, then ``end``: the exploration rate
    of every epsilon-greedy agent after ``step`` steps."""
    fraction = min(1.0, step / max(1, duration))
    return start + fraction * (end - start)
