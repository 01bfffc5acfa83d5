"""The fidelity report's additions: ``recarena fidelity --panel`` (the policy-ranking agreement of an
evaluate.py report) and the session statistics (length distribution, genre spread and entropy, repeats)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recarena.cli import fidelity as fidelity_cli
from recarena.data.interactions import ItemMetadata
from recarena.evaluation import fidelity
from tests._eval_fixtures import make_log
from tests._report_fixtures import write_tiny_data


def _genre_embeddings(items, config, cache_dir=None) -> torch.Tensor:
    """Stand-in for the MiniLM item encodings (the --panel wiring does not depend on them)."""
    return torch.nn.functional.normalize(torch.as_tensor(items.genre_matrix()) + 0.1, dim=1)


def test_fidelity_panel_reads_the_evaluate_report(panel_report: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(fidelity_cli, "encode_items", _genre_embeddings)
    config = json.loads((panel_report / "report.json").read_text())["config"]
    out = tmp_path / "fidelity"
    report = fidelity_cli.main(["--data", config["data"], "--out", str(out), "--variants", "id", "--epochs", "1",
                                "--no-simulation", "--no-choice", "--panel", str(panel_report)])
    evaluated = json.loads((panel_report / "report.json").read_text())["agreement"]
    assert report["agreement"]["correlations"] == evaluated["correlations"]  # one computation, same seed and replicates
    assert sorted(json.loads((out / "report.json").read_text())["agreement"]["policies"]) == sorted(evaluated["policies"])
    assert (out / "agreement.png").stat().st_size > 0
    assert "## Policy-ranking agreement" in (out / "report.md").read_text()


def test_fidelity_panel_errors_are_one_line(panel_report: Path, tmp_path: Path, capsys) -> None:
    data = json.loads((panel_report / "report.json").read_text())["config"]["data"]
    with pytest.raises(SystemExit) as exit_info:
        fidelity_cli.main(["--data", data, "--out", str(tmp_path / "f"), "--panel", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found; --panel takes an evaluate.py --out directory" in err[0]
    other = write_tiny_data(tmp_path / "other", seed=1)
    with pytest.raises(SystemExit) as exit_info:
        fidelity_cli.main(["--data", str(other), "--out", str(tmp_path / "f"), "--panel", str(panel_report)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "of other data than --data" in err[0]


# ---------------------------------------------------------------------------- session statistics


def test_session_statistics_of_a_tiny_log() -> None:
    """User 0: items 0,1 then (2 h later) 2,3,4,5,0 -> sessions of 2 and 5 items, one repeat (item 0).
    User 1: item 5 alone. Genres: items 0-2 'A', 3 'B', 4 'A|B', 5 none."""
    log = make_log([[(0, 5.0), (1, 4.0), (2, 2.0), (3, 4.0), (4, 1.0), (5, 5.0), (0, 3.0)], [(5, 4.0)]], n_items=6)
    hour = 3600
    timestamp = np.array([0, 10, 2 * hour, 2 * hour + 10, 2 * hour + 20, 2 * hour + 30, 2 * hour + 40, 0], dtype=np.int64)
    items = ItemMetadata(title=[f"i{i}" for i in range(6)], year=np.zeros(6, dtype=np.int32),
                         genres=[("A",), ("A",), ("A",), ("B",), ("A", "B"), ()], text=[""] * 6)
    log = dataclasses.replace(log, timestamp=timestamp, items=items)
    stats = fidelity.logged_session_statistics(log, gap=hour)
    assert stats["sessions"] == 3 and stats["gap_seconds"] == hour
    assert stats["mean_items"] == pytest.approx(8 / 3) and stats["median_items"] == 2.0
    assert stats["share_single_item"] == pytest.approx(1 / 3)
    assert stats["repeat_share"] == pytest.approx(1 / 8)
    assert stats["like_rate"] == pytest.approx(5 / 8)
    # Liked (>= 4) by position: first items 0 (5), 2 (2), 5 (4) -> 2/3; then 1, 3, 4, 5, 0 -> 3/5.
    assert stats["like_rate_by_position"] == {"0": pytest.approx(2 / 3), "1-4": pytest.approx(3 / 5), "5-19": None, "20-49": None}
    # The one session with >= 5 items: 2,3,4,5,0 -> genres A, B, A|B, none, A: 2 distinct; weights A 2.5, B 1.5.
    assert stats["genre_spread"] == 2.0 and stats["share_with_window"] == pytest.approx(1 / 3)
    p = np.array([2.5, 1.5]) / 4.0
    assert stats["genre_entropy"] == pytest.approx(float(-(p * np.log2(p)).sum()))
    # A longer gap joins user 0's events into one session of 7 (first 5 items: 0,1,2,3,4).
    joined = fidelity.logged_session_statistics(log, gap=3 * hour)
    assert joined["sessions"] == 2 and joined["length_quantiles"]["p50"] == 4.0 and joined["repeat_share"] == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="gap"):
        fidelity.logged_session_statistics(log, gap=-1)


def test_like_rate_by_position_buckets_and_cap() -> None:
    """Buckets [0], [1, 5), [5, 20), [20, 50); positions from 50 on are left out."""
    long = np.zeros(60, dtype=bool)
    long[[0, 1, 5, 6, 20, 55]] = True  # bucket likes: 1, 1, 2, 1 (55 is past the cap)
    rates = fidelity.like_rate_by_position([long, np.array([False, True])])
    assert rates == {"0": pytest.approx(1 / 2), "1-4": pytest.approx(2 / 5), "5-19": pytest.approx(2 / 15),
                     "20-49": pytest.approx(1 / 30)}
    assert fidelity.like_rate_by_position([]) == {"0": None, "1-4": None, "5-19": None, "20-49": None}


def test_genre_entropy_known_answers() -> None:
    genres = [("A",), ("B",), ("A", "B"), ()]
    assert fidelity.genre_entropy([0, 0], genres) == 0.0
    assert fidelity.genre_entropy([0, 1], genres) == pytest.approx(1.0)
    assert fidelity.genre_entropy([2], genres) == pytest.approx(1.0)
    assert fidelity.genre_entropy([3], genres) == 0.0
