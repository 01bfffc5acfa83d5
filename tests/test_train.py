"""SB3 agents and train.py: configs, known-answer learning, determinism, exact resume, run directory."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from recarena.agents.registry import load_agent, make_agent
from recarena.cli import train as train_script
from recarena.core.checkpoint import latest_checkpoint, read_checkpoint
from recarena.core.errors import CheckpointError, ConfigError
from recarena.training.config import EnvConfig, load_run_config
from recarena.training.run import read_run
from recarena.training.tensorboard import read_scalars, read_text_tags
from tests._train_fixtures import (
    BEST,
    SMALL,
    _assert_same_weights,
    _config,
    _env,
    _fresh_observation,
    _weights,
)

ROOT = Path(__file__).resolve().parent.parent
# ------------------------------------------------------------------------------------ configs


def test_every_shipped_config_validates() -> None:
    files = sorted((ROOT / "configs").glob("*.yaml"))
    names = {f.stem for f in files}
    for agent in ("dqn", "ppo", "qlearning", "linear_q"):
        for data in ("ml100k", "ml1m"):
            assert f"{agent}_{data}" in names
    assert "quickstart" in names
    for path in files:
        config = load_run_config(path)
        assert config.data.path in ("ml-100k", "ml-1m") or path.stem == "implicit_quickstart"
        assert config.agent.config  # defaults filled in


def test_a_longer_env_history_alone_widens_the_logged_simulators_window(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"path": "ml-100k"}, "simulator": {"name": "logged"},
                                    "agent": {"name": "native_ppo"}}))
    config = load_run_config(path, ["env.history_length=50"])
    assert config.simulator.config["history_length"] == 50
    assert load_run_config(path).simulator.config["history_length"] == 20  # the simulator's default otherwise
    # set on both sides, the env's may not exceed the simulator's
    with pytest.raises(ConfigError, match=r"env\.history_length: 50 exceeds"):
        train_script.build_env(load_run_config(path, ["env.history_length=50", "simulator.config.history_length=20"]), "cpu")


def test_config_errors_name_the_key_and_the_choices(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"agent": {"name": "dqn"}, "train": {"total_steps": 10}}))
    with pytest.raises(ConfigError, match=r"train\.bogus.*valid keys under 'train' are"):
        load_run_config(path, ["train.bogus=1"])
    with pytest.raises(ConfigError, match=r"train\.total_steps: expected an integer"):
        load_run_config(path, ["train.total_steps=lots"])
    # The agent's keys are named by the path the user wrote (agent.config.x), not agent[dqn].x.
    with pytest.raises(ConfigError, match=r"\[.agent\.config\.learning_rat.\]; valid keys under .agent\.config. are") as error:
        load_run_config(path, ["agent.config.learning_rat=0.1"])
    assert "agent[" not in str(error.value)
    with pytest.raises(ConfigError, match=r"agent\.config\.features\.pooler: expected one of \['mean', 'gru', 'attention'\]"):
        load_run_config(path, ["agent.config.features.pooler=lstm"])
    with pytest.raises(ConfigError, match=r"agent\.config\.exploration_final_eps"):
        load_run_config(path, ["agent.config.exploration_final_eps=2.0"])
    with pytest.raises(ConfigError, match=r"unknown agent 'dqnn'; available agents: \[.*'dqn'"):
        load_run_config(path, ["agent.name=dqnn"])
    with pytest.raises(ConfigError, match=r"unknown simulator 'nope'"):
        load_run_config(path, ["simulator.name=nope"])
    with pytest.raises(ConfigError, match=r"simulator\.config\.n_itemz"):
        load_run_config(path, ["simulator.name=synthetic", "simulator.config.n_itemz=3"])
    with pytest.raises(ConfigError, match="exploration_final_eps"):
        load_run_config(path, ["agent.config.exploration_final_eps=2.0"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config(tmp_path / "missing.yaml")
    # The env's own checks name the run config's keys (not the env's keyword arguments), before any data loads.
    for env_options, message in (({"max_steps": 0}, r"^env\.max_steps: must be >= 1, got 0$"),
                                 ({"reward": "clicks"}, r"^env\.reward: must be None or one of")):
        config = dataclasses.replace(_config("dqn", 10), env=EnvConfig(num_envs=8, **env_options))
        with pytest.raises(ConfigError, match=message):
            train_script.build_env(config, "cpu")


def test_cli_overrides_and_resume_rules(tmp_path: Path) -> None:
    args = train_script.parse_args(
        ["--config", str(ROOT / "configs/dqn_ml100k.yaml"), "--set", "agent.config.learning_rate=3e-4",
         "--total-steps", "123", "--seed", "5", "--device", "cpu"]
    )
    config, run_dir, resuming = train_script.resolve(args)
    assert (config.agent.config["learning_rate"], config.train.total_steps, config.train.seed) == (3e-4, 123, 5)
    assert config.train.device == "cpu" and run_dir is None and not resuming
    with pytest.raises(ConfigError, match="give --config"):
        train_script.resolve(train_script.parse_args([]))
    with pytest.raises(CheckpointError, match="run directory not found"):
        train_script.resolve(train_script.parse_args(["--resume", str(tmp_path / "none")]))
    with pytest.raises(ConfigError, match=r"cannot change \['agent.name'\] when resuming"):
        train_script.resolve(train_script.parse_args(["--resume", str(tmp_path), "--set", "agent.name=ppo"]))
    assert train_script.main(["--config", str(tmp_path / "missing.yaml")]) == 2


def test_agent_construction_errors() -> None:
    env = _env(4)
    with pytest.raises(ConfigError, match="needs env="):
        make_agent("dqn", env.n_items, {})
    with pytest.raises(ConfigError, match="item_embeddings has 20 rows, n_items is 21"):
        make_agent("ppo", 21, {}, env=env)
    agent = make_agent("dqn", env.n_items, SMALL["dqn"], env=env)
    with pytest.raises(ConfigError, match="built for 4 users per step, the env has 16"):
        agent.learn(_env(16), 100)


# ------------------------------------------------------------------------------------ learning


@pytest.mark.parametrize("name, steps", [("dqn", 3000), ("ppo", 3000)])
def test_known_answer_agents_find_the_best_item(name: str, steps: int) -> None:
    """Every user rates item BEST 5 and every other item at most 3.5: the learnt policy must pick it."""
    env = _env(16)
    config = dict(SMALL[name], learning_rate=3e-3) if name == "ppo" else dict(SMALL[name], exploration_steps=steps // 2)
    agent = make_agent(name, env.n_items, config, env=env, seed=0, total_steps=steps)
    before = agent.scores(_fresh_observation()).argmax(dim=1)
    agent.learn(env, steps)
    chosen = agent.scores(_fresh_observation()).argmax(dim=1)
    assert (chosen == BEST).all(), f"{name} picks {chosen.tolist()}"
    assert not (before == BEST).all()  # it was learnt, not there from the start


@pytest.mark.parametrize("name", ["dqn", "ppo"])
def test_next_item_loss_is_trained_and_logged(name: str) -> None:
    """With next_item_coef the logged next items' cross-entropy is stepped after each update and falls."""
    from recarena.agents.item_scorer import LoggedNextItems, next_item_loss

    probe_env = _env(8)
    probe, target = LoggedNextItems.from_env(probe_env).sample(
        512, torch.Generator().manual_seed(9))

    def trained(coef: float) -> tuple[float, _Recorder, Any]:
        env = _env(8)
        agent = make_agent(name, env.n_items, dict(SMALL[name], next_item_coef=coef), env=env, seed=0,
                           total_steps=2048)
        logger = _Recorder()
        agent.learn(env, 2048, logger)
        return float(next_item_loss(agent.scores(probe), probe["history"], target)), logger, agent

    with_loss, logger, _ = trained(1.0)
    without, off_logger, off = trained(0.0)
    assert "losses/next_item" in logger.tags and "losses/next_item" not in off_logger.tags
    assert off.logged is None and off.model.after_update is None
    assert with_loss < without - 0.2  # measured: DQN 2.26 vs 2.67, PPO 2.51 vs 2.86


