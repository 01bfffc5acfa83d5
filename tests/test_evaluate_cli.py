"""evaluate.py end to end on tiny generated data: smoke run, run directories, and error paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recarena import data
from recarena.agents.baselines import MostPopularAgent
from recarena.cli import evaluate
from recarena.evaluation import sources
from tests._eval_fixtures import make_log

FAST = ["--item-encoder", "genres", "--bootstrap", "50", "--ope-validation-events", "0", "--sim-users", "10", "--sim-steps", "3"]


def write_tiny_data(folder: Path, n_users: int = 30, n_items: int = 20, seed: int = 0) -> Path:
    """MovieLens-style ratings.csv / movies.csv with popularity-skewed random histories."""
    rng = np.random.default_rng(seed)
    popularity = np.arange(n_items, 0, -1, dtype=float)
    sequences = []
    for _ in range(n_users):
        items = rng.choice(n_items, size=int(rng.integers(6, 12)), replace=False, p=popularity / popularity.sum())
        sequences.append([(int(i), float(rng.integers(1, 6))) for i in items])
    log = make_log(sequences, n_items)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{u + 1},{i + 1},{r:.1f},{t}" for u, i, r, t in zip(log.user, log.item, log.rating, log.timestamp, strict=False)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"] + [f"{i + 1},Movie {i + 1} (1995),{'Drama' if i % 2 else 'Comedy'}" for i in range(n_items)]
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("data"))


def make_run(root: Path, data_dir: Path, item_set: str | None = None, data_fingerprint: str | None = None,
             config_yaml: str = "env:\n  history_length: 10\n") -> Path:
    """A run directory as train.py is expected to write it, holding a most-popular agent."""
    log = data.load_logs(str(data_dir))
    split = data.leave_last_out(log)
    root.mkdir(parents=True)
    MostPopularAgent(log.n_items).fit(split.train).save(root / "agent")
    metadata = {"data": {"source": str(data_dir), "item_set_fingerprint": item_set or log.item_set_fingerprint()},
                "global_step": 100}
    if data_fingerprint:
        metadata["data"]["data_fingerprint"] = data_fingerprint
    (root / "metadata.json").write_text(json.dumps(metadata))
    (root / "config.yaml").write_text(config_yaml)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(root / "tb"))  # train.py's TensorBoard folder
    for step in range(5):
        writer.add_scalar("charts/episodic_return", float(step), step * 10)
    writer.close()
    return root


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


def test_run_directory_is_evaluated_and_written_back(data_dir: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run1", data_dir)
    out = tmp_path / "report"
    assert evaluate.main([str(run), "--out", str(out), "--protocols", "ranking,replay", *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "run1" in report["candidates"]
    assert (out / "learning_curves.png").is_file()
    from recarena.evaluation.report import read_learning_curves

    curves = read_learning_curves(run, ("eval/ranking_leave-last-out/HR_at_10",))
    assert curves and curves["eval/ranking_leave-last-out/HR_at_10"][0][0] == 100
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["agent", "tb"]  # written next to training's
    # The run's most-popular agent matches the baseline built on the same data.
    assert evaluate.main(["--baseline", "most_popular", "--data", str(data_dir), "--out", str(tmp_path / "b"),
                          "--protocols", "ranking", "--history-length", "10", *FAST]) == 0
    baseline = json.loads((tmp_path / "b" / "report.json").read_text())["candidates"]["most_popular"]
    assert baseline["ranking"] == {s: {**r, "seconds": baseline["ranking"][s]["seconds"]}
                                   for s, r in report["candidates"]["run1"]["ranking"].items()}


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


# A run whose simulator makes every user leave after one step (hazard 1), with a session cap of 7.
LEAVING_RUN = """\
simulator:
  name: logged
  config:
    leave: {hazard: 1.0}
    preference: {epochs: 2}
env:
  history_length: 10
  max_steps: 7
