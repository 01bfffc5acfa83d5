"""Tests of the simulator plug-in registry, entry-point plug-ins and the custom-simulator example."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from recarena import simulators
from recarena.core.errors import ConfigError
from recarena.simulators import registry
from recarena.simulators.synthetic import SyntheticConfig, SyntheticSimulator

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_registry():
    """Remove whatever a test registers, so tests do not leak names into each other."""
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def test_builtins_are_available_and_make_builds_them():
    assert {"logged", "synthetic"} <= set(simulators.available())
    sim = simulators.make("synthetic", n_users=12, n_items=20, choice={"temperature": 0.5})
    assert isinstance(sim, SyntheticSimulator) and isinstance(sim, simulators.Simulator)
    assert sim.config.choice.temperature == 0.5 and sim.n_items == 20
    assert sim.device == torch.device("cpu")


def test_register_and_make_a_new_simulator(clean_registry):
    @dataclass
    class Cfg(SyntheticConfig):
        bonus: float = 1.0

    @simulators.register("bonus-test")
    class Bonus(SyntheticSimulator):
        config_class = Cfg

    assert "bonus-test" in simulators.available()
    sim = simulators.make("bonus-test", bonus=2.5, n_users=10, n_items=20)
    assert isinstance(sim, Bonus) and sim.config.bonus == 2.5 and sim.name == "bonus-test"


def test_unknown_name_lists_available():
    with pytest.raises(ConfigError, match="unknown simulator 'nope'.*logged.*synthetic"):
        simulators.make("nope")


def test_bad_config_keys_list_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key.*n_userz.*valid keys.*n_users"):
        simulators.make("synthetic", n_userz=3)
    with pytest.raises(ConfigError, match=r"choice\.temp.*temperature"):
        simulators.make("synthetic", choice={"temp": 1.0})
    with pytest.raises(ConfigError, match="n_users"):
        simulators.make("synthetic", n_users="many")


def test_register_refuses_non_simulators_and_name_clashes(clean_registry):
    with pytest.raises(ConfigError, match="not a subclass"):
        simulators.register("bad")(dict)

    class NoConfig(SyntheticSimulator):
        config_class = int

    with pytest.raises(ConfigError, match="dataclass"):
        simulators.register("bad")(NoConfig)

    class Other(SyntheticSimulator):
        pass

    with pytest.raises(ConfigError, match="already registered"):
        simulators.register("synthetic")(Other)


def test_describe_records_name_and_config_and_round_trips():
    sim = simulators.make("synthetic", n_users=12, n_items=20, leave={"hazard": 0.1})
    record = simulators.describe(sim)
    assert record["name"] == "synthetic" and record["class"] == "recarena.simulators.synthetic:SyntheticSimulator"
    record = json.loads(json.dumps(record))
    config = registry.config_from_record(record)
    assert config == sim.config
    again = simulators.make(record["name"], **record["config"])
    assert torch.equal(again.true_ratings, sim.true_ratings)
    defaults = simulators.describe("synthetic")
    assert defaults["config"]["n_users"] == SyntheticConfig().n_users and defaults["config"]["reward"] == "like"


PLUGIN = '''
from dataclasses import dataclass
import torch
from recarena.simulators.synthetic import SyntheticConfig, SyntheticSimulator

@dataclass
class LovesZeroConfig(SyntheticConfig):
    rating_of_zero: float = 5.0

class LovesZero(SyntheticSimulator):
    config_class = LovesZeroConfig

    def rate(self, state, slate):
        ratings, from_log = super().rate(state, slate)
        return torch.where(slate == 0, torch.full_like(ratings, self.config.rating_of_zero), ratings), from_log
'''


def install_plugin(root: Path, module: str, target: str) -> None:
    """A real installed distribution: a module plus a .dist-info with an entry_points.txt."""
    (root / f"{module}.py").write_text(textwrap.dedent(PLUGIN))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[recarena.simulators]\nloves-zero = {module}:{target}\n")


def test_entry_point_plugin_is_found_lazily_and_made(tmp_path, monkeypatch, clean_registry):
    install_plugin(tmp_path, "recarena_test_plugin", "LovesZero")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "loves-zero" in simulators.available()
    assert "recarena_test_plugin" not in sys.modules  # listed without importing it
    sim = simulators.make("loves-zero", rating_of_zero=4.5, n_users=10, n_items=20)
    assert type(sim).__name__ == "LovesZero" and sim.name == "loves-zero"
    state = sim.init_state(3)
    sim.reset(state, torch.ones(3, dtype=torch.bool), torch.Generator().manual_seed(0))
    ratings, _ = sim.rate(state, torch.tensor([[0, 1]] * 3))
    assert ratings[:, 0].tolist() == [4.5] * 3
    with pytest.raises(ConfigError, match="rating_of_zero"):
        simulators.make("loves-zero", rating_of_one=1.0)
    monkeypatch.delitem(sys.modules, "recarena_test_plugin")


def test_broken_entry_point_names_the_plugin(tmp_path, monkeypatch, clean_registry):
    install_plugin(tmp_path, "recarena_test_broken", "DoesNotExist")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="loves-zero.*failed to load"):
        simulators.make("loves-zero")
    monkeypatch.delitem(sys.modules, "recarena_test_broken", raising=False)


def test_custom_simulator_example_runs_in_process(clean_registry):
    namespace = runpy.run_path(str(ROOT / "examples" / "custom_simulator.py"))
    result = namespace["main"](users=128, steps=10)
    assert 0 < result["click_rate"] <= 1
    assert result["even_share_of_clicks"] < 0.35  # picky users avoid even items (half the catalogue)
    assert "picky" in simulators.available()


def test_custom_simulator_example_is_short_and_runs_as_a_script():
    path = ROOT / "examples" / "custom_simulator.py"
    assert len(path.read_text().splitlines()) < 50
    done = subprocess.run([sys.executable, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "picky" in done.stdout and "even_share_of_clicks" in done.stdout
