"""The README's code and the examples run as printed.

Every fenced ```python block of README.md and every script in ``examples/`` (with the arguments its
docstring's ``python examples/NAME.py ...`` line gives) runs in a fresh interpreter, from a scratch
directory that links to the repository's files (so paths such as ``examples/...`` and ``configs/...``
resolve as in the repository root, while what a block writes stays in the scratch directory), with a
``RECARENA_CACHE`` of its own. Blocks that need the one-time MovieLens fits or a GPU are fenced
```python-example in the README, which says so, and are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
SKIPPED_ENTRIES = {".git", ".venv", "runs", "data", "reports", "eval_report", "build", "dist"}


def python_blocks(path: Path) -> list[tuple[str, str]]:
    """(id, code) of every ```python block of a Markdown file; the id names its line and section."""
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        prose = re.sub(r"^```.*?^```[ \t]*$", "", text[: match.start()], flags=re.M | re.S)  # not comments in code
        headings = re.findall(r"^#+ (.+)$", prose, re.M)
        blocks.append((f"{path.name}:{line} ({headings[-1] if headings else 'top'})", match.group(1)))
    return blocks


def example_scripts() -> list[tuple[str, list[str]]]:
    """(file name, arguments) of every script in examples/, as its docstring says to run it."""
    scripts = []
    for path in sorted((ROOT / "examples").glob("*.py")):
        match = re.search(rf"python examples/{re.escape(path.name)}((?: [\w./=-]+)*)", path.read_text())
        scripts.append((path.name, match.group(1).split() if match else []))
    return scripts


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A directory that looks like the repository root: links to its files and folders."""
    root = tmp_path / "repo"
    root.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in SKIPPED_ENTRIES and not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    return root


def run_python(args: list[str], cwd: Path, cache: Path) -> None:
    env = {**os.environ, "RECARENA_CACHE": str(cache), "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


README_BLOCKS = python_blocks(ROOT / "README.md")


def test_the_readme_has_python_blocks_to_run() -> None:
    assert len(README_BLOCKS) >= 3, "the fence pattern no longer finds the README's python blocks"


@pytest.mark.parametrize("code", [code for _, code in README_BLOCKS], ids=[name for name, _ in README_BLOCKS])
def test_readme_python_block_runs_as_printed(code: str, scratch: Path, tmp_path: Path) -> None:
    run_python(["-c", code], scratch, tmp_path / "cache")


def example_params() -> list:
    """example_scripts() as pytest params; a script whose docstring says it needs the rllib extra is
    marked slow and rllib (it trains for minutes; tests/conftest.py skips it where the extra is absent)."""
    params = []
    for name, args in example_scripts():
        needs_rllib = "needs the rllib extra" in (ROOT / "examples" / name).read_text()
        params.append(pytest.param(name, args, id=name, marks=[pytest.mark.slow, pytest.mark.rllib] if needs_rllib else []))
    return params


@pytest.mark.parametrize("name, args", example_params())
def test_example_runs_as_printed(name: str, args: list[str], scratch: Path, tmp_path: Path) -> None:
    run_python([f"examples/{name}", *args], scratch, tmp_path / "cache")
