"""Policy-ranking agreement (recarena.evaluation.agreement / panel): known-order synthetic panels,
bootstrap determinism, invalid panels, and evaluate.py's per-user file and agreement section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from recarena.cli import evaluate
from recarena.core.errors import ConfigError
from recarena.evaluation import panel
from recarena.evaluation.agreement import agreement_markdown, compute_agreement, plot_agreement
from recarena.evaluation.formatting import format_interval, format_number
from tests._report_fixtures import FAST, write_tiny_data

N_POLICIES, N_USERS = 8, 300


def synthetic_panel(held_out_means: np.ndarray, seed: int = 0, noise: float = 0.05) -> dict[str, dict[str, np.ndarray]]:
    """8 policies whose simulated return per session is drawn around 1, 2, ..., 8 and whose held-out
    per-user values are drawn around ``held_out_means`` (paired users: one user effect for all)."""
    rng = np.random.default_rng(seed)
    user_effect = rng.normal(0.0, noise, N_USERS)
    out = {}
    for i in range(N_POLICIES):
        out[f"policy {i}"] = {
            "sim return": rng.normal(i + 1.0, 0.5, N_USERS),
            "NDCG@10 LLO": held_out_means[i] + user_effect + rng.normal(0.0, noise, N_USERS),
        }
    return out


def test_policies_in_the_same_order_agree_perfectly() -> None:
    section = compute_agreement(synthetic_panel(0.02 * np.arange(1, N_POLICIES + 1)), "sim return", n_bootstrap=200)
    c = section["correlations"]["NDCG@10 LLO"]
    assert c["spearman"] == pytest.approx(1.0) and c["kendall"] == pytest.approx(1.0)
    assert c["spearman_interval"][0] > 0.9 and c["kendall_interval"][0] > 0.7
    assert section["policies"] == [f"policy {i}" for i in range(N_POLICIES)]
    assert section["n_units"] == {"sim return": N_USERS, "NDCG@10 LLO": N_USERS}
    value = section["values"]["policy 3"]["sim return"]
    assert value["interval"][0] < value["value"] < value["interval"][1] and value["value"] == pytest.approx(4.0, abs=0.1)


def test_reversed_order_is_minus_one() -> None:
    section = compute_agreement(synthetic_panel(0.02 * np.arange(N_POLICIES, 0, -1)), "sim return", n_bootstrap=200)
    c = section["correlations"]["NDCG@10 LLO"]
    assert c["spearman"] == pytest.approx(-1.0) and c["kendall"] == pytest.approx(-1.0)
    assert c["spearman_interval"][1] < -0.9


def test_ties_on_the_held_out_measure_give_an_interval_around_zero() -> None:
    section = compute_agreement(synthetic_panel(np.full(N_POLICIES, 0.1), noise=0.2), "sim return", n_bootstrap=300)
    c = section["correlations"]["NDCG@10 LLO"]
    assert c["spearman_interval"][0] < 0 < c["spearman_interval"][1]
    assert c["kendall_interval"][0] < 0 < c["kendall_interval"][1]


def test_the_bootstrap_is_deterministic_for_a_seed() -> None:
    data = synthetic_panel(np.full(N_POLICIES, 0.1), noise=0.2)
    a = compute_agreement(data, "sim return", n_bootstrap=100, seed=3)
    b = compute_agreement(data, "sim return", n_bootstrap=100, seed=3)
    c = compute_agreement(data, "sim return", n_bootstrap=100, seed=4)
    assert a == b
    assert a["correlations"] != c["correlations"]


def test_ratio_measures_are_sums_over_sums() -> None:
    data = {f"p{i}": {"sim return": np.array([i, i + 1.0, i + 2.0]),
                      "replay reward": (np.array([1.0, i, 0.0]), np.array([2.0, 4.0, 0.0]))} for i in range(4)}
    section = compute_agreement(data, "sim return", n_bootstrap=20)
    assert section["values"]["p3"]["replay reward"]["value"] == pytest.approx(4.0 / 6.0)
    assert section["values"]["p3"]["sim return"]["value"] == pytest.approx(4.0)
    assert section["correlations"]["replay reward"]["spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize("data, message", [
    ({"a": {"s": [1.0], "m": [1.0]}, "b": {"s": [2.0], "m": [2.0]}}, "at least 3 policies"),
    ({"a": {"s": [1.0], "m": [1.0]}, "b": {"s": [2.0], "m": [2.0]}, "c": {"s": [3.0], "x": [2.0]}}, "same measures"),
    ({"a": {"t": [1.0], "m": [1.0]}, "b": {"t": [2.0], "m": [2.0]}, "c": {"t": [3.0], "m": [2.0]}}, "reference measure 's'"),
    ({"a": {"s": [1.0]}, "b": {"s": [2.0]}, "c": {"s": [3.0]}}, "no other measure"),
    ({"a": {"s": [1.0], "m": [1.0, 2.0]}, "b": {"s": [2.0], "m": [2.0]}, "c": {"s": [3.0], "m": [2.0]}}, "different numbers of units"),
    ({"a": {"s": [1.0], "m": [np.nan]}, "b": {"s": [2.0], "m": [2.0]}, "c": {"s": [3.0], "m": [2.0]}}, "finite"),
    ({"a": {"s": [1.0], "m": []}, "b": {"s": [2.0], "m": []}, "c": {"s": [3.0], "m": []}}, "no units"),
])
def test_invalid_panels_are_clear_errors(data, message) -> None:
    with pytest.raises(ValueError, match=message):
        compute_agreement(data, "s", n_bootstrap=10)


def test_markdown_and_plot(tmp_path: Path) -> None:
    section = compute_agreement(synthetic_panel(0.02 * np.arange(1, N_POLICIES + 1)), "sim return", n_bootstrap=50,
                                units={"sim return": "rewards per session", "NDCG@10 LLO": "NDCG (0-1)"})
    text = agreement_markdown(section, "agreement.png")
    assert "## Policy-ranking agreement" in text and "| NDCG@10 LLO | 300 | 1.000 |" in text and "(agreement.png)" in text
    path = plot_agreement(section, tmp_path / "agreement.png")
    assert path.stat().st_size > 10_000


def test_report_numbers_and_intervals_have_one_format() -> None:
    """evaluation.formatting: what the agreement, fidelity, choice and cold-item tables print."""
    assert format_number(0.123456) == "0.1235" and format_number(-2.5, 2) == "-2.50" and format_number(3.7, 0) == "4"
    assert format_number(None) == "n/a" and format_number(float("nan")) == "n/a" and format_number(float("nan"), nan="nan") == "nan"
    assert format_number(12) == "12" and format_number("label") == "label"  # counts and labels as they are
    assert format_interval([0.1, None], 3) == "[0.100, n/a]" and format_interval((1.0, 2.0)) == "[1.0000, 2.0000]"


def test_the_agreement_plot_reads_on_its_own(tmp_path: Path, drawn) -> None:
    section = compute_agreement(synthetic_panel(0.02 * np.arange(1, N_POLICIES + 1)), "sim return", n_bootstrap=50,
                                units={"sim return": "rewards per session", "NDCG@10 LLO": "NDCG (0-1)"})
    plot_agreement(section, tmp_path / "agreement.png")
    assert drawn == {"agreement.png": []}


def test_per_user_file_round_trip_and_unit_checks(tmp_path: Path) -> None:
    units = np.array([3, 5, 9])
    values = {label: {"sim return": {"numerator": np.array([1.0, 2.0, 3.0]) * i, "denominator": np.ones(3), "units": units},
                      "NDCG@10 LLO": {"numerator": np.array([0.1, 0.2, 0.3]) * i, "denominator": np.ones(3), "units": units}}
              for i, label in enumerate(["run|a", "b/c", "d e", "f:g"], start=1)}
    path = panel.write_per_user(tmp_path / "per_user.npz", values)
    back = panel.read_per_user(path)
    assert list(back) == list(values)
    for label in values:
        for measure in values[label]:
            for part in ("numerator", "denominator", "units"):
                np.testing.assert_array_equal(back[label][measure][part], values[label][measure][part])
    results = {"candidates": {label: {} for label in values}}
    section = panel.agreement_section(results, back, 10, n_bootstrap=20)
    assert section["correlations"]["NDCG@10 LLO"]["spearman"] == pytest.approx(1.0)
    assert panel.agreement_section(results, back, 10, n_bootstrap=20, min_policies=5) is None
    back["d e"]["NDCG@10 LLO"]["units"] = np.array([3, 5, 8])
    with pytest.raises(ConfigError, match="other users"):
        panel.agreement_section(results, back, 10, n_bootstrap=20)


# ---------------------------------------------------------------------------- evaluate.py


def test_evaluate_writes_per_user_values_and_the_agreement(panel_report: Path) -> None:
    report = json.loads((panel_report / "report.json").read_text())
    values = panel.read_per_user(panel_report / panel.PER_USER_FILE)
    assert list(values) == ["random", "most_popular", "greedy", "sasrec", "gru4rec"]
    popular = values["most_popular"]
    assert {"sim return", "NDCG@5 LLO", "HR@5 LLO", "NDCG@5 temp", "replay match", "replay reward"} <= set(popular)
    # The per-user values reproduce the report's figures.
    ndcg = popular["NDCG@5 LLO"]
    assert ndcg["numerator"].sum() / ndcg["denominator"].sum() == pytest.approx(
        report["candidates"]["most_popular"]["ranking"]["leave-last-out"]["metrics"]["NDCG@5"])
    assert len(ndcg["units"]) == 30
    sim = popular["sim return"]
    assert sim["numerator"].mean() == pytest.approx(report["candidates"]["most_popular"]["simulated"]["metrics"]["episodic_return"])
    match = popular["replay match"]
    assert match["numerator"].sum() / match["denominator"].sum() == pytest.approx(report["candidates"]["most_popular"]["replay"]["match_rate"])
    agreement = report["agreement"]
    assert agreement["policies"] == list(values) and agreement["reference"] == "sim return"
    assert agreement["measures"][0] == "NDCG@5 LLO"
    # The section's correlation is scipy's over the report's own figures (undefined where one side is constant).
    sim_return = [report["candidates"][label]["simulated"]["metrics"]["episodic_return"] for label in values]
    ndcg_llo = [report["candidates"][label]["ranking"]["leave-last-out"]["metrics"]["NDCG@5"] for label in values]
    expected = spearmanr(sim_return, ndcg_llo).statistic if np.ptp(sim_return) and np.ptp(ndcg_llo) else None
    rho = agreement["correlations"]["NDCG@5 LLO"]["spearman"]
    assert rho == (pytest.approx(expected) if expected is not None else None)
    assert (panel_report / "agreement.png").stat().st_size > 0
    markdown = (panel_report / "report.md").read_text()
    assert "## Policy-ranking agreement" in markdown and "(agreement.png)" in markdown


def test_evaluate_without_enough_policies_has_no_agreement(tmp_path: Path) -> None:
    data = write_tiny_data(tmp_path / "data")
    out = tmp_path / "report"
    assert evaluate.main(["--baseline", "random", "--baseline", "most_popular", "--data", str(data), "--out", str(out),
                          "--protocols", "ranking,simulated", *FAST]) == 0
    assert "agreement" not in json.loads((out / "report.json").read_text())
    assert set(panel.read_per_user(out / panel.PER_USER_FILE)) == {"random", "most_popular"}