class _Recorder:
    def __init__(self) -> None:
        self.tags: set[str] = set()

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        self.tags.add(tag)


def test_maskable_ppo_learns_and_respects_masks() -> None:
    env = _env(8, mask_consumed=True)
    agent = make_agent("maskable_ppo", env.n_items, SMALL["maskable_ppo"], env=env, seed=0, total_steps=512)
    agent.learn(env, 512)
    assert agent.steps_done == 512
    observation = _fresh_observation()
    mask = torch.ones(32, env.n_items, dtype=torch.bool)
    mask[:, BEST] = False
    assert (agent.act(observation, k=1, action_mask=mask) != BEST).all()


@pytest.mark.parametrize("name", ["dqn", "ppo"])
def test_same_seed_repeats_exactly(name: str) -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        env = _env(8)
        agent = make_agent(name, env.n_items, SMALL[name], env=env, seed=seed, total_steps=512)
        agent.learn(env, 512)
        return {k: v.clone() for k, v in agent.model.policy.state_dict().items()}

    first, second, other = run(0), run(0), run(1)
    _assert_same_weights(first, second)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_save_load_round_trip(tmp_path: Path) -> None:
    env = _env(8)
    agent = make_agent("dqn", env.n_items, dict(SMALL["dqn"], features={"pooler": "attention"}), env=env)
    agent.learn(env, 256)
    agent.save(tmp_path / "agent")
    loaded = load_agent(tmp_path / "agent")
    observation = _fresh_observation()
    torch.testing.assert_close(agent.scores(observation), loaded.scores(observation), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="holds a 'dqn' agent, not a 'ppo' agent"):
        type(make_agent("ppo", env.n_items, {}, env=env)).load(tmp_path / "agent")


