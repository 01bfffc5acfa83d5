"""What a person meets running the commands: ``--help`` with every default and the progress bar's legend;
the progress bar and TensorBoard naming the slate size and the users or sessions behind each figure;
``train.total_steps`` in whole agent units, so no log point lies past it; ``--resume`` of a finished run
that says there is nothing to do; and a TensorBoard command that works without the venv on PATH."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from recarena.cli import train as train_script
from recarena.cli.main import main as recarena_main
from recarena.training.tensorboard import read_scalars

SLATE, USERS, SESSIONS = 2, 8, 12


def _config_file(tmp_path: Path, total_steps: int = 200, **train: Any) -> Path:
    """Native PPO (units of 4 steps x 8 users = 32 user-steps) on small synthetic users, slate 2."""
    data = {
        "simulator": {"name": "synthetic", "config": {"n_items": 20, "n_users": 50, "events_per_user": 10}},
        "env": {"num_envs": USERS, "max_steps": 10, "slate_size": SLATE},
        "agent": {"name": "native_ppo", "config": {"hidden_dim": 16, "n_steps": 4}},
        "train": {"total_steps": total_steps, "device": "cpu", "checkpoint_every": 64, "eval_every": 64,
                  "eval_sessions": SESSIONS, "log_every": 32, **train},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, str, str]:
    """A run trained by ``train.py`` with its progress bar on: (run directory, stdout, stderr)."""
    root = tmp_path_factory.mktemp("finished")
    run = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        out, err = root / "stdout", root / "stderr"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            patch.setattr(sys, "stdout", stdout)
            patch.setattr(sys, "stderr", stderr)
            code = train_script.main(["--config", str(_config_file(root)), "--run-dir", str(run)])
    assert code == 0, err.read_text()
    return run, out.read_text(), err.read_text()


# ------------------------------------------------------------------------------------ --help


@pytest.mark.parametrize("command, expected", [
    ("train", ["--total-steps TOTAL_STEPS user-steps to train for, rounded up to the agent's unit "
               "(default: the config's train.total_steps)", "--seed SEED (default: the config's train.seed)",
               "eval(S sessions) the greedy policy's mean return over S = train.eval_sessions",
               "return mean return of the training sessions", "charts/episodic_return"]),
    ("evaluate", ["(default: 10)", "--bootstrap BOOTSTRAP bootstrap resamples per interval (default: 1000)",
                  "(default: ranking,replay,ope,simulated)", "--out OUT", "(default: eval_report)",
                  "(default: all)"]),
    ("fidelity", ["--seed SEED (default: 0)", "--split {user-last,leave-last-out,temporal} (default: user-last)",
                  "(default: minilm)"]),
])
def test_help_shows_the_defaults(command: str, expected: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        recarena_main([command, "--help"])
    assert exit_info.value.code == 0
    text = _flat(capsys.readouterr().out)
    for fragment in expected:
        assert fragment in text, f"{command} --help lacks {fragment!r}:\n{text}"


# ------------------------------------------------------------------------------------ what the figures are


def test_the_progress_bar_names_slate_users_and_sessions(finished) -> None:
    _, _, err = finished
    assert f"train (slate {SLATE}, {USERS} users)" in err
    assert f"eval({SESSIONS} sessions)=" in err and "return=" in err


def test_tensorboard_tags_say_what_they_average_over(finished) -> None:
    """train.py's periodic evaluation is train_eval/*, not eval/* (evaluate.py's, other users and slate),
    and every figure's description states the slate size and the users or sessions."""
    from recarena.training.tensorboard import read_descriptions

    run, _, _ = finished
    scalars = read_scalars(run / "tb")
    assert {"train_eval/episodic_return", "train_eval/ctr", "charts/episodic_return", "charts/ctr"} <= set(scalars)
    assert not [tag for tag in scalars if tag.startswith("eval/")]
    descriptions = read_descriptions(run / "tb")
    for tag in ("train_eval/episodic_return", "train_eval/ctr", "train_eval/session_length"):
        assert f"{SESSIONS} fixed-seed sessions" in descriptions[tag] and f"slate {SLATE}" in descriptions[tag]
        assert "Not evaluate.py's eval/simulated/*" in descriptions[tag]
    for tag in ("charts/episodic_return", "charts/ctr", "sim/leave_rate"):
        assert f"{USERS} simulated users per step, slate {SLATE}" in descriptions[tag]


def test_total_steps_rounds_up_to_whole_units_and_no_log_point_lies_past_it(finished) -> None:
    """200 asked for, units of 32: the run says so, trains to 224, records 224, and logs nothing past it."""
    run, _, err = finished
    assert "native_ppo trains in units of 32 user-steps, so train.total_steps 200 rounds up to 224" in err
    total = yaml.safe_load((run / "config.yaml").read_text())["train"]["total_steps"]
    assert total == 224
    last = max(step for points in read_scalars(run / "tb").values() for step, _ in points)
    assert last == total
    assert "224/224" in err  # the bar ends where training ends


# ------------------------------------------------------------------------------------ --resume, TensorBoard hint


def test_resuming_a_finished_run_has_nothing_to_do(finished, tmp_path: Path, capsys) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished[0], run)
    before = {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert train_script.main(["--resume", str(run)]) == 0  # progress bar on
    err = capsys.readouterr().err
    assert "has trained 224 user-steps (train.total_steps 224) and saved its agent: nothing to do" in err
    assert "%|" not in err and "step/s" not in err  # no progress bars
    after = {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert after == before  # no new (empty) event file, nothing rewritten
    # Asking for more trains on.
    assert train_script.main(["--resume", str(run), "--total-steps", "256", "--no-progress"]) == 0
    assert max(step for step, _ in read_scalars(run / "tb")["charts/ctr"]) == 256


def test_the_tensorboard_command_runs_without_the_venv_on_path(finished) -> None:
    run, out, _ = finished
    lines = out.splitlines()
    command = shlex.split(lines[lines.index("watch it in TensorBoard:") + 1])
    assert command[-2:] == ["--logdir", str(run.parent)]
    assert Path(command[0]).is_absolute() and os.access(command[0], os.X_OK)
    bare = {key: value for key, value in os.environ.items() if key not in ("PATH", "VIRTUAL_ENV")}
    result = subprocess.run([*command[:-2], "--version_tb"], capture_output=True, text=True, timeout=120,
                            env={**bare, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
