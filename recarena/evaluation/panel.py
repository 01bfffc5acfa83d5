"""The per-user values behind evaluate.py's figures (``per_user.npz``), and the policy panel built from them.

evaluate.py keeps, for every candidate and headline figure, the per-unit numerators and denominators
its bootstrap intervals resample (a held-out user's summed HR/NDCG and query count, a user's matched
events, a simulated session's return) and the unit ids, and writes them next to ``report.json``.
:func:`agreement_section` turns them into the panel of :mod:`recarena.evaluation.agreement` (the
simulated return against the held-out measures) for evaluate.py's report;
:func:`agreement_from_report_dir` does the same from a finished report directory for
``recarena fidelity --panel``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from recarena.core.errors import ConfigError
from recarena.core.io import atomic_write_bytes
from recarena.evaluation.agreement import Panel, compute_agreement

PER_USER_FILE = "per_user.npz"
MIN_PANEL = 4
"""evaluate.py adds the agreement section when at least this many candidates have both measures."""
REFERENCE = "sim return"
SPLIT_SHORT = {"leave-last-out": "LLO", "temporal": "temp", "validation": "valid"}
"""The short split names of the report's columns (``report.headline``)."""

Unit = dict[str, np.ndarray]
"""One measure of one candidate: ``numerator``, ``denominator`` and ``units`` (the user ids), 1-D, one length."""


def _unit(numerator: np.ndarray, denominator: np.ndarray, units: np.ndarray) -> Unit:
    return {"numerator": np.asarray(numerator, dtype=np.float64), "denominator": np.asarray(denominator, dtype=np.float64),
            "units": np.asarray(units, dtype=np.int64)}


def from_ranking(result: Any, split: str) -> dict[str, Unit]:
    """The per-user values of a ``RankingResult`` under the report's column names (``NDCG@10 LLO``, ...)."""
    short = SPLIT_SHORT.get(split, split)
    return {f"{name} {short}": _unit(num, den, result.users) for name, (num, den) in result.per_user.items()}


def from_replay(result: Any) -> dict[str, Unit]:
    """``replay match`` (matched / events per user) and ``replay reward`` (reward / matched per user)."""
    return {f"replay {'match' if name == 'match_rate' else name}": _unit(num, den, result.users)
            for name, (num, den) in result.per_user.items()}


def from_simulated(result: Any) -> dict[str, Unit]:
    """``sim return`` (per session) and ``sim CTR`` (clicks / steps per session)."""
    names = {"episodic_return": REFERENCE, "ctr": "sim CTR"}
    return {names[name]: _unit(num, den, result.session_users) for name, (num, den) in result.per_session.items() if name in names}


def write_per_user(path: str | Path, per_user: dict[str, dict[str, Unit]]) -> Path:
    """Write ``{candidate: {measure: Unit}}`` atomically as one ``.npz`` (keys ``"i|measure|part"``,
    ``i`` indexing the ``candidates`` array; labels are run names and may hold any character)."""
    labels = list(per_user)
    arrays: dict[str, np.ndarray] = {"candidates": np.array(labels, dtype=str)}
    for i, label in enumerate(labels):
        for measure, unit in per_user[label].items():
            for part, values in unit.items():
                arrays[f"{i}|{measure}|{part}"] = values
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def read_per_user(path: str | Path) -> dict[str, dict[str, Unit]]:
    """:func:`write_per_user`'s file back as ``{candidate: {measure: Unit}}``."""
    with np.load(path, allow_pickle=False) as data:
        labels = [str(label) for label in data["candidates"]]
        out: dict[str, dict[str, Unit]] = {label: {} for label in labels}
        for key in data.files:
            if key == "candidates":
                continue
            index, measure, part = key.split("|")
            out[labels[int(index)]].setdefault(measure, {})[part] = data[key]
    return out


def _units_description(results: dict[str, Any], k: int) -> dict[str, str]:
    """What each headline measure is, with its unit (from the report's own axis labels)."""
    from recarena.evaluation.report import column_meaning, headline

    out = {}
    for name, path, metric in headline(results, k):
        title, unit = column_meaning(results["candidates"], name, path, metric, k)  # title: "NAME (what, how many)"
        detail = title.removeprefix(name).strip().removeprefix("(").removesuffix(")")
        out[name] = f"{unit} ({detail})" if detail else unit
    return out


