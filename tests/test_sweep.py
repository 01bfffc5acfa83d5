"""recarena sweep: spec validation, expansion, the table's statistics, and one 2-config x 2-seed local
sweep on Ray Tune on tiny data (one trial killed after its first checkpoint: it must resume), then
evaluate.py on the sweep directory and a continued sweep that has nothing left to do.

One Ray start for the module (the ray_session fixture); the tests before it need no Ray, and the
Ray tests are skipped where the optional ray extra is not installed (make install installs it).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import pytest
import yaml

from recarena.cli import evaluate
from recarena.cli import sweep as sweep_cli
from recarena.core.errors import ConfigError
from recarena.evaluation.sweep_report import best_runs, mean_interval
from recarena.training.sweep_spec import expand, load_sweep_spec
from tests._report_fixtures import write_tiny_data
from tests._sweep_fixtures import write_spec

ROOT = Path(__file__).resolve().parent.parent
KILLED = "c1_s0"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("data"))


# ------------------------------------------------------------------------------------ no Ray needed



@pytest.mark.parametrize("spec", sorted(p.name for p in (ROOT / "configs" / "sweeps").glob("*.yaml")))
def test_every_shipped_sweep_spec_expands_into_valid_trials(spec: str) -> None:
    """Each spec under configs/sweeps validates, and so does every trial's full run config."""
    trials = expand(*load_sweep_spec(ROOT / "configs" / "sweeps" / spec))
    assert trials and len({trial.name for trial in trials}) == len(trials)
    assert all(trial.config["data"]["path"] in ("ml-100k", "ml-1m") for trial in trials)

def test_spec_expands_to_validated_trials(data_dir: Path, tmp_path: Path) -> None:
    spec, base = load_sweep_spec(write_spec(tmp_path, data_dir, set={"train.total_steps": 128}))
    trials = expand(spec, base)
    assert [t.name for t in trials] == ["c0_s0", "c0_s1", "c1_s0", "c1_s1"]
    assert [t.config["agent"]["config"]["exploration_steps"] for t in trials] == [50, 50, 400, 400]
    assert [t.config["train"]["seed"] for t in trials] == [0, 1, 0, 1]
    assert {t.config["train"]["total_steps"] for t in trials} == {128}
    assert {(t.config["train"]["torch_threads"], t.config["train"]["device"]) for t in trials} == {(1, "cpu")}
    # A grid's product, in the order of the keys.
    spec, base = load_sweep_spec(write_spec(tmp_path, data_dir, seeds=[3], params={
        "agent.config.exploration_steps": [50, 100, 200], "env.max_steps": [5, 6]}))
    assert [(t.overrides["agent.config.exploration_steps"], t.overrides["env.max_steps"]) for t in expand(spec, base)] == [
        (50, 5), (50, 6), (100, 5), (100, 6), (200, 5), (200, 6)]
    # Random search: `samples` draws, in range, the same for the same search_seed.
    params = {"agent.config.learning_rate": {"loguniform": [1e-3, 1e-1]}, "env.max_steps": {"randint": [3, 9]}}
    spec, base = load_sweep_spec(write_spec(tmp_path, data_dir, search="random", samples=5, params=params, seeds=[0]))
    drawn = [t.overrides for t in expand(spec, base)]
    assert len(drawn) == 5 and drawn == [t.overrides for t in expand(spec, base)]
    assert all(1e-3 <= d["agent.config.learning_rate"] <= 1e-1 and 3 <= d["env.max_steps"] <= 9 for d in drawn)
    assert len({d["agent.config.learning_rate"] for d in drawn}) == 5


