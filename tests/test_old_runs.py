"""Runs, saved agents and checkpoints written before the config-vocabulary rename (131ed7f) and before
SessionStats (9bc9cbf) still load, evaluate and resume, with one warning naming the run and the keys.

The old files are made here from new tiny runs by writing them back in the old layout (old key names
and values, native ``global_step``, SB3's NumPy session statistics, Q's running ``returns``) with
their manifests rewritten, so the checksum path runs before the migration. ``tests/data/old_runs/``
holds the text files of the same tiny runs trained with the code at d35f468 (``config.yaml``,
``agent.json``, a checkpoint's ``metadata.json``): the tests check that the layout made here is
theirs and that those real files migrate.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from recarena.agents.registry import agent_class, agent_config
from recarena.agents.serialization import write_manifest
from recarena.cli import train as train_script
from recarena.core.checkpoint import OldCheckpointWarning, file_checksums
from recarena.core.config import OldConfigWarning, from_dict, migrate_renamed_keys
from recarena.core.errors import CheckpointError, ConfigError
from recarena.training.config import load_run_config, run_config_from_dict
from recarena.training.run import RunDirectory, migrate_run_config, read_run

FIXTURES = Path(__file__).parent / "data" / "old_runs"
TOTAL = 128
MID = "step_000000000064"

CONFIGS = {
    "native_ppo": {"n_steps": 2, "hidden_dim": 8, "n_epochs": 2, "clip_range": 0.15},
    "native_dqn": {"exploration_initial_eps": 0.9, "exploration_final_eps": 0.1, "exploration_steps": 60,
                   "mask": "env", "learning_starts": 16, "buffer_size": 256, "batch_size": 16},
    "dqn": {"exploration_steps": 32, "mask": "env", "learning_starts": 16, "buffer_size": 256, "batch_size": 16,
            "target_update_interval": 32},
    "tabular_q": {"exploration_initial_eps": 0.9, "exploration_final_eps": 0.1, "exploration_steps": 60,
                  "n_states": 4, "codebook_samples": 16},
}
"""The agent configs of the d35f468 runs in tests/data/old_runs/, in the new names."""

OLD_NAMES = {
    "native_ppo": {"n_steps": "num_steps", "n_epochs": "update_epochs", "clip_range": "clip_coef",
                   "normalize_advantage": "normalize_advantages"},
    "native_dqn": {"exploration_initial_eps": "exploration_initial", "exploration_final_eps": "exploration_final",
                   "mask": "mask_consumed"},
    "dqn": {"exploration_steps": "exploration_fraction", "mask": "mask_actions"},
    "tabular_q": {"exploration_initial_eps": "epsilon_start", "exploration_final_eps": "epsilon_end",
                  "exploration_steps": "epsilon_decay_steps"},
}
"""New key -> the key the same run's files had before the rename."""

OLD_LOG_INTERVAL = {"native_dqn": 5_000, "tabular_q": 2_000}
"""The agents' log_interval (a field then, written into every saved config)."""


def _run_data(name: str) -> dict[str, Any]:
    return {
        "data": {"source": None},
        "simulator": {"name": "synthetic", "config": {"n_items": 20, "n_users": 50, "events_per_user": 10}},
        "env": {"num_envs": 8, "max_steps": 10},
        "agent": {"name": name, "config": dict(CONFIGS[name])},
        "train": {"total_steps": TOTAL, "device": "cpu", "checkpoint_every": 64, "eval_every": 0,
                  "eval_sessions": 8, "log_every": 1_000, "keep_checkpoints": 2},  # no log: the window spans the resume
    }


# ---------------------------------------------------------------------------- the old layout


def _old_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """An agent config section as the code before the rename wrote it."""
    old = {}
    for key, value in config.items():
        if key == "features" and name == "dqn":
            value = {k: v for k, v in value.items() if k != "head"}  # features.head came later (5de86c7)
        new_key = OLD_NAMES[name].get(key, key)
        if key == "mask" and key in OLD_NAMES[name]:
            value = value == "env"
        elif key == "exploration_steps" and name == "dqn":
            value = value / TOTAL
        old[new_key] = value
    if name in OLD_LOG_INTERVAL:
        old["log_interval"] = OLD_LOG_INTERVAL[name]
    return old