def test_restoring_into_a_different_agent_is_refused() -> None:
    env = _env(8)
    dqn = make_agent("dqn", env.n_items, SMALL["dqn"], env=env)
    dqn.learn(env, 64)
    tensors, metadata = dqn.checkpoint_state()
    other = make_agent("dqn", env.n_items, dict(SMALL["dqn"], batch_size=16), env=env)
    with pytest.raises(CheckpointError, match="config: checkpoint has"):
        other.restore_checkpoint_state(tensors, metadata)
    with pytest.raises(CheckpointError, match="agent: checkpoint has 'dqn', this run has 'ppo'"):
        make_agent("ppo", env.n_items, SMALL["ppo"], env=env).restore_checkpoint_state(tensors, metadata)


# ------------------------------------------------------------------------------------ train.py


@pytest.mark.parametrize("name, extra", [("dqn", {}), ("ppo", {}), ("ppo", {"next_item_coef": 1.0})],
                         ids=["dqn", "ppo", "ppo+next_item"])
def test_resume_after_crash_ends_with_the_same_weights(name: str, extra: dict, tmp_path: Path) -> None:
    """Uninterrupted 3 chunks == 1 chunk, a crash in the middle of chunk 2, resume, finish."""
    straight = train_script.train(_config(name, 768, extra), tmp_path / "straight", progress_bar=False)

    def crash(tag: str, value: float, step: int) -> None:
        if step > 384:  # inside the second chunk, after the first checkpoint
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        train_script.train(_config(name, 768, extra), tmp_path / "crashed", progress_bar=False, listeners=[crash])
    assert latest_checkpoint(tmp_path / "crashed" / "checkpoints").name.endswith("256")
    assert not (tmp_path / "crashed" / "agent").exists()
    resumed = train_script.train(_config(name, 768, extra), tmp_path / "crashed", resume=True, progress_bar=False)
    _assert_same_weights(_weights(straight.path), _weights(resumed.path))
    _, metadata, step = read_checkpoint(latest_checkpoint(resumed.checkpoints))
    assert step == 768 and metadata["progress"]["steps_done"] == 768


def test_train_cli_end_to_end(tmp_path: Path) -> None:
    config_path = tmp_path / "synthetic.yaml"
    config = _config("dqn", 512)
    from recarena.core.config import to_dict

    config_path.write_text(yaml.safe_dump(to_dict(config)))
    run_dir = tmp_path / "run"
    assert train_script.main(["--config", str(config_path), "--run-dir", str(run_dir), "--no-progress"]) == 0
    assert (run_dir / "config.yaml").is_file() and (run_dir / "eval.json").is_file()
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["versions"]["stable-baselines3"] and "git_commit" in metadata
    assert metadata["simulator"]["name"] == "synthetic"
    assert metadata["simulator"]["config"]["best_item"] == BEST
    scalars = read_scalars(run_dir / "tb")
    for tag in ("charts/episodic_return", "charts/ctr", "charts/session_length", "charts/sps",
                "charts/exploration_rate", "losses/td_loss", "train_eval/episodic_return", "train_eval/ctr",
                "sim/coverage", "sim/diversity", "sim/leave_rate"):
        assert tag in scalars, f"missing TensorBoard tag {tag}; have {sorted(scalars)}"
    assert [step for step, _ in scalars["train_eval/episodic_return"]] == [0, 512]
    assert any(tag.startswith("hyperparameters") for tag in read_text_tags(run_dir / "tb"))
    # A finished run extended with --resume --total-steps continues from its last checkpoint.
    assert train_script.main(["--resume", str(run_dir), "--total-steps", "768", "--no-progress"]) == 0
    _, _, step = read_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    assert step == 768
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["total_steps"] == 768
    # What the run directory says about itself, read back through its one reader.
    record = read_run(run_dir)
    assert record.final_step == 768 and record.config.train.total_steps == 768
    assert record.history_length == _env(1).history_length == metadata["resolved"]["history_length"]
    assert record.simulator.name == "synthetic" and record.simulator.options["best_item"] == BEST
    assert record.data_source is None and record.item_set_fingerprint is None  # synthetic: no logged data
    # A fresh run refuses a used directory.
    assert train_script.main(["--config", str(config_path), "--run-dir", str(run_dir), "--no-progress"]) == 2


