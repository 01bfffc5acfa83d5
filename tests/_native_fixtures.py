"""A known-answer env and native-agent builders shared by the native agent tests (test_native_agents.py,
test_hierarchical_head.py): every user rates item BEST highest, so the right policy is known."""

from __future__ import annotations

import torch

from recarena.agents.native_ppo import NativePPOAgent, NativePPOConfig
from recarena.envs.vector_env import RecommendationVectorEnv

BEST = 7
SESSION_TAGS = ("charts/episodic_return", "charts/session_length", "charts/ctr", "charts/sps",
                "sim/leave_rate", "sim/coverage", "sim/diversity")


class RecordingLogger:
    """A training logger that keeps every scalar: tag -> [(step, value)]."""

    def __init__(self) -> None:
        self.scalars: dict[str, list[tuple[int, float]]] = {}

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.setdefault(tag, []).append((step, value))


def known_answer_env(slate_size: int = 1, num_envs: int = 32, n_items: int = 30) -> RecommendationVectorEnv:
    """Every user rates item BEST highest by a clear margin: the right policy always shows it."""
    return RecommendationVectorEnv(
        num_envs=num_envs,
        simulator="synthetic",
        simulator_config={"n_items": n_items, "n_users": 40, "best_item": BEST},
        max_steps=8,
        mask_consumed=False,
        slate_size=slate_size,
    )


def greedy_picks(agent, env: RecommendationVectorEnv, k: int = 1) -> torch.Tensor:
    """The agent's k items for the first observation of a reset with seed 123."""
    observation, _ = env.reset(seed=123)
    return agent.act(observation, k)


def make_ppo(env, **overrides) -> NativePPOAgent:
    config = NativePPOConfig(mask="none", learning_rate=3e-3, **overrides)
    return NativePPOAgent(env.n_items, config, item_embeddings=env.simulator.item_embeddings,
                          slate_size=env.slate_size)