def _rewrite_checkpoint(path: Path, name: str) -> None:
    """A checkpoint as the code before the rename wrote it, its manifest rewritten to match."""
    tensors = load_file(str(path / "state.safetensors"))
    metadata = json.loads((path / "metadata.json").read_text())
    agent = metadata["agent"]
    if name == "native_ppo":
        agent["skeleton"]["global_step"] = agent["skeleton"].pop("steps_done")
    elif name == "native_dqn":
        counters = agent["skeleton"]["counters"]
        agent["skeleton"]["counters"] = {"global_step": counters.pop("steps_done"), **counters}
    elif name == "tabular_q":
        stats = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith("agent/stats.")]}
        tensors["agent/returns"] = stats["agent/stats.episode_return"].clone()
        agent["window"] = {"episodes": 0, "return": 0.0, **agent["window"]}
    elif name == "dqn":
        agent["identity"]["config"] = _old_config(name, agent["identity"]["config"])
        skeleton = agent["state"]["stats"]
        new = {k: tensors.pop(f"agent/{v['__tensor__']}") for k, v in skeleton.items() if isinstance(v, dict)}
        old_arrays = {"return": new["episode_return"].double(), "length": new["episode_length"].long(),
                      "previous": new["previous_item"], "shown": new["shown"]}
        dtypes = {"return": "<f8", "length": "<i8", "previous": "<i8", "shown": "|b1"}
        tensors.update({f"agent//stats/{k}": v for k, v in old_arrays.items()})
        window = dict(zip(("episodes", "return", "length", "clicks", "steps", "left", "diversity", "pairs"),
                          new["sums"].tolist(), strict=True))
        agent["state"]["stats"] = {**{k: {"__ndarray__": f"/stats/{k}", "dtype": dtypes[k]} for k in old_arrays},
                                   "window": {k: window[k] for k in ("episodes", "return", "length", "left", "clicks",
                                                                     "steps", "diversity", "pairs")},
                                   "next_log": skeleton["next_log"]}
    save_file(tensors, str(path / "state.safetensors"))
    (path / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = file_checksums(path, ("state.safetensors", "metadata.json"))
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _make_old(run_dir: Path, name: str) -> None:
    """Rewrite a finished run's config.yaml, saved agent and checkpoint at step 64 in the old layout."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["agent"]["config"] = _old_config(name, config["agent"]["config"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    agent_json = json.loads((run_dir / "agent" / "agent.json").read_text())
    agent_json["config"] = _old_config(name, agent_json["config"])
    if name == "tabular_q":  # a saved Q agent is its checkpoint state
        weights = load_file(str(run_dir / "agent" / "weights.safetensors"))
        stats = {k: weights.pop(k) for k in [k for k in weights if k.startswith("stats.")]}
        weights["returns"] = stats["stats.episode_return"].clone()
        save_file(weights, str(run_dir / "agent" / "weights.safetensors"))
        agent_json["extra"]["window"] = {"episodes": 0, "return": 0.0, **agent_json["extra"]["window"]}
    (run_dir / "agent" / "agent.json").write_text(json.dumps(agent_json, indent=2, sort_keys=True) + "\n")
    write_manifest(run_dir / "agent")  # as the old code did: the checksums cover the old names
    _rewrite_checkpoint(run_dir / "checkpoints" / MID, name)


def _keys(tree: Any) -> Any:
    """The nested key structure of JSON data (values dropped)."""
    if isinstance(tree, dict):
        return {k: _keys(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_keys(v) for v in tree]
    return None


@pytest.fixture(scope="module")
def old_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """Per family: an old-layout run (trained here, rewritten) and its uninterrupted final weights."""
    root = tmp_path_factory.mktemp("old_runs")
    runs = {}
    for name in CONFIGS:
        run_dir = root / name
        train_script.train(run_config_from_dict(_run_data(name)), run_dir, progress_bar=False)
        weights = load_file(str(run_dir / "agent" / "weights.safetensors"))
        _make_old(run_dir, name)
        runs[name] = (run_dir, weights)
    return runs


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip: str = "stats.") -> None:
    keys = {k for k in a if not k.startswith(skip)}
    assert keys == {k for k in b if not k.startswith(skip) and k != "returns"}
    different = [k for k in sorted(keys) if not torch.equal(a[k], b[k])]
    assert not different, different


def _config_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, OldConfigWarning)]


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_old_layout_made_here_is_that_of_the_real_old_run(name: str, tmp_path: Path,
                                                             old_runs: dict[str, Any]) -> None:
    """Same keys as d35f468's own files of the same run (config.yaml, agent.json, checkpoint metadata)."""
    run_dir = old_runs[name][0]
    real = FIXTURES / name
    assert _keys(yaml.safe_load((run_dir / "config.yaml").read_text())["agent"]) == \
        _keys(yaml.safe_load((real / "config.yaml").read_text())["agent"])
    assert _keys(json.loads((run_dir / "agent" / "agent.json").read_text())["config"]) == \
        _keys(json.loads((real / "agent.json").read_text())["config"])
    made, old = (json.loads(path.read_text())["agent"] for path in (run_dir / "checkpoints" / MID / "metadata.json",
                                                                      real / "checkpoint_metadata.json"))
    for metadata in (made, old):  # SB3's per-tag log steps: which tags were logged by then (log_every differs)
        metadata.get("state", {}).pop("writer_next_step", None)
    assert _keys(made) == _keys(old)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_real_old_files_migrate_to_valid_configs(name: str) -> None:
    """d35f468's config.yaml and agent.json validate once migrated, with the settings the run had."""
    data = yaml.safe_load((FIXTURES / name / "config.yaml").read_text())
    with pytest.raises(ConfigError, match="was renamed"):  # as written, the old names are refused
        run_config_from_dict(data)
    migrated, notes = migrate_run_config(data)
    config = agent_config(name, run_config_from_dict(migrated).agent.config)
    assert notes and all(getattr(config, key) == value for key, value in CONFIGS[name].items())
    saved = json.loads((FIXTURES / name / "agent.json").read_text())["config"]
    cls = agent_class(name).config_class
    saved, _ = migrate_renamed_keys(saved, cls, TOTAL)
    assert from_dict(cls, saved) == config


@pytest.mark.parametrize("name", list(CONFIGS))
def test_an_old_run_evaluates_and_resumes_with_the_same_weights_and_one_warning(
        name: str, tmp_path: Path, old_runs: dict[str, Any]) -> None:
    source, trained = old_runs[name]
    run_dir = tmp_path / name
    shutil.copytree(source, run_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = read_run(run_dir)
        agent = record.load_agent()
    messages = _config_warnings(caught)
    assert len(messages) == 1, messages
    old_key = next(iter(OLD_NAMES[name].values()))
    assert messages[0].startswith(f"{run_dir}: config written by an older recarena; read agent.config.{old_key}")
    agent.save(tmp_path / "loaded")  # the loaded agent's weights are the saved ones
    _same_weights(load_file(str(tmp_path / "loaded" / "weights.safetensors")), trained)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_script.main(["--resume", str(run_dir), "--checkpoint", MID, "--no-progress"]) == 0
    assert len(_config_warnings(caught)) == 1
    restarted = [w for w in caught if issubclass(w.category, OldCheckpointWarning)]
    assert len(restarted) == (1 if name == "tabular_q" else 0)  # Q's running returns alone: statistics restart
    _same_weights(load_file(str(run_dir / "agent" / "weights.safetensors")), trained)
    final = [load_file(str(run / "checkpoints" / "step_000000000128" / "state.safetensors")) for run in (source, run_dir)]
    assert final[0].keys() == final[1].keys()
    different = [k for k in final[0] if not torch.equal(final[0][k], final[1][k])]
    # The whole training state is the uninterrupted run's (SB3's old session statistics read exactly),
    # but Q's restarted statistics (which may have caught up).
    assert not [k for k in different if not (name == "tabular_q" and k.startswith("agent/stats."))], different
    assert f"{old_key}:" not in (run_dir / "config.yaml").read_text()  # rewritten in the new names
    rewritten = run_config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())).agent.config
    assert agent_config(name, rewritten) == agent_config(name, CONFIGS[name])


