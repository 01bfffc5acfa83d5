"""The one contract between train.py and every trainable agent (``recarena.agents.base.TrainableAgent``):
``steps_done`` counts user-steps, ``learn`` continues the env where the last chunk left it (so chunking
changes nothing), and log points fall at multiples of ``log_every`` -- for every family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from recarena.agents.base import NullLogger, TrainableAgent
from recarena.agents.registry import make_agent
from recarena.agents.serialization import load_tensors
from recarena.cli import train as train_script
from recarena.core.checkpoint import latest_checkpoint, read_checkpoint
from recarena.envs.vector_env import RecommendationVectorEnv
from recarena.training.config import run_config_from_dict

NUM_ENVS = 8
SIMULATOR = {"n_items": 20, "n_users": 50, "events_per_user": 10, "best_item": 3}
FAMILIES: dict[str, dict[str, Any]] = {
    "dqn": {"learning_starts": 32, "buffer_size": 1000, "batch_size": 16, "target_update_interval": 64,
            "net_arch": [16], "features": {"embed_dim": 8}},
    "ppo": {"n_steps": 8, "batch_size": 32, "net_arch": [16], "features": {"embed_dim": 8}},
    "maskable_ppo": {"n_steps": 8, "batch_size": 32, "net_arch": [16], "features": {"embed_dim": 8}},
    "native_dqn": {"hidden_dim": 16, "learning_starts": 32, "batch_size": 16, "buffer_size": 1000,
                   "target_update_interval": 64},
    "native_ppo": {"hidden_dim": 16, "n_steps": 4},
    "tabular_q": {"n_states": 4, "codebook_samples": 48},
    "linear_q": {"form": "bilinear"},
}
UNIT = {"dqn": 8, "ppo": 64, "maskable_ppo": 64, "native_dqn": 8, "native_ppo": 32, "tabular_q": 8, "linear_q": 8}
"""User-steps per learn() unit with 8 users: a vector step, or a PPO rollout (n_steps x 8)."""


def _env() -> RecommendationVectorEnv:
    return RecommendationVectorEnv(num_envs=NUM_ENVS, simulator="synthetic", simulator_config=dict(SIMULATOR),
                                   max_steps=10, mask_consumed=True)


def _agent(name: str, env: RecommendationVectorEnv, total_steps: int) -> TrainableAgent:
    context: dict[str, Any] = {}
    if name in ("dqn", "ppo", "maskable_ppo"):
        context = {"env": env, "seed": 0, "total_steps": total_steps}
    elif name.startswith("native"):
        context = {"env": env}
    agent = make_agent(name, env.n_items, FAMILIES[name], **context)
    assert isinstance(agent, TrainableAgent)
    return agent


def _state(agent: TrainableAgent) -> dict[str, torch.Tensor]:
    return agent.checkpoint_state()[0]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_two_chunks_learn_exactly_what_one_chunk_learns(name: str) -> None:
    """learn(N) twice on one env == learn(2N) once: same weights, optimiser, buffers, generators; the
    step counter is the steps asked for (N a multiple of the family's unit)."""
    assert _agent(name, _env(), 256).step_unit(NUM_ENVS) == UNIT[name]
    env = _env()
    chunked = _agent(name, env, 256)
    chunked.learn(env, 128, NullLogger())
    assert chunked.steps_done == 128
    chunked.learn(env, 128, NullLogger())
    other_env = _env()
    straight = _agent(name, other_env, 256)
    straight.learn(other_env, 256, NullLogger())
    assert chunked.steps_done == straight.steps_done == 256
    a, b = _state(chunked), _state(straight)
    assert a.keys() == b.keys()
    assert not [key for key in a if not torch.equal(a[key], b[key])]


@pytest.mark.parametrize("name", ["tabular_q", "linear_q"])
def test_q_agents_continue_the_sessions_between_chunks(name: str) -> None:
    """The env is not reset between learn() calls: users stay mid-session."""
    env = _env()
    agent = _agent(name, env, 256)
    agent.learn(env, 3 * NUM_ENVS, NullLogger())  # three steps into ten-step sessions
    steps_before = env.get_state()["steps"].clone()
    agent.learn(env, NUM_ENVS, NullLogger())
    assert bool((steps_before > 0).any())
    assert bool((env.get_state()["steps"] > steps_before).all())  # the same sessions, one step further


def _config(name: str, total_steps: int, checkpoint_every: int, log_every: int = 64) -> Any:
    return run_config_from_dict({
        "data": {"source": None},
        "simulator": {"name": "synthetic", "config": dict(SIMULATOR)},
        "env": {"num_envs": NUM_ENVS, "max_steps": 10, "mask_consumed": True},
        "agent": {"name": name, "config": dict(FAMILIES[name])},
        "train": {"total_steps": total_steps, "device": "cpu", "checkpoint_every": checkpoint_every,
                  "eval_every": 0, "eval_sessions": 8, "log_every": log_every, "keep_checkpoints": 100},
    })


class _Steps:
    def __init__(self) -> None:
        self.by_tag: dict[str, list[int]] = {}

    def __call__(self, tag: str, value: float, step: int) -> None:
        self.by_tag.setdefault(tag, []).append(step)


@pytest.mark.parametrize("name", ["native_ppo", "native_dqn", "tabular_q", "linear_q", "ppo"])
def test_checkpoint_every_does_not_change_what_train_py_learns(name: str, tmp_path: Path) -> None:
    """train.py with chunks that do not line up with the agent's unit ends with the same weights as one
    chunk, at the step count documented: total_steps rounded up to the unit, counted by the agent."""
    total = 200  # not a multiple of any unit here
    expected = -(-total // UNIT[name]) * UNIT[name]
    straight = train_script.train(_config(name, total, 10_000), tmp_path / "straight", progress_bar=False)
    chunked = train_script.train(_config(name, total, 40), tmp_path / "chunked", progress_bar=False)
    a = load_tensors(straight.agent / "weights.safetensors")
    b = load_tensors(chunked.agent / "weights.safetensors")
    assert a.keys() == b.keys() and not [key for key in a if not torch.equal(a[key], b[key])]
    for run in (straight, chunked):
        tensors, metadata, step = read_checkpoint(latest_checkpoint(run.checkpoints))
        assert step == metadata["progress"]["steps_done"] == expected
        assert run.read_metadata()["agent_step"] == expected
    # Chunk ends are absolute: each checkpoint sits at the first unit boundary past a multiple of 40.
    steps = sorted(int(p.name[5:]) for p in chunked.checkpoints.glob("step_*"))
    assert steps == sorted({-(-min(t, total) // UNIT[name]) * UNIT[name] for t in range(40, total + 40, 40)})


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_log_points_fall_every_log_every_steps(name: str, tmp_path: Path) -> None:
    """train.log_every reaches every family: one log point per window of log_every user-steps, and the
    family's per-window scalars exactly at the multiples of log_every."""
    log_every, total = 64, 384
    steps = _Steps()
    train_script.train(_config(name, total, 128, log_every), tmp_path / "run", progress_bar=False, listeners=[steps])
    logged = {tag: s for tag, s in steps.by_tag.items() if tag.split("/")[0] in ("charts", "losses", "sim")}
    assert logged, f"{name} logged nothing"
    for tag, points in logged.items():
        windows = [step // log_every for step in points]
        assert windows == sorted(set(windows)), f"{tag}: two log points in one window: {points}"
        assert all(step >= log_every for step in points), f"{tag}: logged before the first window closed: {points}"
    cadence = "charts/epsilon" if name.endswith("_q") else "charts/ctr"
    assert logged[cadence] == list(range(log_every, total + 1, log_every))
