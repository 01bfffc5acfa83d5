"""Shared pytest setup: one torch thread, offline Hugging Face, a cache of this run's own, no GPU assumed.

* ``RECARENA_CACHE`` points at a fresh temporary directory for the whole test run (removed at the
  end), so tests never read or write the user's cache; set ``RECARENA_TEST_CACHE=DIR`` to reuse a
  cache directory across runs while developing (the one-time fits then happen once).
* The simulators an env shares within a process are forgotten at the start of every test module,
  so no module depends on what an earlier one built.
* ``module_cache``: a module that marks itself ``pytest.mark.usefixtures("module_cache")`` gets a
  ``RECARENA_CACHE`` of its own for all its tests (its fits reused within it, not across modules).
* ``fresh_cache``: the same, per test: a ``RECARENA_CACHE`` of each test's own.
* ``drawn``: the readability problems of every figure an evaluation report saves during a test.
* ``panel_report``: an evaluate.py report of 5 baselines with the policy-ranking panel (per module).
* Tests marked ``gpu`` need CUDA and are skipped where it is not available.
* Tests marked ``rllib`` need the ``rllib`` extra (ray[rllib]; README: RLlib) and are skipped where
  its distributions are not installed (checked from package metadata, without importing Ray).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_RUN_DIR = tempfile.mkdtemp(prefix="recarena-tests-")
os.environ["RECARENA_CACHE"] = os.environ.get("RECARENA_TEST_CACHE") or os.path.join(_RUN_DIR, "cache")
# Stock SB3 models without a logger of their own create a fresh /tmp/SB3-<time> folder per learn();
# point them all at one folder of this session instead.
os.environ["SB3_LOGDIR"] = os.path.join(_RUN_DIR, "sb3")

import torch  # noqa: E402

from recarena.core.seeding import configure_torch_threads  # noqa: E402
from recarena.envs.common import clear_simulator_cache  # noqa: E402

configure_torch_threads(1)


def rllib_missing() -> str | None:
    """What of ray's ``rllib`` extra is not installed (None: all of it)."""
    from packaging.requirements import Requirement

    try:
        requirements = [Requirement(line) for line in metadata.requires("ray") or []]
    except metadata.PackageNotFoundError:
        return "ray"
    for requirement in requirements:
        marker = requirement.marker
        if marker is not None and marker.evaluate({"extra": "rllib"}) and not marker.evaluate({"extra": ""}):
            try:
                metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                return requirement.name
    return None


def pytest_collection_modifyitems(config, items) -> None:
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    rllib_items = [item for item in items if item.get_closest_marker("rllib")]
    if rllib_items and (missing := rllib_missing()):
        skip = pytest.mark.skip(reason=f"needs the rllib extra, pip install -e '.[rllib]' ({missing} is not installed)")
        for item in rllib_items:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="module")
def _fresh_shared_simulators():
    clear_simulator_cache()
    yield


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """A fresh ``RECARENA_CACHE`` for one test module (``pytestmark = pytest.mark.usefixtures("module_cache")``):
    the models its first tests fit, its later ones reuse, without sharing them with other modules."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECARENA_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A fresh ``RECARENA_CACHE`` for each test (``pytestmark = pytest.mark.usefixtures("fresh_cache")``):
    nothing one test fits or pretrains is found by the next."""
    monkeypatch.setenv("RECARENA_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def drawn(monkeypatch) -> dict[str, list[str]]:
    """{file name: readability problems} of every figure the report writes (``tests._report_fixtures``)."""
    from recarena.evaluation import report
    from tests._report_fixtures import readability_problems

    found: dict[str, list[str]] = {}
    save = report._save

    def checked(figure, path, *args, **kwargs):
        save(figure, path, *args, **kwargs)
        found[Path(path).name] = readability_problems(figure)

    monkeypatch.setattr(report, "_save", checked)
    return found


@pytest.fixture(scope="module")
def panel_report(tmp_path_factory) -> Path:
    """An evaluate.py report of 5 baselines on tiny data, with its per-user panel (once per module)."""
    from tests._report_fixtures import evaluate_panel_report

    return evaluate_panel_report(tmp_path_factory.mktemp("panel"))


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_RUN_DIR, ignore_errors=True)