"""
SIM_ONLY = ["--protocols", "simulated", "--item-encoder", "genres", "--bootstrap", "50", "--sim-users", "10"]


def test_runs_are_simulated_on_their_own_simulator(data_dir: Path, tmp_path: Path) -> None:
    default_run = make_run(tmp_path / "default", data_dir)
    assert evaluate.main([str(default_run), "--baseline", "most_popular", "--out", str(tmp_path / "a"), *SIM_ONLY]) == 0
    default = json.loads((tmp_path / "a" / "report.json").read_text())
    assert default["config"]["simulator"]["source"] == "default logged simulator"
    assert default["candidates"]["default"]["simulated"]["max_steps"] == 50
    assert default["candidates"]["default"]["simulated"]["metrics"]["session_length"] > 1.0

    run = make_run(tmp_path / "leaving", data_dir, config_yaml=LEAVING_RUN)
    assert evaluate.main([str(run), "--baseline", "most_popular", "--out", str(tmp_path / "b"), *SIM_ONLY]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["config"]["simulator"]["source"] == "the runs' config"
    assert report["config"]["simulator"]["options"]["leave"] == {"hazard": 1.0}
    for label in ("leaving", "most_popular"):  # baselines next to the run share its simulator
        simulated = report["candidates"][label]["simulated"]
        assert simulated["max_steps"] == 7  # the run's env.max_steps
        assert simulated["metrics"]["session_length"] == 1.0
    # --sim-steps still overrides the run's cap.
    assert evaluate.main([str(run), "--out", str(tmp_path / "c"), "--sim-steps", "3", *SIM_ONLY]) == 0
    assert json.loads((tmp_path / "c" / "report.json").read_text())["candidates"]["leaving"]["simulated"]["max_steps"] == 3


def test_runs_on_different_simulators_are_refused(data_dir: Path, tmp_path: Path, capsys) -> None:
    a = make_run(tmp_path / "a", data_dir, config_yaml=LEAVING_RUN)
    b = make_run(tmp_path / "b", data_dir, config_yaml=LEAVING_RUN.replace("hazard: 1.0", "hazard: 0.5"))
    assert evaluate.main([str(a), str(b), "--out", str(tmp_path / "out"), *SIM_ONLY]) == 2
    assert "different simulators" in capsys.readouterr().err
    c = make_run(tmp_path / "c", data_dir, config_yaml=LEAVING_RUN.replace("max_steps: 7", "max_steps: 9"))
    assert evaluate.main([str(a), str(c), "--out", str(tmp_path / "out"), *SIM_ONLY]) == 2
    assert "different session caps" in capsys.readouterr().err
    assert evaluate.main([str(a), str(c), "--out", str(tmp_path / "out"), "--sim-steps", "4", *SIM_ONLY]) == 0


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root, data: root / "missing", "not found"),
        (lambda root, data: (root / "empty").mkdir() or root / "empty", "metadata.json"),
        (lambda root, data: _corrupt_metadata(root), "not readable JSON"),
        (lambda root, data: make_run(root / "other", data, item_set="0123456789abcdef"), "different item set"),
        (lambda root, data: make_run(root / "otherdata", data, data_fingerprint="ffffffffffffffff"), "different data"),
        (lambda root, data: _run_without_agent(root, data), "no saved agent"),
    ],
)
def test_bad_run_directories_are_refused(data_dir: Path, tmp_path: Path, capsys, setup, message) -> None:
    run = setup(tmp_path, data_dir)
    code = evaluate.main([str(run), "--data", str(data_dir), "--out", str(tmp_path / "out"), *FAST])
    assert code == 2
    assert message in capsys.readouterr().err


def _corrupt_metadata(root: Path) -> Path:
    run = root / "corrupt"
    run.mkdir()
    (run / "metadata.json").write_text("{not json")
    return run


def _run_without_agent(root: Path, data: Path) -> Path:
    run = make_run(root / "noagent", data)
    for path in (run / "agent").iterdir():
        path.unlink()
    (run / "agent").rmdir()
    return run


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


def test_write_back_step_comes_from_the_runs_last_evaluation(data_dir: Path, tmp_path: Path) -> None:
    """Without global_step in metadata.json, the step of train.py's eval.json is used."""
    run = make_run(tmp_path / "run1", data_dir)
    metadata = json.loads((run / "metadata.json").read_text())
    del metadata["global_step"]
    (run / "metadata.json").write_text(json.dumps(metadata))
    (run / "eval.json").write_text(json.dumps({"step": 250, "episodic_return": 1.0}))
    assert evaluate.main([str(run), "--out", str(tmp_path / "report"), "--protocols", "ranking", *FAST]) == 0
    from recarena.evaluation.report import read_learning_curves

    curves = read_learning_curves(run, ("eval/ranking_leave-last-out/HR_at_10",))
    assert curves["eval/ranking_leave-last-out/HR_at_10"][0][0] == 250


@pytest.mark.parametrize(("config_yaml", "expected"), [
    ("env:\n  history_length: 10\n", 10),
    # train.py writes the resolved simulator options under simulator.config; env.history_length null
    ("env:\n  history_length: null\nsimulator:\n  name: logged\n  config:\n    history_length: 12\n", 12),
    ("env:\n  history_length: 7\nsimulator:\n  name: logged\n  config:\n    history_length: 12\n", 7),
    ("data:\n  source: x\n", 50),  # nothing recorded: the caller's default
])
def test_runs_are_scored_with_the_history_window_they_trained_with(data_dir: Path, tmp_path: Path,
                                                                   config_yaml: str, expected: int) -> None:
    run = make_run(tmp_path / "run", data_dir, config_yaml=config_yaml)
    _, metadata = sources.load_run(run, 50)
    assert metadata["_history_length"] == expected
