"""train.py never loses work or answers wrongly without a word: resuming without a ``latest`` pointer or
from a corrupt checkpoint, ``--total-steps`` below the trained steps, checksummed agent files, and one
clear line (exit 2) for a missing GPU, a full disk, a read-only run directory and bad configs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from recarena.agents.registry import load_agent, make_agent
from recarena.agents.serialization import load_tensors
from recarena.cli import train as train_script
from recarena.core.checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint
from recarena.core.config import to_dict
from recarena.core.errors import CheckpointError, ConfigError
from recarena.envs.vector_env import RecommendationVectorEnv
from recarena.training.config import run_config_from_dict

SIMULATOR = {"n_items": 20, "n_users": 50, "events_per_user": 10, "best_item": 3}
AGENTS = {
    "linear_q": {"form": "bilinear"},
    "native_ppo": {"hidden_dim": 16, "n_steps": 4},
    "ppo": {"n_steps": 8, "batch_size": 32, "net_arch": [16], "features": {"embed_dim": 8}},
}


def _data(agent: str = "linear_q", total_steps: int = 384, **train: Any) -> dict[str, Any]:
    return {
        "data": {"source": None},
        "simulator": {"name": "synthetic", "config": dict(SIMULATOR)},
        "env": {"num_envs": 8, "max_steps": 10},
        "agent": {"name": agent, "config": dict(AGENTS[agent])},
        "train": {"total_steps": total_steps, "device": "cpu", "checkpoint_every": 128, "eval_every": 0,
                  "eval_sessions": 8, "log_every": 64, "keep_checkpoints": 3, **train},
    }


def _config(agent: str = "linear_q", total_steps: int = 384, **train: Any):
    return run_config_from_dict(_data(agent, total_steps, **train))


def _config_file(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run_dir / "agent" / "weights.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _crash_after(step: int):
    def listener(tag: str, value: float, at: int) -> None:
        if at > step:
            raise KeyboardInterrupt("simulated kill")
    return listener


class _FirstStep:
    """The first training step logged (charts/ and losses/): where training (re)started."""

    def __init__(self) -> None:
        self.first: int | None = None

    def __call__(self, tag: str, value: float, step: int) -> None:
        if self.first is None and tag.split("/")[0] in ("charts", "losses"):
            self.first = step


def _one_error_line(err: str, prog: str = "train.py") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0]


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted linear-Q run of 384 steps (checkpoints at 128, 256, 384)."""
    return train_script.train(_config(), tmp_path_factory.mktemp("straight") / "run", progress_bar=False).path


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    """The same run killed during its third chunk: checkpoints at 128 and 256, no agent yet."""
    run_dir = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        train_script.train(_config(), run_dir, progress_bar=False, listeners=[_crash_after(256)])
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_000000000128", "step_000000000256"]
    return run_dir


# ------------------------------------------------------------------------------ 1. what --resume continues from


def test_resume_without_latest_continues_from_the_newest_checkpoint(crashed: Path, straight: Path, capsys) -> None:
    """A kill between a checkpoint and its pointer: resume from the newest checkpoint, not from step 0."""
    (crashed / "checkpoints" / "latest").unlink()
    first = _FirstStep()
    run = train_script.train(_config(), crashed, resume=True, progress_bar=False, listeners=[first])
    assert "latest is missing; resuming from the newest intact checkpoint, step_000000000256" in capsys.readouterr().err
    assert first.first is not None and first.first > 256  # continued; step 0 would log at 64 again
    assert _same(_weights(run.path), _weights(straight))  # bit-identical to the uninterrupted run
    assert json.loads((run.path / "eval.json").read_text())["step"] == 384


def test_resume_without_latest_skips_a_corrupt_newest_checkpoint(crashed: Path, straight: Path, capsys) -> None:
    (crashed / "checkpoints" / "latest").unlink()
    state = crashed / "checkpoints" / "step_000000000256" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:-10])
    run = train_script.train(_config(), crashed, resume=True, progress_bar=False)
    err = capsys.readouterr().err
    assert "resuming from the newest intact checkpoint, step_000000000128" in err and "skipped" in err
    assert _same(_weights(run.path), _weights(straight))


