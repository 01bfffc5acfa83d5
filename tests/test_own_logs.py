"""Own logs from every entry point: the data spec (configs, train.py, evaluate.py, gym.make, recarena
fidelity), ISO timestamps, item text from named columns, rating scales, implicit feedback end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

import recarena  # noqa: F401  (registers the env ids)
from recarena.cli import evaluate
from recarena.cli import fidelity as fidelity_cli
from recarena.cli import train as train_script
from recarena.core.errors import ConfigError, DataFormatError
from recarena.data import DataSpec, data_spec, load_data, load_logs
from recarena.envs.common import clear_simulator_cache
from recarena.llm import item_texts
from recarena.training.config import load_run_config, run_config_from_dict
from recarena.training.run import read_run

ROOT = Path(__file__).resolve().parents[1]


def _example():
    """examples/implicit_logs.py as a module (examples/ is no package)."""
    spec = importlib.util.spec_from_file_location("implicit_logs_example", ROOT / "examples" / "implicit_logs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """The README's generated implicit-feedback log (smaller): events.csv, items.csv and the spec shop.yaml."""
    return _example().write_shop(tmp_path_factory.mktemp("shop"), n_users=60, n_items=24)


# A recarena cache of this module's own: the fits training makes, evaluation reuses.
pytestmark = pytest.mark.usefixtures("module_cache")


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


EVENTS = {"user": "uid", "item": "sku", "timestamp": "ts"}


# ----------------------------------------------------------------------------- reading


def test_csv_timestamps_as_iso_dates_or_epoch_seconds(tmp_path: Path) -> None:
    iso = write(tmp_path / "iso.csv", ["uid,sku,ts", "a,x,2024-01-02T00:00:00", "a,y,2024-01-01", "b,x,2024-01-01T01:00:00+01:00"])
    log = load_logs(iso, columns=EVENTS)
    day = 86_400
    start = 1_704_067_200  # 2024-01-01T00:00:00Z
    assert log.timestamp.tolist() == [start, start + day, start]  # a's events in time order; +01:00 -> UTC
    assert [log.items.title[i] for i in log.item[:2]] == ["y", "x"]
    epoch = write(tmp_path / "epoch.csv", ["uid,sku,ts", "a,x,1704153600", "a,y,1704067200"])
    assert load_logs(epoch, columns=EVENTS).timestamp.tolist() == [start, start + day]
    # Declared formats: milliseconds, a strptime pattern.
    millis = write(tmp_path / "ms.csv", ["uid,sku,ts", "a,x,1704067200500"])
    assert load_logs(millis, columns=EVENTS, timestamp_format="milliseconds").timestamp.tolist() == [start]
    custom = write(tmp_path / "custom.csv", ["uid,sku,ts", "a,x,02/01/2024 00:00"])
    assert load_logs(custom, columns=EVENTS, timestamp_format="%d/%m/%Y %H:%M").timestamp.tolist() == [start + day]
    # A date that does not parse names the file, the line and what was expected.
    bad = write(tmp_path / "bad.csv", ["uid,sku,ts", "a,x,2024-01-01", "a,y,yesterday"])
    with pytest.raises(DataFormatError, match=r"bad\.csv, line 3: expected an ISO 8601 date .* for 'ts', found 'yesterday'"):
        load_logs(bad, columns=EVENTS)
    with pytest.raises(ConfigError, match="timestamp_format='weekly' is not valid"):
        load_logs(iso, columns=EVENTS, timestamp_format="weekly")


def test_item_text_from_the_columns_the_user_names(tmp_path: Path) -> None:
    events = write(tmp_path / "events.csv", ["uid,sku,ts", "a,s1,1", "a,s2,2"])
    # An item file with only an id and a name column: the item's text is its name, not its id.
    names = write(tmp_path / "names.csv", ["sku,name", "s1,Blue kettle", "s2,Red teapot"])
    log = load_logs(events, columns=EVENTS, item_file=names)
    assert log.items.title == ["Blue kettle", "Red teapot"]
    assert item_texts(log.items) == ["Title: Blue kettle", "Title: Red teapot"]
    # Text from any columns: joined in the order given, the title not repeated.
    items = write(tmp_path / "items.csv", ["sku,name,description,brand", "s1,Blue kettle,Boils fast,Acme", "s2,Red teapot,,Zeta"])
    log = load_logs(events, columns=EVENTS, item_file=items,
                    item_columns={"item": "sku", "text": ["name", "description", "brand"]})
    assert log.items.title == ["Blue kettle", "Red teapot"]
    assert log.items.text == ["Boils fast. Acme", "Zeta"]
    assert item_texts(log.items)[0] == "Title: Blue kettle. Boils fast. Acme"
    with pytest.raises(ConfigError, match=r"item_columns.title: expected a column name, got \['name'\]"):
        load_logs(events, columns=EVENTS, item_file=items, item_columns={"item": "sku", "title": ["name"]})


