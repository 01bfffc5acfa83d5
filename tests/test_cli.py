"""The ``recarena`` command: subcommands dispatch to the same programs as train.py / evaluate.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recarena.cli.main import SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "evaluate", "fidelity", "sweep"):
        assert name in out and name in SUBCOMMANDS


def test_unknown_or_missing_subcommand_is_a_usage_error(capsys):
    assert main(["trian"]) == 2
    assert "unknown subcommand 'trian'" in capsys.readouterr().err
    assert main([]) == 2


@pytest.mark.parametrize("name", ["train", "evaluate", "fidelity", "sweep"])
def test_subcommand_help_names_the_command(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: recarena {name}")


def test_subcommand_errors_are_one_line_with_exit_2(tmp_path, capsys):
    missing = tmp_path / "nothing.yaml"
    assert main(["train", "--config", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recarena train: error:") and "nothing.yaml" in err[0]


def test_root_scripts_are_the_same_programs():
    for script, prog in (("train.py", "train.py"), ("evaluate.py", "evaluate.py")):
        result = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                                cwd=ROOT, timeout=120)
        assert result.returncode == 0 and result.stdout.startswith(f"usage: {prog}"), result.stderr