def test_bad_specs_fail_in_one_line_before_ray_starts(data_dir: Path, tmp_path: Path, capsys) -> None:
    cases = [
        ({"parms": {}}, r"unknown config key\(s\) \['parms'\]; valid keys under '<top>' are: \['base', 'set', 'params'"),
        ({"params": {"agent.config.learning_rat": [0.1, 0.2]}}, r"agent\.config\.learning_rat.*valid keys under 'agent\.config'"),
        ({"params": {"train.total_stepz": [1, 2]}}, r"train\.total_stepz.*valid keys under 'train'"),
        ({"params": {"env.max_steps": ["many"]}}, r"env\.max_steps: expected an integer"),
        ({"params": {"env.max_steps": 5}}, r"params\.env\.max_steps: a grid search takes a non-empty list"),
        ({"select": "ranking/leave-last-out/HR@10"}, r"select 'ranking/leave-last-out/HR@10' reads the test event"),
        ({"measures": ["ranking/validation/HR@5"]}, r"measure 'ranking/validation/HR@5'.*evaluation\.k = 10"),
        ({"seeds": [0, 0]}, r"seeds: expected a non-empty list of distinct seeds"),
    ]
    for changes, pattern in cases:
        path = write_spec(tmp_path / "bad", data_dir, **changes)
        with pytest.raises(ConfigError, match=pattern):
            expand(*load_sweep_spec(path), where=str(path))
        assert sweep_cli.main([str(path), "--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("recarena sweep: error:") and str(path) in err[0], err
    assert not (tmp_path / "never").exists()
    if importlib.util.find_spec("ray") is not None:  # (the checks above need no Ray at all)
        import ray

        assert not ray.is_initialized()


def test_without_ray_the_command_says_how_to_install_the_extra(data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError (as without the extra)
    assert sweep_cli.main([str(write_spec(tmp_path, data_dir)), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"recarena sweep: error: {sweep_cli.INSTALL_HINT}"]
    assert "pip install 'recarena[ray]'" in err[0]


def test_mean_interval_over_seeds_is_students_t() -> None:
    mean, (low, high) = mean_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * sd 1 / sqrt(3)
    assert mean == 2.0 and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    assert mean_interval([5.0]) == (5.0, None)


# ------------------------------------------------------------------------------------ a local sweep on Ray


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module's sweeps (a sweep uses a Ray that is running and leaves it running)."""
    pytest.importorskip("ray.tune", reason="the optional ray extra is not installed (make install installs it)")
    sweep_cli.start_local_ray(num_cpus=2)
    yield
    sweep_cli.stop_ray()


@pytest.fixture(scope="module")
def finished_sweep(ray_session, data_dir: Path, tmp_path_factory) -> tuple[Path, dict, float]:
    """The 2-config x 2-seed sweep, with trial c1_s0 killed (SIGKILL of its Ray worker) after its first checkpoint."""
    folder = tmp_path_factory.mktemp("sweep")
    spec = write_spec(folder, data_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(sweep_cli.KILL_ENV, KILLED)
        started = time.perf_counter()
        results = sweep_cli.sweep(spec, folder / "out")
        seconds = time.perf_counter() - started
    return folder / "out", results, seconds


def test_local_sweep_writes_the_table_and_picks_the_best_by_validation(finished_sweep) -> None:
    out, results, seconds = finished_sweep
    assert seconds < 120, f"the tiny 2x2 sweep took {seconds:.0f} s"  # (Ray's start, ~8 s, is the fixture's)
    assert {p.name for p in out.iterdir()} >= {"sweep.json", "results.json", "results.md", "results.png", "runs", "trials", "tune"}
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["c0_s0", "c0_s1", "c1_s0", "c1_s1"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["best"] == results["best"] and on_disk["select"] == "ranking/validation/HR@10"
    records = {p.stem: json.loads(p.read_text()) for p in (out / "trials").glob("*.json")}
    assert all(r["status"] == "done" and r["step"] == 256 for r in records.values())
    # Each trial's figures are evaluate.py's, as written in its report.
    for name, record in records.items():
        report = json.loads((out / "evaluations" / name / "report.json").read_text())["candidates"][name]
        assert record["measures"]["ranking/validation/HR@10"] == report["ranking"]["validation"]["metrics"]["HR@10"]
        assert record["measures"]["ranking/leave-last-out/HR@10"] == report["ranking"]["leave-last-out"]["metrics"]["HR@10"]
        assert record["measures"]["simulated/episodic_return"] == report["simulated"]["metrics"]["episodic_return"]
    # Mean and interval over the two seeds; the best is the highest mean validation HR@10.
    means = {}
    for config in results["configs"]:
        values = [records[f"{config['id']}_s{s}"]["measures"]["ranking/validation/HR@10"] for s in (0, 1)]
        assert config["seeds"] == [0, 1] and config["values"]["ranking/validation/HR@10"] == values
        mean, interval = mean_interval(values)
        assert config["mean"]["ranking/validation/HR@10"] == pytest.approx(mean)
        assert config["interval"]["ranking/validation/HR@10"] == pytest.approx(list(interval))
        means[config["id"]] = mean
    assert results["best"] == max(means, key=means.get)
    table = (out / "results.md").read_text()
    assert f"**{results['best']} (best)**" in table and "| config | agent.config.exploration_steps | seeds |" in table
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_a_killed_trial_resumes_from_its_checkpoint(finished_sweep) -> None:
    out, _, _ = finished_sweep
    record = json.loads((out / "trials" / f"{KILLED}.json").read_text())
    assert record["killed"] == 256  # killed at its second evaluation, after checkpoint step_128
    first, second = record["attempts"]
    assert first["pid"] != second["pid"]  # a new Ray worker
    assert (first["resumed"], first["start_step"]) == (False, 0)
    assert (second["resumed"], second["start_step"]) == (True, 128)  # resumed, not restarted
    assert record["status"] == "done" and record["step"] == 256
    for name in ("c0_s0", "c0_s1", "c1_s1"):
        assert len(json.loads((out / "trials" / f"{name}.json").read_text())["attempts"]) == 1


def test_evaluate_scores_the_best_configurations_runs(finished_sweep, tmp_path: Path) -> None:
    out, results, _ = finished_sweep
    runs = best_runs(out)
    assert [r.name for r in runs] == [f"{results['best']}_s0", f"{results['best']}_s1"]
    report = tmp_path / "report"
    assert evaluate.main([str(out), "--baseline", "most_popular", "--out", str(report), "--protocols", "ranking",
                          "--splits", "validation", "--bootstrap", "50", "--no-tensorboard"]) == 0
    scored = json.loads((report / "report.json").read_text())["candidates"]
    assert set(scored) == {"most_popular", *(r.name for r in runs)}
    # The same figures the sweep recorded for those runs.
    for run in runs:
        recorded = json.loads((out / "trials" / f"{run.name}.json").read_text())["measures"]["ranking/validation/HR@10"]
        assert scored[run.name]["ranking"]["validation"]["metrics"]["HR@10"] == recorded


def test_a_finished_sweep_continues_with_nothing_to_do_and_refuses_another_spec(finished_sweep, data_dir: Path,
                                                                                  tmp_path: Path) -> None:
    out, results, _ = finished_sweep
    spec = Path(json.loads((out / "sweep.json").read_text())["spec_file"])
    again = sweep_cli.sweep(spec, out)  # every trial done: no Ray, the same table
    assert again["best"] == results["best"] and again["configs"] == results["configs"]
    other = write_spec(tmp_path, data_dir, seeds=[5])
    with pytest.raises(ConfigError, match="holds another sweep"):
        sweep_cli.sweep(other, out)


def test_early_stopping_stops_the_worse_trial_at_a_rung(ray_session, tmp_path: Path) -> None:
    """ASHA on train_eval/episodic_return: sessions capped at 1 step return far less than at 10, so the
    second trial (run after the first: max_concurrent 1) is stopped at the 128-step rung; the first finishes."""
    base = {"data": {"path": None}, "simulator": {"name": "synthetic", "config": {"n_items": 20, "n_users": 50}},
            "env": {"num_envs": 8, "max_steps": 10},
            "agent": {"name": "linear_q", "config": {"form": "per_item", "exploration_steps": 200}},
            "train": {"total_steps": 512, "device": "cpu", "checkpoint_every": 128, "eval_every": 128,
                      "eval_sessions": 32, "log_every": 64}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {"base": "base.yaml", "params": {"env.max_steps": [10, 1]}, "seeds": [0], "max_concurrent": 1,
            "select": "train_eval/episodic_return", "measures": ["train_eval/episodic_return"],
            "early_stopping": {"grace_steps": 128, "reduction_factor": 2}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    results = sweep_cli.sweep(tmp_path / "spec.yaml", tmp_path / "out")
    records = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out" / "trials").glob("*.json")}
    assert (records["c0_s0"]["status"], records["c0_s0"]["step"]) == ("done", 512)
    assert records["c1_s0"]["status"] == "stopped early"
    stopped_at = json.loads((tmp_path / "out" / "runs" / "c1_s0" / "eval.json").read_text())["step"]
    assert stopped_at < 512
    assert results["best"] == "c0" and "c1_s0 (stopped early)" in (tmp_path / "out" / "results.md").read_text()