def test_a_corrupt_latest_checkpoint_names_the_intact_previous_one(crashed: Path, straight: Path, capsys) -> None:
    state = crashed / "checkpoints" / "step_000000000256" / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    assert train_script.main(["--resume", str(crashed), "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "step_000000000256/state.safetensors: corrupt" in line
    assert f"the previous checkpoint step_000000000128 is intact: continue from it with --resume {crashed} " \
           f"--checkpoint step_000000000128" in line
    assert train_script.main(["--resume", str(crashed), "--checkpoint", "step_000000000128", "--no-progress"]) == 0
    assert _same(_weights(crashed), _weights(straight))
    assert latest_checkpoint(crashed / "checkpoints").name == "step_000000000384"


def test_a_trained_run_without_checkpoints_is_not_restarted(straight: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    shutil.rmtree(run / "checkpoints")
    before = _snapshot(run)
    assert train_script.main(["--resume", str(run), "--no-progress"]) == 2
    assert "has no checkpoint to resume from; refusing to start it again" in _one_error_line(capsys.readouterr().err)
    assert _snapshot(run) == before
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train_script.train(_config(), straight, resume=True, progress_bar=False, checkpoint="step_000000000999")
    with pytest.raises(ConfigError, match="--checkpoint picks the checkpoint of a run"):
        train_script.resolve(train_script.parse_args(["--checkpoint", "step_1"]))


# ------------------------------------------------------------------------------ 6. --total-steps below the trained steps


def test_resume_refuses_total_steps_below_the_steps_trained(straight: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    before = _snapshot(run)
    assert train_script.main(["--resume", str(run), "--total-steps", "200", "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--total-steps 200 is below the 384 steps" in line and "give at least 384" in line
    assert _snapshot(run) == before  # config.yaml untouched
    assert train_script.main(["--resume", str(run), "--no-progress"]) == 0  # a finished run, as recorded: fine


def test_an_overshooting_run_resumes_as_recorded(tmp_path: Path) -> None:
    """native PPO trains whole rollouts (32 user-steps here): 200 asked for ends at 224 (recorded as the
    run's total_steps), and resuming the finished run with 200 or 210 (both round up to 224) is no error;
    190 (192) is below what it trained."""
    run = train_script.train(_config("native_ppo", 200), tmp_path / "run", progress_bar=False)
    assert json.loads((run.path / "metadata.json").read_text())["agent_step"] == 224
    assert run.run_config().train.total_steps == 224
    train_script.train(_config("native_ppo", 200), run.path, resume=True, progress_bar=False)
    train_script.train(_config("native_ppo", 210), run.path, resume=True, progress_bar=False)
    with pytest.raises(ConfigError, match="below the 224 steps"):
        train_script.train(_config("native_ppo", 190), run.path, resume=True, progress_bar=False)


# ------------------------------------------------------------------------------ 4. checksummed agent files


def test_flipped_bytes_in_the_saved_agent_are_refused(straight: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    agent_dir = run / "agent"
    load_agent(agent_dir)  # intact
    weights = agent_dir / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # inside the last tensor's data: safetensors itself reads it without complaint
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"agent/weights\.safetensors: corrupt \(SHA-256"):
        load_agent(agent_dir)
    assert json.loads((agent_dir / "manifest.json").read_text())["files"]["weights.safetensors"]["bytes"] == len(data)
    (agent_dir / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"agent/manifest\.json: missing"):
        load_agent(agent_dir)


def test_agent_directories_from_before_manifests_still_load(straight: Path, tmp_path: Path) -> None:
    agent_dir = tmp_path / "agent"
    shutil.copytree(straight / "agent", agent_dir)
    (agent_dir / "manifest.json").unlink()
    meta = json.loads((agent_dir / "agent.json").read_text())
    meta["format_version"] = 1
    (agent_dir / "agent.json").write_text(json.dumps(meta))
    assert load_agent(agent_dir).n_items == 20


# ------------------------------------------------------------------------------ 10. SB3 PPO loads without a warning


def test_loading_an_sb3_ppo_agent_warns_nothing(tmp_path: Path) -> None:
    env = RecommendationVectorEnv(num_envs=8, simulator="synthetic", simulator_config=dict(SIMULATOR), max_steps=10)
    agent = make_agent("ppo", env.n_items, AGENTS["ppo"], env=env)  # 8 x 8 = 64 per rollout; loaded: 8 x 1
    agent.learn(env, 64)
    agent.save(tmp_path / "agent")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_agent(tmp_path / "agent")
    assert not [str(w.message) for w in caught if "mini-batch" in str(w.message)]
    observation, _ = env.reset(seed=3)
    assert torch.equal(loaded.scores(observation), agent.scores(observation))


# ------------------------------------------------------------------------------ 11. one clear line, exit 2


def test_cuda_without_cuda_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = _config_file(tmp_path, _data())
    assert train_script.main(["--config", str(config), "--device", "cuda", "--run-dir", str(tmp_path / "run"),
                              "--no-progress"]) == 2
    assert "device 'cuda' was requested but CUDA is not available here" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_a_full_disk_is_one_line_and_the_run_stays_resumable(tmp_path: Path, monkeypatch, capsys) -> None:
    config = _config_file(tmp_path, _data(total_steps=256))
    run = tmp_path / "run"
    real_replace = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if "step_000000000256" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    assert train_script.main(["--config", str(config), "--run-dir", str(run), "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "step_000000000256: No space left on device (the disk is full; free some space" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_000000000128"]  # no leftovers
    read_checkpoint(latest_checkpoint(run / "checkpoints"))  # the last complete checkpoint is intact
    monkeypatch.setattr(os, "replace", real_replace)
    assert train_script.main(["--resume", str(run), "--no-progress"]) == 0
    assert read_checkpoint(latest_checkpoint(run / "checkpoints"))[2] == 256


def test_a_read_only_run_directory_is_one_line_and_untouched(straight: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Tests run as root, where chmod does not stop writes: the read-only file system is simulated."""
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    before = _snapshot(run)

    def read_only(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    assert train_script.main(["--resume", str(run), "--total-steps", "512", "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{run}: Read-only file system (the file system is read-only" in line
    assert _snapshot(run) == before


def test_an_empty_config_file_says_so(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here yet\n")
    assert train_script.main(["--config", str(empty), "--no-progress"]) == 2
    assert f"{empty}: the config file is empty" in _one_error_line(capsys.readouterr().err)


def test_an_int_past_uint64_is_reported_as_given(tmp_path: Path, capsys) -> None:
    big = str(2**64 + 5)
    config = _config_file(tmp_path, _data())
    for key in ("env.max_steps", "train.eval_sessions", "agent.config.seed"):
        code = train_script.main(["--config", str(config), "--set", f"{key}={big}", "--run-dir", str(tmp_path / "r"),
                                  "--no-progress"])
        assert code == 2
        assert f"must be < 9223372036854775808, got {big}" in _one_error_line(capsys.readouterr().err)
    data = _data()
    data["env"]["max_steps"] = 2**64 + 5
    with pytest.raises(ConfigError, match=rf"env\.max_steps: must be < 9223372036854775808, got {big}"):
        run_config_from_dict(data)
    assert to_dict(run_config_from_dict(_data()))["env"]["max_steps"] == 10