def build_panel(results: dict[str, Any], per_user: dict[str, dict[str, Unit]], k: int) -> tuple[Panel, list[str]]:
    """The panel (candidates with both the simulated return and NDCG@k leave-last-out) and its held-out
    measures, in the report's column order: NDCG@k and HR@k on leave-last-out, NDCG@k on the temporal
    split, replay match (= HR@k there for a top-k policy) and replay reward, each where every panel candidate has it. A measure whose units (user ids)
    differ between candidates is an error: the candidates of one report are scored on the same users."""
    primary = f"NDCG@{k} LLO"
    wanted = [primary, f"HR@{k} LLO", f"NDCG@{k} temp", "replay match", "replay reward"]  # replay match = HR@k temp
    labels = [label for label in results["candidates"]
              if REFERENCE in per_user.get(label, {}) and primary in per_user.get(label, {})]
    measures = [m for m in wanted if labels and all(m in per_user[label] for label in labels)]
    panel: Panel = {}
    for measure in [REFERENCE, *measures]:
        first = per_user[labels[0]][measure]["units"] if labels else None
        for label in labels:
            unit = per_user[label][measure]
            if not np.array_equal(unit["units"], first):
                raise ConfigError(f"per-user values of '{measure}': candidate '{label}' was scored on other users than "
                                  f"'{labels[0]}'; a panel needs the same held-out users and sessions for every policy")
            panel.setdefault(label, {})[measure] = (unit["numerator"], unit["denominator"])
    return panel, measures


def agreement_section(results: dict[str, Any], per_user: dict[str, dict[str, Unit]], k: int,
                      n_bootstrap: int = 1000, seed: int = 0, min_policies: int = MIN_PANEL) -> dict[str, Any] | None:
    """The agreement section of a report, or None when fewer than ``min_policies`` candidates have both
    the simulated return and a leave-last-out ranking."""
    panel, measures = build_panel(results, per_user, k)
    if len(panel) < min_policies:
        return None
    section = compute_agreement(panel, REFERENCE, measures, n_bootstrap=n_bootstrap, seed=seed,
                                units=_units_description(results, k))
    section["primary"] = f"NDCG@{k} LLO"
    return section


def agreement_from_report_dir(directory: str | Path, n_bootstrap: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """The agreement section from an evaluate.py output directory (its ``report.json`` and
    ``per_user.npz``), with the report's own K, bootstrap count and seed unless given; a missing file
    or a panel of fewer than 3 policies is a one-line ``ConfigError``."""
    directory = Path(directory)
    report_path, per_user_path = directory / "report.json", directory / PER_USER_FILE
    for path in (report_path, per_user_path):
        if not path.is_file():
            raise ConfigError(f"{path}: not found; --panel takes an evaluate.py --out directory written with "
                              f"--protocols including ranking and simulated (it writes report.json and {PER_USER_FILE})")
    results = json.loads(report_path.read_text())
    config = results.get("config", {})
    k = int(config.get("k", 10))
    per_user = read_per_user(per_user_path)
    earlier = results.get("agreement") or {}  # the report's own settings, where it computed the section
    section = agreement_section(results, per_user, k, n_bootstrap or int(earlier.get("n_bootstrap", 1000)),
                                int(config.get("seed", 0)) if seed is None else seed, min_policies=3)
    if section is None:
        have = [label for label in results.get("candidates", {})
                if REFERENCE in per_user.get(label, {}) and f"NDCG@{k} LLO" in per_user.get(label, {})]
        raise ConfigError(f"{directory}: {len(have)} candidate(s) have both the simulated return and NDCG@{k} on "
                          f"leave-last-out ({have}); the agreement needs at least 3 (evaluate.py with more runs or "
                          f"--baseline, --protocols ranking,simulated and the leave-last-out split)")
    section["source"] = {"report": str(report_path), "data": config.get("data"), "command": config.get("command")}
    return section
