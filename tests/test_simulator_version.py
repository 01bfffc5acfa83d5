"""A run keeps the simulator it trained on when a simulator's defaults change.

train.py pins the simulator's version in metadata.json (``simulator_version``) next to config.yaml's fully
resolved options. A run written before the pin on the "logged" simulator (made here from a new tiny run by
deleting the pin and the options -v2 and -v3 added) is evaluated and resumed on logged-v1's users, with one
warning; a run pinned to -v2 (a new run with the pin and the options of -v2, as -v2 wrote it) stays -v2 now that
"logged" is -v3, and a pinned run stays on its version when the "logged" defaults change again (a changed
"logged" registered in the test).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from recarena.cli import evaluate
from recarena.cli import train as train_script
from recarena.core.config import config_dataclass
from recarena.core.errors import CheckpointError
from recarena.simulators import registry
from recarena.simulators.logged import LoggedConfig, LoggedUserSimulator
from recarena.training.run import OldSimulatorWarning, read_run
from tests._report_fixtures import SIM_ONLY, TOTAL_STEPS, train_config, write_tiny_data

V2_OPTIONS = ("answers", "answer_seed", "like_rounding")
"""The logged simulator's options added with env -v2 (absent from the config.yaml of older runs)."""
V3_LEAVE_OPTIONS = ("model", "session_gap")
"""The ``leave`` options added with env -v3."""


# One recarena cache for the module: the models training fits, evaluation and resumes reuse.
pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny run of train.py on the logged simulator (rating reward, linear Q), with today's defaults."""
    root = tmp_path_factory.mktemp("runs")
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(train_config(write_tiny_data(root / "data"))))
    run_dir = root / "pinned"
    assert train_script.main(["--config", str(config), "--run-dir", str(run_dir), "--no-progress"]) == 0
    return run_dir


def _edit(path: Path, edit) -> None:
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    else:
        data = yaml.safe_load(path.read_text())
        edit(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))


def unpinned_copy(run: Path, target: Path) -> Path:
    """``run`` as train.py wrote it before env -v2: no simulator_version, no -v2 options (config.yaml and
    metadata.json carry no checksum; the checkpoints' manifests do not cover them)."""
    shutil.copytree(run, target)

    def drop_options(options: dict[str, Any]) -> None:
        for key in V2_OPTIONS:
            del options[key]
        for key in V3_LEAVE_OPTIONS:
            del options["leave"][key]

    _edit(target / "config.yaml", lambda data: drop_options(data["simulator"]["config"]))
    _edit(target / "metadata.json", lambda data: (data.pop("simulator_version"), drop_options(data["simulator"]["config"])))
    return target


def _simulator_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, OldSimulatorWarning)]


