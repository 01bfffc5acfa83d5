"""Tiny synthetic SB3 runs shared by the training tests (test_train.py, test_sb3_sequence_state.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recarena.agents.serialization import load_tensors
from recarena.envs.vector_env import RecommendationVectorEnv
from recarena.training.config import RunConfig, run_config_from_dict

BEST = 3
SIMULATOR = {"n_items": 20, "n_users": 50, "events_per_user": 10, "best_item": BEST}
SMALL = {
    "dqn": {"learning_starts": 100, "buffer_size": 4000, "batch_size": 32, "target_update_interval": 200,
            "net_arch": [64], "features": {"embed_dim": 16}},
    "ppo": {"n_steps": 8, "batch_size": 64, "net_arch": [64], "features": {"embed_dim": 16}},
    "maskable_ppo": {"n_steps": 8, "batch_size": 64, "net_arch": [64], "features": {"embed_dim": 16}},
}


def _config(agent: str, total_steps: int, agent_config: dict | None = None, **train: Any) -> RunConfig:
    data = {
        "data": {"source": None},
        "simulator": {"name": "synthetic", "config": dict(SIMULATOR)},
        "env": {"num_envs": 8, "max_steps": 10, "mask_consumed": agent == "maskable_ppo"},
        "agent": {"name": agent, "config": {**SMALL[agent], **(agent_config or {})}},
        "train": {"total_steps": total_steps, "device": "cpu", "checkpoint_every": 256, "eval_every": 512,
                  "eval_sessions": 32, "log_every": 128, **train},
    }
    return run_config_from_dict(data)


def _env(num_envs: int = 16, mask_consumed: bool = False) -> RecommendationVectorEnv:
    return RecommendationVectorEnv(
        num_envs=num_envs, simulator="synthetic", simulator_config=dict(SIMULATOR), max_steps=10,
        mask_consumed=mask_consumed,
    )


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run_dir / "agent" / "weights.safetensors")


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ: {different}"


def _fresh_observation(seed: int = 1) -> dict[str, torch.Tensor]:
    env = _env(32)
    observation, _ = env.reset(seed=seed)
    return observation
