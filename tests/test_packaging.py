"""The distribution: one top-level import name, the console command, and life beside its namesakes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMESAKES = ("evaluate", "llm", "envs", "scope-rl")
"""Distributions on PyPI whose top-level names the project once used (``scope-rl`` ships ``recgym``)."""


def build_wheel(out: Path) -> Path:
    """Build the wheel into ``out`` (setuptools' ``build/`` scratch folder is removed if it was not there)."""
    scratch = ROOT / "build"
    existed = scratch.exists()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    if not existed:
        shutil.rmtree(scratch, ignore_errors=True)
    (wheel,) = out.glob("recarena-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_installs_exactly_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"recarena"}
    # Every subpackage of the layout ships (an __init__.py each), configs and tests do not.
    for layer in ("core", "data", "llm", "simulators", "envs", "agents", "training", "evaluation", "cli"):
        assert f"recarena/{layer}/__init__.py" in names, layer
    assert not any(name.startswith(("tests/", "configs/", "bench/")) for name in names)


def test_wheel_declares_the_recarena_command(wheel):
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = archive.read(entry_points).decode()
    assert "[console_scripts]" in text and "recarena = recarena.cli.main:main" in text
    assert text.count(" = ") == 1  # no other commands (recgym-train, ...) left


@pytest.mark.slow
def test_installs_beside_its_namesakes_and_each_imports(wheel, tmp_path):
    """A fresh venv with ``evaluate``, ``llm``, ``envs`` and ``scope-rl``: nothing overwritten, all import.

    Needs the package index (installs the namesakes with their dependencies, scope-rl without its
    torch/d3rlpy stack: its ``recgym`` files are checked instead of imported).
    """
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = str(env / "bin" / "python")

    def pip(*args: str) -> None:
        subprocess.run([python, "-m", "pip", "install", "-q", *args], check=True, capture_output=True, text=True)

    pip("evaluate", "llm", "envs", "gymnasium>=1.0,<2")
    pip("--no-deps", "scope-rl", str(wheel))
    check = """
import importlib.metadata as md, importlib.util, pathlib
import evaluate, llm, envs
import gymnasium as gym
import recarena
assert [k for k in gym.registry if k.startswith("recarena/")], "ids not registered"
for dist in ("evaluate", "llm", "envs", "scope-rl", "recarena"):
    files = [f for f in md.files(dist) if f.suffix == ".py"]
    missing = [str(f) for f in files if not pathlib.Path(f.locate()).is_file()]
    assert files and not missing, (dist, missing[:3])
spec = importlib.util.find_spec("recgym")
assert spec is not None and "recarena" not in str(spec.origin)
assert pathlib.Path(recarena.__file__).parent.name == "recarena"
print("ok")
"""
    result = subprocess.run([python, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
