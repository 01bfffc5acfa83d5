"""One config vocabulary and one step counter across the agent families (docs/agents.md, "Config
vocabulary"): old names are refused naming the new one, every family takes the unified names, SB3
DQN's exploration_steps becomes the right exploration_fraction, and steps_done is the only counter."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from recarena.agents.base import NullLogger, checkpoint_steps
from recarena.agents.registry import agent_class, agent_config, make_agent
from recarena.agents.returns import linear_schedule
from recarena.agents.sb3_agents import sb3_exploration_fraction
from recarena.cli import train as train_script
from recarena.core.config import RENAMED_KEYS
from recarena.core.errors import CheckpointError, ConfigError
from recarena.envs.vector_env import RecommendationVectorEnv
from recarena.training.config import run_config_from_dict
from recarena.training.run import RunDirectory

FAMILIES = ["native_ppo", "native_dqn", "tabular_q", "linear_q", "dqn", "ppo", "maskable_ppo"]

VOCABULARY = {
    "native_ppo": {"n_steps": 8, "n_epochs": 2, "clip_range": 0.1, "normalize_advantage": False, "mask": "history"},
    "ppo": {"n_steps": 8, "n_epochs": 2, "clip_range": 0.1, "normalize_advantage": False},
    "maskable_ppo": {"n_steps": 8, "n_epochs": 2, "clip_range": 0.1, "normalize_advantage": False},
    "native_dqn": {"exploration_initial_eps": 0.9, "exploration_final_eps": 0.1, "exploration_steps": 500, "mask": "none"},
    "dqn": {"exploration_initial_eps": 0.9, "exploration_final_eps": 0.1, "exploration_steps": 500, "mask": "none"},
    "tabular_q": {"exploration_initial_eps": 0.9, "exploration_final_eps": 0.1, "exploration_steps": 500},
    "linear_q": {"exploration_initial_eps": 0.9, "exploration_final_eps": 0.1, "exploration_steps": 500},
}
"""Per family, every unified name it has (the concepts it lacks are absent), with non-default values."""

OLD_NAMES = {
    "native_ppo": {"num_steps": "n_steps", "update_epochs": "n_epochs", "clip_coef": "clip_range",
                   "normalize_advantages": "normalize_advantage", "log_interval": "log_every"},
    "native_dqn": {"exploration_initial": "exploration_initial_eps", "exploration_final": "exploration_final_eps",
                   "mask_consumed": "mask", "log_interval": "log_every"},
    "tabular_q": {"epsilon_start": "exploration_initial_eps", "epsilon_end": "exploration_final_eps",
                  "epsilon_decay_steps": "exploration_steps", "log_interval": "log_every"},
    "linear_q": {"epsilon_decay_steps": "exploration_steps"},
    "dqn": {"exploration_fraction": "exploration_steps", "mask_actions": "mask"},
}


def _run_data(name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": {"source": None},
        "simulator": {"name": "synthetic", "config": {"n_items": 20, "n_users": 50, "events_per_user": 10}},
        "env": {"num_envs": 8, "max_steps": 10},
        "agent": {"name": name, "config": config},
        "train": {"total_steps": 64, "device": "cpu", "checkpoint_every": 64, "eval_every": 0,
                  "eval_sessions": 8, "log_every": 32},
    }


@pytest.mark.parametrize("name, old, new", [(n, o, w) for n, pairs in OLD_NAMES.items() for o, w in pairs.items()])
def test_an_old_name_is_refused_with_its_new_name(name: str, old: str, new: str) -> None:
    with pytest.raises(ConfigError) as caught:
        run_config_from_dict(_run_data(name, {old: 1}))
    message = str(caught.value)
    assert message.startswith(f"agent.config.{old} was renamed {new}") and "\n" not in message
    assert "valid keys" not in message  # the rename, not the list of every key


def test_an_old_name_is_refused_by_the_config_class_too() -> None:
    """Built in Python (no from_dict), the old keyword gets the same message."""
    with pytest.raises(ConfigError, match=r"^num_steps was renamed n_steps$"):
        agent_class("native_ppo").config_class(num_steps=4)


def test_an_unknown_key_that_was_never_renamed_still_lists_the_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['agent.config.num_step'\]; valid keys"):
        run_config_from_dict(_run_data("native_ppo", {"num_step": 4}))


def test_a_renamed_key_is_not_claimed_where_its_new_name_does_not_exist_either() -> None:
    """SB3 PPO has no exploration schedule: epsilon_start there is an unknown key, not a rename."""
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['agent.config.epsilon_start'\]"):
        run_config_from_dict(_run_data("ppo", {"epsilon_start": 1.0}))


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_takes_the_unified_names_and_has_no_old_one(name: str) -> None:
    config = agent_config(name, VOCABULARY[name])
    for key, value in VOCABULARY[name].items():
        assert getattr(config, key) == value
    fields = {f.name for f in dataclasses.fields(config)}
    assert not fields & set(RENAMED_KEYS), f"{name} still has {sorted(fields & set(RENAMED_KEYS))}"


@pytest.mark.parametrize("name, refused", [("native_dqn", "history"), ("dqn", "history"), ("native_ppo", "all")])
def test_a_mask_a_family_cannot_honour_is_refused_naming_the_key(name: str, refused: str) -> None:
    with pytest.raises(ConfigError, match=rf"^agent\.config\.mask: expected one of \[.*\], got '{refused}'$"):
        run_config_from_dict(_run_data(name, {"mask": refused}))


def _env(num_envs: int = 8) -> RecommendationVectorEnv:
    return RecommendationVectorEnv(num_envs=num_envs, simulator="synthetic",
                                   simulator_config={"n_items": 20, "n_users": 50, "events_per_user": 10},
                                   max_steps=10)


def test_sb3_exploration_fraction_known_answers() -> None:
    assert sb3_exploration_fraction(30_000, 100_000) == 0.3  # configs/dqn_ml100k.yaml: the old 0.3 exactly
    assert sb3_exploration_fraction(90_000, 300_000) == 0.3  # configs/dqn_ml1m.yaml
    assert sb3_exploration_fraction(3_000, 1_000) == 3.0  # the run ends before epsilon reaches its final value
    with pytest.raises(ValueError):
        sb3_exploration_fraction(100, 0)


@pytest.mark.parametrize("total_steps", [0, 400])
def test_sb3_dqn_epsilon_follows_exploration_steps_whatever_the_run_length(total_steps: int) -> None:
    """SB3 DQN's epsilon after k user-steps is the native agents' linear_schedule over exploration_steps,
    for a planned run of 400 steps and for an agent used outside train.py (no planned total)."""
    env = _env()
    config = {"exploration_initial_eps": 1.0, "exploration_final_eps": 0.2, "exploration_steps": 160,
              "learning_starts": 1_000, "net_arch": [8], "features": {"embed_dim": 8}}
    agent = make_agent("dqn", env.n_items, config, env=env, seed=0, total_steps=total_steps)
    for _ in range(3):
        agent.learn(env, 64, NullLogger())
        expected = linear_schedule(1.0, 0.2, 160, agent.steps_done)
        assert agent.model.exploration_rate == pytest.approx(expected, abs=1e-9), agent.steps_done
    # SB3's fraction is over the planned run, or (outside train.py) over the steps up to this call's end.
    assert agent.model.exploration_fraction == 160 / (total_steps or agent.steps_done)


@pytest.mark.parametrize("name", FAMILIES)
def test_steps_done_is_the_one_counter(name: str) -> None:
    """Every family counts user-steps as steps_done (no other name: native agents lost global_step),
    and a checkpoint brings the count back."""
    env = _env()
    small = {"native_ppo": {"n_steps": 2, "hidden_dim": 8}, "ppo": {"n_steps": 2, "batch_size": 16},
             "maskable_ppo": {"n_steps": 2, "batch_size": 16}, "tabular_q": {"n_states": 4, "codebook_samples": 16}}
    context = {"env": env} if name not in ("tabular_q", "linear_q") else {}
    agent = make_agent(name, env.n_items, small.get(name, {}), **context)
    assert agent.steps_done == 0 and not hasattr(agent, "global_step")
    agent.learn(env, 16, NullLogger())
    assert agent.steps_done == 16
    restored = make_agent(name, env.n_items, small.get(name, {}), **context)
    restored.restore_checkpoint_state(*agent.checkpoint_state())
    assert restored.steps_done == 16


def test_checkpoint_steps_reads_the_old_native_counter_and_refuses_a_state_without_one() -> None:
    assert checkpoint_steps({"steps_done": 16}) == checkpoint_steps({"global_step": 16}) == 16  # tests/test_old_runs.py
    with pytest.raises(CheckpointError, match="no 'steps_done' \\(or older 'global_step'\\) step count"):
        checkpoint_steps({"last_log": 16})


def test_train_py_refuses_a_checkpoint_whose_counts_disagree(tmp_path: Path) -> None:
    """No drifting fallback: the loop's recorded steps and the agent's steps_done must match on resume."""
    config = run_config_from_dict(_run_data("linear_q", {"form": "bilinear"}))
    train_script.train(config, tmp_path / "run", progress_bar=False)
    point = RunDirectory(tmp_path / "run").resume_point()
    assert point is not None and point.metadata["progress"]["steps_done"] == 64
    point.metadata["progress"]["steps_done"] = 56
    env = _env()
    agent = make_agent("linear_q", env.n_items, {"form": "bilinear"})
    with pytest.raises(CheckpointError, match="records 56 steps done, its agent state 64"):
        train_script.restore_checkpoint(point, agent, env, point.metadata["identity"])


SESSION_TAGS = {"charts/episodic_return", "charts/session_length", "charts/ctr", "charts/sps",
                "sim/leave_rate", "sim/coverage", "sim/diversity"}
"""What recarena.agents.session_stats.SessionStats writes at each log point."""


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_logs_the_session_statistics_of_session_stats(name: str, tmp_path: Path) -> None:
    """One session-statistics implementation: every family writes SessionStats' tags through train.py."""
    small = {"native_ppo": {"n_steps": 2, "hidden_dim": 8}, "ppo": {"n_steps": 2, "batch_size": 16},
             "maskable_ppo": {"n_steps": 2, "batch_size": 16}, "tabular_q": {"n_states": 4, "codebook_samples": 16}}
    data = _run_data(name, small.get(name, {}))
    data["train"].update(total_steps=96, checkpoint_every=96)
    tags: set[str] = set()
    train_script.train(run_config_from_dict(data), tmp_path / "run", progress_bar=False,
                       listeners=[lambda tag, value, step: tags.add(tag)])
    assert SESSION_TAGS <= tags, sorted(SESSION_TAGS - tags)