def test_sb3_session_charts_match_the_native_definitions() -> None:
    """SB3's callback feeds the native agents' SessionStats: charts/ctr counts clicks over every user-step
    of the window; return, length and leave rate average over the sessions that ended in it."""
    from recarena.agents.sb3_agents import _EpisodeStats
    from recarena.agents.session_stats import SessionStats

    logged: dict[str, float] = {}
    agent = SimpleNamespace(log_every=4, next_log=4, stats=SessionStats(2, torch.eye(3), torch.device("cpu")))
    callback = _EpisodeStats(agent, SimpleNamespace(log_scalar=lambda tag, value, step: logged.update({tag: value})))
    callback.model = SimpleNamespace(num_timesteps=0, logger=SimpleNamespace(dump=lambda step: None))
    # Two users, two vector steps: 3 clicks in 4 user-steps; user 0 leaves after 2 steps with return 2.
    for rewards, clicked, dones in (([1.0, 0.0], [True, False], [False, False]),
                                    ([1.0, 1.0], [True, True], [True, False])):
        callback.model.num_timesteps += 2
        callback.locals = {"rewards": np.array(rewards), "dones": np.array(dones), "actions": np.array([0, 1]),
                           "infos": [{"clicked": c} for c in clicked]}
        callback._on_step()
    assert logged["charts/ctr"] == pytest.approx(3 / 4)
    assert logged["charts/episodic_return"] == 2.0 and logged["charts/session_length"] == 2.0
    assert logged["sim/leave_rate"] == 1.0 and logged["sim/coverage"] == pytest.approx(2 / 3)


GPU_CONFIG_AT_CI_SIZE = {
    # The GPU configs' interval settings count env steps at 65,536 users; scaled to 32 users here.
    "native_dqn_ml1m_gpu": ["agent.config.buffer_size=4096", "agent.config.batch_size=64",
                            "agent.config.learning_starts=256", "agent.config.target_update_interval=512",
                            "agent.config.exploration_steps=1024"],
    "native_ppo_ml1m_gpu": [],
}


@pytest.mark.parametrize("name", sorted(GPU_CONFIG_AT_CI_SIZE))
def test_gpu_configs_train_on_cpu_at_ci_size(name: str, tmp_path: Path) -> None:
    """The H100 configs run unchanged on CPU apart from sizes (and synthetic users instead of ML-1M)."""
    config_path = ROOT / "configs" / f"{name}.yaml"
    shipped = load_run_config(config_path)
    assert shipped.env.num_envs == 65536 and shipped.train.device == "auto"
    overrides = [
        "data.path=null", "simulator.name=synthetic", "env.num_envs=32", "train.total_steps=2048",
        "train.checkpoint_every=1024", "train.eval_every=1024", "train.eval_sessions=16", "train.log_every=256",
        *GPU_CONFIG_AT_CI_SIZE[name],
    ]
    run_dir = tmp_path / "run"
    argv = ["--config", str(config_path), "--device", "cpu", "--run-dir", str(run_dir), "--no-progress"]
    assert train_script.main([*argv, *(a for o in overrides for a in ("--set", o))]) == 0
    _, _, step = read_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    assert step >= 2048
    trained = yaml.safe_load((run_dir / "config.yaml").read_text())
    untouched = {k: v for k, v in shipped.agent.config.items() if not any(o.startswith(f"agent.config.{k}=") for o in overrides)}
    assert {k: trained["agent"]["config"][k] for k in untouched} == untouched
    scalars = read_scalars(run_dir / "tb")
    assert [s for s, _ in scalars["train_eval/episodic_return"]] == [0, 1024, 2048]
    assert "charts/sps" in scalars


def test_resume_refuses_a_corrupt_checkpoint(tmp_path: Path) -> None:
    run = train_script.train(_config("ppo", 256), tmp_path / "run", progress_bar=False)
    state = latest_checkpoint(run.checkpoints) / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        train_script.train(_config("ppo", 512), run.path, resume=True, progress_bar=False)


@pytest.mark.slow
def test_killed_process_resumes(tmp_path: Path) -> None:
    """A real SIGKILL at an arbitrary moment after the first checkpoint; resume finishes the run."""
    config_path = tmp_path / "c.yaml"
    from recarena.core.config import to_dict

    config_path.write_text(yaml.safe_dump(to_dict(_config("ppo", 4096))))
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(config_path), "--run-dir", str(run_dir),
               "--no-progress"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (run_dir / "checkpoints" / "latest").exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run_dir / "agent").exists()
    resumed = train_script.train(_config("ppo", 4096), run_dir, resume=True, progress_bar=False)
    assert (resumed.path / "agent" / "weights.safetensors").is_file()
    _, _, step = read_checkpoint(latest_checkpoint(resumed.checkpoints))
    assert step == 4096
