"""A tiny sweep spec shared by the sweep tests (test_sweep.py, test_sweep_cluster.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests._report_fixtures import train_config

MEASURES = ["ranking/validation/HR@10", "ranking/leave-last-out/HR@10", "simulated/episodic_return",
            "train_eval/episodic_return"]


def write_spec(folder: Path, data: Path, **changes) -> Path:
    """A base config (tiny logged-simulator linear Q run, 256 steps, checkpoints every 128) and a spec over it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(yaml.safe_dump(train_config(data)))
    spec = {"base": "base.yaml", "params": {"agent.config.exploration_steps": [50, 400]}, "seeds": [0, 1],
            "select": "ranking/validation/HR@10", "measures": MEASURES, "max_failures": 1,
            "evaluation": {"sim_users": 10, "sim_steps": 3, "bootstrap": 50}, **changes}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