def test_rating_scale_maps_onto_one_to_five_or_drops_ratings(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", ["uid,sku,ts,stars", "a,x,1,0", "a,y,2,10", "a,z,3,5"])
    columns = {**EVENTS, "rating": "stars"}
    assert load_logs(path, columns=columns, rating_scale=[0, 10]).rating.tolist() == [1.0, 5.0, 3.0]
    implicit = load_logs(path, columns=columns, rating_scale="none")
    assert not implicit.has_ratings and implicit.liked.all()
    with pytest.raises(DataFormatError, match=r"line 3: expected a rating in \[0, 5\] \(rating_scale\), found 10"):
        load_logs(path, columns=columns, rating_scale=(0, 5))
    with pytest.raises(ConfigError, match="no rating column"):
        load_logs(path, columns=EVENTS, rating_scale=(0, 5))


# ----------------------------------------------------------------------------- the spec


def test_data_spec_forms_and_errors(tmp_path: Path, shop: Path) -> None:
    assert data_spec("ml-1m") == DataSpec(path="ml-1m") and data_spec("ml-1m").to_value() == "ml-1m"
    assert data_spec({"source": "ml-100k"}).path == "ml-100k"  # the key configs used before
    spec = data_spec(str(shop))  # a spec file: its relative paths are relative to its folder
    assert spec.path == str(shop.parent / "events.csv") and spec.item_file == str(shop.parent / "items.csv")
    assert spec.columns == EVENTS and spec.item_columns["text"] == ["description"]
    assert data_spec(spec.to_value()) == spec  # the plain value round-trips
    log = load_data(spec)
    assert not log.has_ratings and log.n_items == 24 and log.items.genres[0] == ("garden",)
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['data.colums'\]; valid keys under 'data' are: \['path'"):
        data_spec({"path": "x.csv", "colums": {}})
    with pytest.raises(ConfigError, match=r"data.rating_scale: rating_scale=\[5, 1\] is not valid"):
        data_spec({"path": "x.csv", "rating_scale": [5, 1]})
    with pytest.raises(ConfigError, match="data spec file not found"):
        data_spec(str(tmp_path / "missing.yaml"))
    bad = write(tmp_path / "bad.yaml", ["path: events.csv", "column: {user: uid}"])
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key\(s\) \['column'\]"):
        data_spec(str(bad))


def test_run_config_data_section_takes_the_spec(shop: Path) -> None:
    mapping = {"path": "events.csv", "columns": EVENTS, "timestamp_format": "iso"}
    config = run_config_from_dict({"data": mapping, "simulator": {"name": "logged"}, "agent": {"name": "random"}})
    assert config.data.columns == EVENTS and config.data.timestamp_format == "iso"
    assert config.env.env_kwargs(config.data, config.simulator, "cpu")["data"] == mapping
    from_file = run_config_from_dict({"data": str(shop), "agent": {"name": "random"}})
    assert from_file.data == data_spec(str(shop))
    legacy = run_config_from_dict({"data": {"source": "ml-100k"}, "agent": {"name": "random"}})
    assert legacy.data.path == "ml-100k"
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['data.item_colums'\]"):
        run_config_from_dict({"data": {"path": "e.csv", "item_colums": {}}, "agent": {"name": "random"}})
    with pytest.raises(ConfigError, match=r"data.on_bad_rows: expected one of \['error', 'skip'\]"):
        load_run_config(None, ["agent.name=random", "data.on_bad_rows=ignore"])


# ----------------------------------------------------------------------------- gym.make, train.py, evaluate.py

TINY_CHOICE = {"choice": {"sequence": {"epochs": 2, "dim": 16}}, "encoder": {"progress": False}}


def test_gym_make_with_an_implicit_log_spec(shop: Path) -> None:
    clear_simulator_cache()
    for data in (str(shop), data_spec(str(shop)).to_value()):  # a spec file, or the mapping itself
        env = gym.make("recarena/ML100K-v1", data=data, simulator_config=TINY_CHOICE, max_steps=10)
        assert env.unwrapped.n_items == 24
        env.reset(seed=0)
        for _ in range(10):
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert reward == float(info["clicked"])  # implicit feedback: reward = click
            if terminated or truncated:
                break
        env.close()
    with pytest.raises(ConfigError, match=r"data: .*unknown config key\(s\) \['data.colums'\]"):
        gym.make("recarena/ML100K-v1", data={"path": str(shop.parent / "events.csv"), "colums": EVENTS})


def tiny_run_config() -> dict:
    return {
        "simulator": {"name": "logged", "config": {"history_length": 8, **TINY_CHOICE}},
        "env": {"num_envs": 8, "max_steps": 6},
        "agent": {"name": "linear_q", "config": {"form": "per_item", "exploration_steps": 200}},
        "train": {"total_steps": 256, "device": "cpu", "checkpoint_every": 128, "eval_every": 128,
                  "eval_sessions": 16, "log_every": 64},
    }


def test_implicit_logs_train_and_evaluate_end_to_end(shop: Path, tmp_path: Path, capsys) -> None:
    """The README's two commands on the generated implicit log: train.py --data SPEC, then evaluate.py."""
    config = tmp_path / "implicit.yaml"
    config.write_text(yaml.safe_dump(tiny_run_config()))
    run_dir = tmp_path / "run"
    assert train_script.main(["--config", str(config), "--data", str(shop), "--run-dir", str(run_dir), "--no-progress"]) == 0
    record = read_run(run_dir)
    assert record.data_source == data_spec(str(shop)).to_value()  # the resolved spec, in config.yaml
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["columns"] == EVENTS
    out = tmp_path / "report"
    argv = [str(run_dir), "--baseline", "most_popular", "--out", str(out), "--bootstrap", "50",
            "--ope-validation-events", "0", "--sim-users", "10", "--sim-steps", "3", "--no-tensorboard"]
    assert evaluate.main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["n_items"] == 24
    for label in (run_dir.name, "most_popular"):
        simulated = report["candidates"][label]["simulated"]
        assert 0.0 <= simulated["metrics"]["ctr"] <= 1.0
        assert set(report["candidates"][label]) >= {"ranking", "replay", "ope", "simulated"}
    # --data takes the same spec on the command line, also inline; the greedy baseline needs ratings.
    inline = json.dumps(data_spec(str(shop)).to_value())
    argv = ["--baseline", "random", "--data", inline, "--out", str(tmp_path / "inline"), "--protocols", "ranking",
            "--item-encoder", "genres", "--bootstrap", "20"]
    assert evaluate.main(argv) == 0
    assert evaluate.main(["--baseline", "greedy", "--data", str(shop), "--out", str(tmp_path / "g")]) == 2
    assert "needs ratings" in capsys.readouterr().err


def test_train_and_fidelity_data_errors_are_one_line(shop: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "implicit.yaml"
    config.write_text(yaml.safe_dump(tiny_run_config()))
    assert train_script.main(["--config", str(config), "--data", "{path: e.csv, colums: {}}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown config key(s) ['data.colums']" in err[0]
    with pytest.raises(SystemExit) as exit_info:
        fidelity_cli.main(["--data", str(shop), "--out", str(tmp_path / "fid")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recarena fidelity: error:") and "no ratings" in err[0]


def test_example_script_writes_a_log_its_spec_reads(tmp_path: Path, capsys) -> None:
    _example().main([str(tmp_path / "shop"), "--users", "20", "--items", "12"])
    assert "train.py --config configs/implicit_quickstart.yaml --data" in capsys.readouterr().out
    log = load_data(str(tmp_path / "shop" / "shop.yaml"))
    assert log.n_users == 20 and log.n_items == 12 and not log.has_ratings
    assert np.all(np.diff(log.timestamp[log.user_slice(0)]) > 0)
    assert item_texts(log.items)[0].startswith("Title: Small garden item 0. Genres: garden. A small thing")
    shipped = load_run_config(ROOT / "configs" / "implicit_quickstart.yaml", data=str(tmp_path / "shop" / "shop.yaml"))
    assert shipped.data.columns == EVENTS
