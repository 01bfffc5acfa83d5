"""evaluate.py end to end on tiny generated data: baselines, runs that train.py really wrote, error paths.

One run is trained per module (``train.py`` on a tiny MovieLens-format folder, the logged simulator,
linear Q); tests that edit or evaluate it work on copies, so each sees the run as train.py left it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from recarena.cli import evaluate
from recarena.cli import train as train_script
from recarena.core.errors import CheckpointError
from recarena.evaluation import sources
from recarena.evaluation.report import read_learning_curves
from recarena.training.run import RunRecord, read_run
from tests._report_fixtures import (
    FAST,
    MAX_STEPS,
    SIM_ONLY,
    SIMULATOR_HISTORY,
    TOTAL_STEPS,
    train_config,
    write_tiny_data,
)

RUN_FAST = ["--bootstrap", "50", "--ope-validation-events", "0", "--sim-users", "10", "--sim-steps", "3"]
"""Reports on the trained run: the MiniLM encodings it trained on (cached by training)."""


# One recarena cache for the module: the encodings and preference model training fits, evaluation reuses.
pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained_run(data_dir: Path, tmp_path_factory) -> Path:
    """A run directory written by ``train.py`` itself (once per module)."""
    root = tmp_path_factory.mktemp("runs")
    config = root / "linear_q.yaml"
    config.write_text(yaml.safe_dump(train_config(data_dir)))
    run_dir = root / "linear_q_tiny"
    assert train_script.main(["--config", str(config), "--run-dir", str(run_dir), "--no-progress"]) == 0
    return run_dir


def copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target)
    return target


def edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _leave_at_once(config: dict[str, Any], hazard: float = 1.0) -> None:
    config["simulator"]["config"]["leave"]["hazard"] = hazard


# ------------------------------------------------------------------------------------ baselines


def test_baselines_smoke(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    code = evaluate.main(["--baseline", "random", "--baseline", "most_popular", "--data", str(data_dir), "--out", str(out),
                          "--k", "5", *FAST])
    assert code == 0
    printed = capsys.readouterr().out
    assert "most_popular" in printed and "HR@5 LLO" in printed
    report = json.loads((out / "report.json").read_text())
    popular = report["candidates"]["most_popular"]
    assert set(popular) >= {"ranking", "replay", "ope", "simulated"}
    assert set(popular["ranking"]) == {"leave-last-out", "temporal"}
    assert popular["simulated"]["users"].startswith("held-out users")
    hr = popular["ranking"]["leave-last-out"]["metrics"]["HR@5"]
    random_hr = report["candidates"]["random"]["ranking"]["leave-last-out"]["metrics"]["HR@5"]
    assert hr > random_hr and popular["ranking"]["leave-last-out"]["n_users"] == 30
    assert (out / "metrics.png").stat().st_size > 0
    assert (out / "tradeoff.png").stat().st_size > 0  # two policies with ranking and simulated return
    markdown = (out / "report.md").read_text()
    assert "uniformly at random" in markdown and "## most_popular" in markdown and "(tradeoff.png)" in markdown


def test_validation_split_is_scored_on_request(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    code = evaluate.main(["--baseline", "most_popular", "--data", str(data_dir), "--out", str(out), "--k", "5",
                          "--protocols", "ranking", "--splits", "validation", *FAST])
    assert code == 0 and "HR@5 valid" in capsys.readouterr().out
    ranking = json.loads((out / "report.json").read_text())["candidates"]["most_popular"]["ranking"]
    assert set(ranking) == {"validation"} and ranking["validation"]["n_users"] == 30


def test_deterministic_reports(data_dir: Path, tmp_path: Path) -> None:
    args = ["--baseline", "random", "--data", str(data_dir), "--protocols", "ranking,replay", *FAST]
    assert evaluate.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert evaluate.main([*args, "--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "report.json").read_text())["candidates"]
    b = json.loads((tmp_path / "b" / "report.json").read_text())["candidates"]
    for split in ("leave-last-out", "temporal"):
        a["random"]["ranking"][split].pop("seconds")
        b["random"]["ranking"][split].pop("seconds")
    assert a == b


# ------------------------------------------------------------------------------------ train.py -> evaluate.py


def test_train_then_evaluate_round_trip(trained_run: Path, data_dir: Path, tmp_path: Path, capsys) -> None:
    """evaluate.py scores the directory train.py wrote, next to a baseline, by every protocol."""
    assert sorted(p.name for p in trained_run.iterdir()) == ["agent", "checkpoints", "config.yaml", "eval.json",
                                                             "metadata.json", "tb"]
    out = tmp_path / "report"
    code = evaluate.main([str(trained_run), "--baseline", "most_popular", "--out", str(out), "--k", "5",
                          "--bootstrap", "50", "--ope-validation-events", "0", "--sim-users", "10"])
    assert code == 0
    printed = capsys.readouterr().out
    assert trained_run.name in printed and "most_popular" in printed and "HR@5 LLO" in printed
    # What the simulated figures average over, under the table; replay match is HR@5 temp, said once.
    assert ("sim return, sim CTR: evaluate.py's simulated sessions of 10 held-out users from their full training "
            f"history, slate 5, at most {MAX_STEPS} steps") in printed
    assert "replay match (in report.json) = HR@5 temp by construction" in printed
    assert "replay match" not in printed.splitlines()[0]
    report = json.loads((out / "report.json").read_text())
    assert set(report["candidates"]) == {"most_popular", trained_run.name}
    assert report["config"]["data"] == str(data_dir)  # read from the run's config.yaml
    assert report["config"]["simulator"]["source"] == "the runs' config"
    assert report["config"]["simulator"]["options"]["reward"] == "rating"  # env.reward, as in training
    assert report["config"]["simulator"]["max_steps"] == MAX_STEPS  # the run's env.max_steps
    run = report["candidates"][trained_run.name]
    assert run["source"] == str(trained_run) and set(run) == {"source", "ranking", "replay", "ope", "simulated"}
    # The run trained on the leave-last-out split: the temporal split's test events are mostly in its training part.
    assert report["config"]["runs_trained_on"] == {trained_run.name: "leave-last-out"}
    for section in (run["ranking"]["temporal"], run["replay"], run["ope"]):
        assert section == {"not_scored": "n/a: trained on leave-last-out"}
    assert "n/a: trained on leave-last-out" in printed and "- replay: n/a: trained on leave-last-out" in (out / "report.md").read_text()
    popular = report["candidates"]["most_popular"]
    for entry, splits in ((run, ("leave-last-out",)), (popular, ("leave-last-out", "temporal"))):
        for split in splits:
            ranking = entry["ranking"][split]["metrics"]
            assert 0.0 <= ranking["NDCG@5"] <= ranking["HR@5"] <= 1.0 and 0.0 < ranking["MRR"] <= 1.0
        assert entry["ranking"]["leave-last-out"]["n_users"] == 30
        simulated = entry["simulated"]
        assert simulated["users"] == "held-out users from their full training history" and simulated["n_sessions"] == 10
        assert simulated["max_steps"] == MAX_STEPS
        assert 1.0 <= simulated["metrics"]["session_length"] <= MAX_STEPS
        assert 0.0 <= simulated["metrics"]["ctr"] <= 1.0
        # Rating reward: 1-5 per click, so the return lies between the clicks and five times them.
        clicks = simulated["metrics"]["ctr"] * simulated["metrics"]["session_length"]
        assert clicks - 1e-9 <= simulated["metrics"]["episodic_return"] <= 5 * clicks + 1e-9
    assert 0.0 <= popular["replay"]["match_rate"] <= 1.0 and popular["replay"]["n_matched"] <= popular["replay"]["n_events"]
    assert report["candidates"]["most_popular"]["ranking"]["leave-last-out"]["metrics"]["HR@5"] > 0.0
    for name in ("report.md", "metrics.png", "tradeoff.png", "learning_curves.png"):
        assert (out / name).stat().st_size > 0
    assert f"## {trained_run.name}" in (out / "report.md").read_text()
    # The headline figures went back into the run's TensorBoard at the step of its final agent.
    curves = read_learning_curves(trained_run, ("train_eval/episodic_return", "eval/ranking_leave-last-out/HR_at_5"))
    assert [step for step, _ in curves["train_eval/episodic_return"]] == [0, 128, TOTAL_STEPS]  # train.py's
    assert [step for step, _ in curves["eval/ranking_leave-last-out/HR_at_5"]] == [TOTAL_STEPS]


def interleave_times(folder: Path) -> Path:
    """``write_tiny_data``'s ratings with the users' events interleaved in time (event p of user u at
    1000 + 100 p + u), so that the temporal split's test users have a training history."""
    lines = (folder / "ratings.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    times = [f"{1000 + 100 * (int(t) - 1000 - 100 * (int(u) - 1)) + int(u)}" for u, _, _, t in rows]
    (folder / "ratings.csv").write_text("\n".join([lines[0]] + [",".join([*r[:3], t]) for r, t in zip(rows, times, strict=True)]) + "\n")
    return folder


def test_run_trained_on_the_temporal_split_is_scored_only_there(trained_run: Path, tmp_path: Path, capsys) -> None:
    """data.split: temporal trains the env's logged users on the temporal split's training part; evaluate.py
    scores that run on the temporal ranking, replay, OPE and simulated users of that split, and says n/a on
    leave-last-out (whose test events it trained on)."""
    from recarena.data import temporal_split
    from recarena.data.spec import data_spec

    data_dir = interleave_times(write_tiny_data(tmp_path / "data"))
    config = train_config(data_dir)
    config["data"]["split"] = "temporal"
    (tmp_path / "temporal.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "temporal_run"
    assert train_script.main(["--config", str(tmp_path / "temporal.yaml"), "--run-dir", str(run_dir), "--no-progress"]) == 0
    record = read_run(run_dir)
    train_part = temporal_split(data_spec(str(data_dir)).load()).train
    assert record.split == "temporal" and record.data_fingerprint == train_part.fingerprint()
    out = tmp_path / "report"
    assert evaluate.main([str(run_dir), "--baseline", "most_popular", "--out", str(out), "--k", "5",
                          "--splits", "leave-last-out,temporal,validation", *RUN_FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    run = report["candidates"][run_dir.name]
    for section in (run["ranking"]["leave-last-out"], run["ranking"]["validation"]):
        assert section == {"not_scored": "n/a: trained on temporal"}
    assert 0.0 <= run["ranking"]["temporal"]["metrics"]["HR@5"] <= 1.0
    assert run["replay"]["n_events"] == report["candidates"]["most_popular"]["replay"]["n_events"] > 0
    assert "DR" in run["ope"]["estimates"] and run["simulated"]["n_sessions"] > 0
    assert report["config"]["fitted_on"]["simulated"].startswith("the temporal split's training part")
    assert "n/a: trained on temporal" in capsys.readouterr().out
    # Runs of different splits have no common simulated users: refused (evaluate them separately).
    assert evaluate.main([str(run_dir), str(trained_run), *SIM_ONLY, "--out", str(tmp_path / "mixed")]) == 2
    assert "trained on different splits" in capsys.readouterr().err


def test_data_split_is_validated(data_dir: Path, tmp_path: Path, capsys) -> None:
    config = train_config(data_dir)
    config["data"]["split"] = "random"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    assert train_script.main(["--config", str(tmp_path / "bad.yaml"), "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "data.split" in capsys.readouterr().err


def test_evaluating_again_replaces_the_points_it_wrote(trained_run: Path, tmp_path: Path) -> None:
    """evaluate.py writes a run's figures into one event file per step: a second evaluation replaces
    them (one point per tag, not two), and figures of another protocol join them. Each carries a
    description naming the users and the slate."""
    from recarena.training.tensorboard import read_scalars

    run = copy_run(trained_run, tmp_path / "run")
    for _ in range(2):
        assert evaluate.main([str(run), *SIM_ONLY, "--out", str(tmp_path / "report")]) == 0
    scalars = read_scalars(run / "tb")
    assert scalars["eval/simulated/episodic_return"] == scalars["eval/simulated/episodic_return"][:1]
    assert [step for step, _ in scalars["eval/simulated/ctr"]] == [TOTAL_STEPS]
    assert evaluate.main([str(run), "--protocols", "ranking", "--k", "5", "--bootstrap", "50",
                          "--out", str(tmp_path / "report")]) == 0
    scalars = read_scalars(run / "tb")
    assert len(scalars["eval/simulated/episodic_return"]) == 1 and len(scalars["eval/ranking_leave-last-out/HR_at_5"]) == 1
    assert "eval/ranking_temporal/HR_at_5" not in scalars  # trained on leave-last-out: not scored on the temporal split
    from recarena.training.tensorboard import read_descriptions

    description = read_descriptions(run / "tb")["eval/simulated/episodic_return"]
    assert "10 held-out users from their full training history, slate 10" in description
    assert "not train.py's train_eval/*" in description


def test_every_plot_reads_on_its_own(trained_run: Path, tmp_path: Path, drawn) -> None:
    run = copy_run(trained_run, tmp_path / "run")
    assert evaluate.main([str(run), "--baseline", "most_popular", "--baseline", "random", "--out", str(tmp_path / "out"),
                          "--k", "5", "--no-tensorboard", *RUN_FAST]) == 0
    assert set(drawn) == {"metrics.png", "tradeoff.png", "learning_curves.png"}
    assert drawn == {name: [] for name in drawn}


def test_learning_curve_steps_do_not_overlap_at_training_scale(tmp_path: Path, drawn) -> None:
    """Six-digit step counts on three panels side by side (the quickstart's 200,704 steps)."""
    from recarena.evaluation import report

    steps = list(range(0, 200_705, 4096))
    curve = [(step, 1.0 + step / 1e5) for step in steps]
    runs = {name: {tag: curve for tag in ("charts/episodic_return", "charts/ctr", "train_eval/episodic_return")}
            for name in ("native_ppo_quickstart", "native_ppo_quickstart_seed1")}
    assert report._curve_plot(runs, tmp_path / "learning_curves.png")
    assert drawn == {"learning_curves.png": []}


def test_the_run_record_holds_what_training_resolved(trained_run: Path, data_dir: Path) -> None:
    record = read_run(trained_run)
    assert isinstance(record, RunRecord) and record.path == trained_run and record.name == trained_run.name
    assert record.data_source == str(data_dir) and record.config.agent.name == "linear_q"
    assert record.history_length == SIMULATOR_HISTORY  # env.history_length null: the simulator's window
    assert record.metadata["resolved"] == {"history_length": SIMULATOR_HISTORY}
    assert record.final_step == record.metadata["agent_step"] == TOTAL_STEPS
    assert record.agent_dir == trained_run / "agent"
    assert record.simulator.name == "logged" and record.simulator.max_steps == MAX_STEPS
    assert record.simulator.options["reward"] == "rating" and record.simulator.options["history_length"] == SIMULATOR_HISTORY
    assert record.item_set_fingerprint == record.metadata["simulator"]["item_set_fingerprint"]
    with pytest.raises(AttributeError):
        record.history_length = 3  # type: ignore[misc]
    candidate = sources.load_run(trained_run)
    assert candidate.label == trained_run.name and candidate.history_length == SIMULATOR_HISTORY
    assert candidate.run == record and candidate.agent.n_items == 20


def test_older_run_directories_are_resolved_with_the_env_rule(trained_run: Path, tmp_path: Path) -> None:
    """Runs written before train.py recorded ``resolved`` and ``agent_step``: window and step are worked out."""
    run = copy_run(trained_run, tmp_path / "old")
    edit_json(run / "metadata.json", lambda m: (m.pop("resolved"), m.pop("agent_step")))
    record = read_run(run)
    assert record.history_length == SIMULATOR_HISTORY and record.final_step == TOTAL_STEPS  # eval.json's step
    (run / "eval.json").unlink()
    assert read_run(run).final_step == TOTAL_STEPS  # the latest checkpoint's
    edit_yaml(run / "config.yaml", lambda c: c["env"].update(history_length=7))
    assert read_run(run).history_length == 7
    edit_yaml(run / "config.yaml", lambda c: c["env"].update(history_length=30))
    with pytest.raises(CheckpointError, match=r"config\.yaml: history_length(=|: )30 exceeds the simulator's"):
        read_run(run)


def test_runs_are_simulated_on_their_own_simulator(data_dir: Path, trained_run: Path, tmp_path: Path) -> None:
    # Baselines alone: the default logged simulator.
    assert evaluate.main(["--baseline", "most_popular", "--data", str(data_dir), "--out", str(tmp_path / "a"),
                          "--item-encoder", "genres", *SIM_ONLY]) == 0
    default = json.loads((tmp_path / "a" / "report.json").read_text())
    assert default["config"]["simulator"]["source"] == "default logged simulator"
    assert default["candidates"]["most_popular"]["simulated"]["max_steps"] == 50
    assert default["candidates"]["most_popular"]["simulated"]["metrics"]["session_length"] > 1.0

    # A run whose simulator makes every user leave after one step (leave hazard 1).
    run = copy_run(trained_run, tmp_path / "leaving")
    edit_yaml(run / "config.yaml", _leave_at_once)
    assert evaluate.main([str(run), "--baseline", "most_popular", "--out", str(tmp_path / "b"), *SIM_ONLY]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["config"]["simulator"]["source"] == "the runs' config"
    assert report["config"]["simulator"]["options"]["leave"]["hazard"] == 1.0
    for label in ("leaving", "most_popular"):  # baselines next to the run share its simulator
        simulated = report["candidates"][label]["simulated"]
        assert simulated["max_steps"] == MAX_STEPS  # the run's env.max_steps
        assert simulated["metrics"]["session_length"] == 1.0
    # --sim-steps still overrides the run's cap.
    assert evaluate.main([str(run), "--out", str(tmp_path / "c"), "--sim-steps", "3", *SIM_ONLY]) == 0
    assert json.loads((tmp_path / "c" / "report.json").read_text())["candidates"]["leaving"]["simulated"]["max_steps"] == 3


def test_runs_on_different_simulators_are_refused(trained_run: Path, tmp_path: Path, capsys) -> None:
    a = copy_run(trained_run, tmp_path / "a")
    edit_yaml(a / "config.yaml", _leave_at_once)
    b = copy_run(trained_run, tmp_path / "b")
    edit_yaml(b / "config.yaml", lambda c: _leave_at_once(c, 0.5))
    assert evaluate.main([str(a), str(b), "--out", str(tmp_path / "out"), *SIM_ONLY]) == 2
    assert "different simulators" in capsys.readouterr().err
    c = copy_run(a, tmp_path / "c")
    edit_yaml(c / "config.yaml", lambda config: config["env"].update(max_steps=9))
    assert evaluate.main([str(a), str(c), "--out", str(tmp_path / "out"), *SIM_ONLY]) == 2
    assert "different session caps" in capsys.readouterr().err
    assert evaluate.main([str(a), str(c), "--out", str(tmp_path / "out"), "--sim-steps", "4", *SIM_ONLY]) == 0


def test_a_run_is_refused_on_other_data(trained_run: Path, tmp_path: Path, capsys) -> None:
    """The real run against other data: other ratings of the same catalogue, then another catalogue."""
    for other, message in ((write_tiny_data(tmp_path / "same_items", seed=1), "trained on different data"),
                           (write_tiny_data(tmp_path / "more_items", n_items=25), "trained on a different item set")):
        code = evaluate.main([str(trained_run), "--data", str(other), "--out", str(tmp_path / "out"), *RUN_FAST])
        assert code == 2
        assert message in capsys.readouterr().err


def _rmtree(path: Path) -> Path:
    shutil.rmtree(path)
    return path


def _flip_last_weight_byte(run: Path) -> Path:
    """One bit of the last tensor's data: safetensors reads it fine, the scores would change."""
    weights = run / "agent" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    return run


BROKEN_RUNS = {
    "missing": (lambda run, root: root / "missing", "run directory not found"),
    "empty": (lambda run, root: (root / "empty").mkdir() or root / "empty", "missing config.yaml and metadata.json"),
    "corrupt metadata": (lambda run, root: (run / "metadata.json").write_text("{not json") and run,
                         "metadata.json: not valid JSON"),
    "corrupt config": (lambda run, root: (run / "config.yaml").write_text("env: [") and run, "config.yaml: not valid YAML"),
    "invalid config": (lambda run, root: edit_yaml(run / "config.yaml", lambda c: c["env"].update(bogus=1)) or run,
                       "config.yaml: not a valid run config"),
    "no agent": (lambda run, root: _rmtree(run / "agent").parent, "no saved agent (agent/agent.json)"),
    "corrupt agent": (lambda run, root: (run / "agent" / "agent.json").write_text("{") and run, "agent.json: not valid JSON"),
    "flipped weights": (lambda run, root: _flip_last_weight_byte(run), "agent/weights.safetensors: corrupt (SHA-256"),
    "other item set": (lambda run, root: edit_json(run / "metadata.json",
                                                   lambda m: m["simulator"].update(item_set_fingerprint="0123456789abcdef"))
                       or run, "different item set"),
    "other data": (lambda run, root: edit_json(run / "metadata.json",
                                               lambda m: m["simulator"].update(data_fingerprint="ffffffffffffffff")) or run,
                   "different data"),
    "no catalogue": (lambda run, root: edit_json(run / "metadata.json", lambda m: m["simulator"].pop("item_set_fingerprint"))
                     or run, "records no item_set_fingerprint"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_RUNS))
def test_bad_run_directories_are_refused(case: str, trained_run: Path, data_dir: Path, tmp_path: Path, capsys) -> None:
    """Real run directories, edited: each defect exits 2 with a message naming it."""
    setup, message = BROKEN_RUNS[case]
    run = setup(copy_run(trained_run, tmp_path / "run"), tmp_path)
    code = evaluate.main([str(run), "--data", str(data_dir), "--out", str(tmp_path / "out"), *RUN_FAST])
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--baseline", "oracle", "--data", "X"], "unknown baseline"),
        (["--baseline", "random"], "needs --data"),
        ([], "nothing to evaluate"),
        (["--baseline", "random", "--data", "X", "--set", "bogus.x=1"], "not a baseline"),
    ],
)
def test_bad_requests_exit_with_clear_errors(argv, message, tmp_path: Path, capsys) -> None:
    assert evaluate.main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--k", "0"], ["--protocols", "ranking,foo"], ["--max-users", "-1"], ["--splits", "random"],
                                   ["--item-encoder", "gpt"]])
def test_bad_flags_are_argparse_errors(flags, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--baseline", "random", "--data", "X", *flags])
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ one clear line, strict JSON


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[evaluate]")]
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error: "), err
    return lines[0]


def test_data_without_held_out_events_is_one_line(tmp_path: Path, capsys) -> None:
    """Every user has one event: no split can hold one out."""
    folder = tmp_path / "one_each"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,100\n2,2,3.0,200\n3,1,5.0,300\n")
    (folder / "movies.csv").write_text("movieId,title,genres\n1,Movie 1 (1995),Drama\n2,Movie 2 (1995),Comedy\n")
    for protocols in ("ranking", "replay", "simulated"):
        code = evaluate.main(["--baseline", "most_popular", "--data", str(folder), "--out", str(tmp_path / "out"),
                              "--protocols", protocols, *FAST])
        assert code == 2
        assert "hold out no events to evaluate on" in _one_error_line(capsys.readouterr().err) or protocols != "ranking"
    assert not (tmp_path / "out").exists()


def test_cuda_without_cuda_is_one_line(data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = evaluate.main(["--baseline", "random", "--data", str(data_dir), "--out", str(tmp_path / "out"),
                          "--device", "cuda", *FAST])
    assert code == 2
    assert "CUDA is not available here" in _one_error_line(capsys.readouterr().err)


def test_a_read_only_out_directory_is_one_line(data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Simulated (tests run as root, where chmod does not stop writes); earlier reports stay as they were."""
    import errno
    import tempfile

    out = tmp_path / "out"
    args = ["--baseline", "random", "--data", str(data_dir), "--out", str(out), "--protocols", "ranking", *FAST]
    assert evaluate.main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def read_only(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert evaluate.main(args) == 2
    assert f"{out}: Read-only file system" in _one_error_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_report_json_is_strict_json(tmp_path: Path) -> None:
    """A figure that could not be computed is null in report.json, never a bare NaN."""
    from recarena.evaluation.report import write_report

    results = {
        "config": {"data": "tiny"},
        "candidates": {"a": {"source": "baseline a", "simulated": {
            "n_sessions": 0, "users": "held-out users", "k": 10, "max_steps": 5,
            "metrics": {"episodic_return": float("nan"), "ctr": 0.5}, "intervals": {"ctr": [float("-inf"), 1.0]}}}},
    }
    write_report(results, tmp_path, 10)
    text = (tmp_path / "report.json").read_text()

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    report = json.loads(text, parse_constant=refuse)
    simulated = report["candidates"]["a"]["simulated"]
    assert simulated["metrics"] == {"episodic_return": None, "ctr": 0.5}
    assert simulated["intervals"]["ctr"] == [None, 1.0]