def _simulated(out: Path, label: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's simulator options and the candidate's simulated metrics."""
    report = json.loads((out / "report.json").read_text())
    return report["config"]["simulator"]["options"], report["candidates"][label]["simulated"]["metrics"]


def test_a_new_run_pins_its_simulator_version(trained_run: Path) -> None:
    metadata = json.loads((trained_run / "metadata.json").read_text())
    assert metadata["simulator_version"] == "logged-v3"
    assert metadata["simulator"]["choice_fit"]["leave"]["gap_seconds"] == 3600  # the fitted session hazard
    options = yaml.safe_load((trained_run / "config.yaml").read_text())["simulator"]["config"]
    assert (options["answers"], options["like_rounding"], options["answer_seed"]) == ("calibrated", True, 0)
    assert options["leave"]["model"] == "sessions"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = read_run(trained_run)
    assert not _simulator_warnings(caught)
    assert record.simulator.version == "logged-v3"
    assert record.simulator.options["answers"] == "calibrated" and record.simulator.options["like_rounding"] is True


def test_a_run_from_before_v2_evaluates_on_logged_v1_with_one_warning(trained_run: Path, tmp_path: Path) -> None:
    old = unpinned_copy(trained_run, tmp_path / "old")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = read_run(old)
    assert _simulator_warnings(caught) == [
        f"{old}: trained before env -v2; its users are simulator logged-v1 (leave.model: patience, answers: mean, "
        "like_rounding: false)"]
    assert record.simulator.name == "logged" and record.simulator.version == "logged-v1"
    assert record.simulator.options["answers"] == "mean" and record.simulator.options["like_rounding"] is False
    assert record.simulator.options["leave"]["model"] == "patience"

    # evaluate.py simulates it on the -v1 users: as the same run with logged-v1's options written out, not as -v2.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert evaluate.main([str(old), *SIM_ONLY, "--out", str(tmp_path / "old_report")]) == 0
    assert len(_simulator_warnings(caught)) == 1
    options, metrics = _simulated(tmp_path / "old_report", "old")
    assert (options["answers"], options["like_rounding"]) == ("mean", False)
    explicit = shutil.copytree(trained_run, tmp_path / "explicit")
    _edit(explicit / "config.yaml", lambda data: (data["simulator"]["config"].update(answers="mean", like_rounding=False),
                                                  data["simulator"]["config"]["leave"].update(model="patience")))
    assert evaluate.main([str(explicit), *SIM_ONLY, "--out", str(tmp_path / "explicit_report")]) == 0
    assert _simulated(tmp_path / "explicit_report", "explicit")[1] == metrics
    current = shutil.copytree(trained_run, tmp_path / "current")
    assert evaluate.main([str(current), *SIM_ONLY, "--out", str(tmp_path / "current_report")]) == 0
    assert _simulated(tmp_path / "current_report", "current")[1] != metrics  # -v3's answers and leaving differ


def test_a_run_from_before_v2_resumes_on_logged_v1_and_is_pinned(trained_run: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    old = unpinned_copy(trained_run, tmp_path / "old")
    built: list[Any] = []
    build_env = train_script.build_env
    monkeypatch.setattr(train_script, "build_env", lambda *args: built.append(build_env(*args)) or built[-1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_script.main(["--resume", str(old), "--total-steps", str(TOTAL_STEPS + 128), "--no-progress"]) == 0
    assert len(_simulator_warnings(caught)) == 1
    config = built[0].simulator.config
    assert (config.answers, config.like_rounding) == ("mean", False)
    # The resume pinned it: logged-v1, its options written out; read again without a warning.
    assert json.loads((old / "metadata.json").read_text())["simulator_version"] == "logged-v1"
    options = yaml.safe_load((old / "config.yaml").read_text())["simulator"]["config"]
    assert (options["answers"], options["like_rounding"]) == ("mean", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = read_run(old)
    assert not _simulator_warnings(caught) and record.simulator.version == "logged-v1"
    assert record.final_step == TOTAL_STEPS + 128


def v2_copy(run: Path, target: Path) -> Path:
    """``run`` as train.py wrote it at env -v2: pinned ``logged-v2``, without the ``leave`` options -v3 added."""
    shutil.copytree(run, target)

    def drop_options(options: dict[str, Any]) -> None:
        for key in V3_LEAVE_OPTIONS:
            del options["leave"][key]

    _edit(target / "config.yaml", lambda data: drop_options(data["simulator"]["config"]))
    _edit(target / "metadata.json", lambda data: (data.update(simulator_version="logged-v2"),
                                                  drop_options(data["simulator"]["config"])))
    return target


def test_a_run_pinned_to_v2_stays_on_the_patience_leave_model(trained_run: Path, tmp_path: Path) -> None:
    old = v2_copy(trained_run, tmp_path / "v2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = read_run(old)
    assert not _simulator_warnings(caught)  # pinned: no guess, no warning
    assert record.simulator.version == "logged-v2" and record.simulator.options["leave"]["model"] == "patience"
    assert record.simulator.options["answers"] == "calibrated"  # the other -v2 options as they were
    assert evaluate.main([str(old), *SIM_ONLY, "--out", str(tmp_path / "v2_report")]) == 0
    options, metrics = _simulated(tmp_path / "v2_report", "v2")
    assert options["leave"]["model"] == "patience"
    explicit = shutil.copytree(trained_run, tmp_path / "explicit")
    _edit(explicit / "config.yaml", lambda data: data["simulator"]["config"]["leave"].update(model="patience"))
    assert evaluate.main([str(explicit), *SIM_ONLY, "--out", str(tmp_path / "explicit_report")]) == 0
    assert _simulated(tmp_path / "explicit_report", "explicit")[1] == metrics


def test_a_run_from_between_v2_and_the_pin_reads_as_v2_with_one_warning(trained_run: Path, tmp_path: Path) -> None:
    """Trained at -v2 before runs pinned their version: the -v2 options written out, no leave.model."""
    old = v2_copy(trained_run, tmp_path / "unpinned_v2")
    _edit(old / "metadata.json", lambda data: data.pop("simulator_version"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = read_run(old)
    assert _simulator_warnings(caught) == [
        f"{old}: trained before env -v3; its users are simulator logged-v2 (leave.model: patience)"]
    assert record.simulator.version == "logged-v2" and record.simulator.options["leave"]["model"] == "patience"


@config_dataclass
class _ChangedConfig(LoggedConfig):
    answers: Literal["calibrated", "mean"] = "mean"
    like_rounding: bool = False


class _ChangedLogged(LoggedUserSimulator):
    """"logged" after a (pretend) default change: version logged-v4."""

    config_class = _ChangedConfig
    version = "logged-v4"
    name = "logged"


class _FrozenV3(LoggedUserSimulator):
    """The -v3 defaults registered under their version's name, as the change would."""

    version = "logged-v3"
    name = "logged-v3"


def test_a_pinned_run_stays_v3_when_the_defaults_change(trained_run: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    before = shutil.copytree(trained_run, tmp_path / "run")
    assert evaluate.main([str(before), *SIM_ONLY, "--out", str(tmp_path / "before")]) == 0
    monkeypatch.setitem(registry._REGISTRY, "logged", _ChangedLogged)
    monkeypatch.setitem(registry._REGISTRY, "logged-v3", _FrozenV3)
    assert registry.get("logged").config_class().answers == "mean"

    run = shutil.copytree(trained_run, tmp_path / "after" / "run")
    # An option the run's config.yaml lacks (as one added by a later version would be) takes the pinned
    # version's default, not the changed one.
    _edit(run / "config.yaml", lambda data: data["simulator"]["config"].pop("like_rounding"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = read_run(run)
        assert evaluate.main([str(run), *SIM_ONLY, "--out", str(tmp_path / "after_report")]) == 0
    assert not _simulator_warnings(caught)
    assert record.simulator.version == "logged-v3"
    assert record.simulator.options["answers"] == "calibrated" and record.simulator.options["like_rounding"] is True
    assert _simulated(tmp_path / "after_report", "run") == _simulated(tmp_path / "before", "run")

    # Resumed after the change: trains on -v2's users still.
    built: list[Any] = []
    build_env = train_script.build_env
    monkeypatch.setattr(train_script, "build_env", lambda *args: built.append(build_env(*args)) or built[-1])
    assert train_script.main(["--resume", str(run), "--total-steps", str(TOTAL_STEPS + 128), "--no-progress"]) == 0
    config = built[0].simulator.config
    assert (config.answers, config.like_rounding) == ("calibrated", True)
    assert json.loads((run / "metadata.json").read_text())["simulator_version"] == "logged-v3"


def test_a_version_this_recarena_cannot_rebuild_is_refused(trained_run: Path, tmp_path: Path) -> None:
    run = unpinned_copy(trained_run, tmp_path / "run")
    _edit(run / "metadata.json", lambda data: data.update(simulator_version="logged-v9"))
    with pytest.raises(CheckpointError, match=r"metadata.json: simulator_version is 'logged-v9', which this recarena cannot"):
        read_run(run)
    _edit(run / "metadata.json", lambda data: data.update(simulator_version=2))
    with pytest.raises(CheckpointError, match=r"metadata.json: simulator_version must be a string, got 2"):
        read_run(run)