def test_an_old_saved_agent_is_still_checked_before_it_is_migrated(tmp_path: Path, old_runs: dict[str, Any]) -> None:
    """Editing agent.json (here, writing the new name by hand) fails the manifest as before."""
    run_dir = tmp_path / "run"
    shutil.copytree(old_runs["native_ppo"][0], run_dir)
    path = run_dir / "agent" / "agent.json"
    path.write_text(path.read_text().replace('"num_steps"', '"n_steps"'))
    with pytest.warns(OldConfigWarning), pytest.raises(CheckpointError, match="agent.json: corrupt"):
        read_run(run_dir).load_agent()


def test_a_new_config_file_with_an_old_name_is_still_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(_run_data("native_ppo"))
    data["agent"]["config"] = {"num_steps": 2}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"agent\.config\.num_steps was renamed n_steps"):
        load_run_config(path, [])


def test_a_resume_that_changes_the_total_keeps_sb3_dqn_exploration_as_the_old_code_did(
        tmp_path: Path, old_runs: dict[str, Any]) -> None:
    """exploration_fraction is over the run's planned total, the one given on resume (as the old code
    had SB3 plan it): config.yaml's migration and the checkpoint's identity agree."""
    run_dir = tmp_path / "run"
    shutil.copytree(old_runs["dqn"][0], run_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_script.main(["--resume", str(run_dir), "--checkpoint", MID, "--total-steps", "192",
                                  "--no-progress"]) == 0
    assert "0.25 as exploration_steps 48 (0.25 x total_steps 192)" in _config_warnings(caught)[0]
    assert RunDirectory(run_dir).run_config().agent.config["exploration_steps"] == 48
