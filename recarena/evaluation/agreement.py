"""Policy-ranking agreement: does the simulator order a panel of policies as held-out data does?

A *panel* is ``{policy label: {measure name: per-unit values}}``: for every policy, the values behind
each of its figures, one entry per independent unit (a held-out user, or a simulated session).
A measure's value for a policy is ``sum(numerator) / sum(denominator)`` over its units; a plain
array is a numerator with a denominator of ones (a mean), a ``(numerator, denominator)`` pair a
ratio (e.g. replay reward = liked matched events / matched events, summed per user).

:func:`compute_agreement` takes one measure as the reference (the simulated return) and, for every
other measure, ranks the policies by both and reports Spearman's rho and Kendall's tau-b between the
policies' values (``scipy.stats``), with percentile bootstrap intervals, plus each policy's value
with its interval. :func:`plot_agreement` draws the scatter (one panel per held-out measure) and
:func:`agreement_markdown` the report section; evaluate.py and ``recarena fidelity --panel`` both use
these three.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from recarena.evaluation.formatting import format_interval, format_number

Values = np.ndarray | tuple[np.ndarray, np.ndarray]
Panel = dict[str, dict[str, Values]]

MIN_POLICIES = 3
"""Fewer policies than this have no meaningful rank correlation (two points always agree or disagree)."""

RESAMPLING_NOTE = (
    "95% percentile bootstrap: each replicate resamples the units of every measure with replacement (held-out "
    "users for the held-out measures, simulated sessions for the simulated return), independently per measure "
    "but with the same draw for every policy (all policies are scored on the same users and sessions), recomputes "
    "every policy's value and then the rank correlation; the interval is over replicates where it is defined."
)


def _as_ratio(values: Values, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as a (numerator, denominator) pair of finite 1-D float arrays of one length."""
    if isinstance(values, tuple):
        if len(values) != 2:
            raise ValueError(f"{where}: expected an array or a (numerator, denominator) pair, got {len(values)} arrays")
        numerator, denominator = (np.asarray(v, dtype=np.float64) for v in values)
    else:
        numerator = np.asarray(values, dtype=np.float64)
        denominator = np.ones_like(numerator)
    if numerator.ndim != 1 or numerator.shape != denominator.shape:
        raise ValueError(f"{where}: per-unit values must be 1-D, numerator and denominator of one length; got shapes "
                         f"{numerator.shape} and {denominator.shape}")
    if len(numerator) == 0:
        raise ValueError(f"{where}: no units (empty values)")
    if not (np.isfinite(numerator).all() and np.isfinite(denominator).all()):
        raise ValueError(f"{where}: values must be finite (NaN or infinity found)")
    if denominator.sum() <= 0:
        raise ValueError(f"{where}: the denominator sums to {denominator.sum()}; the value is undefined")
    return numerator, denominator


def _check_panel(panel: Panel, reference: str, measures: list[str] | None) -> tuple[list[str], list[str]]:
    """The policies and the held-out measures of a valid panel; a clear ``ValueError`` otherwise."""
    policies = list(panel)
    if len(policies) < MIN_POLICIES:
        raise ValueError(f"policy-ranking agreement needs at least {MIN_POLICIES} policies, got {len(policies)}: {policies}")
    names = [set(panel[p]) for p in policies]
    if any(n != names[0] for n in names):
        detail = "; ".join(f"{p}: {sorted(panel[p])}" for p in policies)
        raise ValueError(f"every policy needs the same measures, but they differ ({detail})")
    if reference not in names[0]:
        raise ValueError(f"the reference measure '{reference}' is missing; the panel has {sorted(names[0])}")
    others = [m for m in (measures if measures is not None else sorted(names[0])) if m != reference]
    unknown = [m for m in others if m not in names[0]]
    if unknown:
        raise ValueError(f"unknown measure(s) {unknown}; the panel has {sorted(names[0])}")
    if not others:
        raise ValueError(f"nothing to compare the reference '{reference}' with: the panel has no other measure")
    return policies, others


def _stack(panel: Panel, policies: list[str], measure: str) -> tuple[np.ndarray, np.ndarray]:
    """Numerators and denominators [policies, units] of one measure (every policy on the same units)."""
    pairs = [_as_ratio(panel[p][measure], f"policy '{p}', measure '{measure}'") for p in policies]
    lengths = {p: len(n) for p, (n, _) in zip(policies, pairs, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"measure '{measure}': the policies have different numbers of units {lengths}; a panel's "
                         f"policies must be scored on the same users/sessions")
    return np.stack([n for n, _ in pairs]), np.stack([d for _, d in pairs])


def _replicates(numerator: np.ndarray, denominator: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """[n_bootstrap, policies] values with the units resampled with replacement (one draw for all policies)."""
    n_units = numerator.shape[1]
    out = np.empty((n_bootstrap, numerator.shape[0]))
    chunk = max(1, min(n_bootstrap, 4_000_000 // max(n_units, 1)))
    for begin in range(0, n_bootstrap, chunk):
        end = min(begin + chunk, n_bootstrap)
        counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=end - begin).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[begin:end] = (counts @ numerator.T) / (counts @ denominator.T)
    return out


def _rank_correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(Spearman rho, Kendall tau-b) of two value vectors; NaN where undefined (a constant vector)."""
    from scipy.stats import kendalltau, spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan, math.nan
    return float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic)


def _interval(values: np.ndarray, alpha: float) -> list[float | None]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return [None, None]
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return [float(low), float(high)]


def compute_agreement(
    panel: Panel,
    reference: str,
    measures: list[str] | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    units: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Spearman and Kendall between the policies' ``reference`` values and each other measure's.

    Point estimates use every unit. Intervals: ``n_bootstrap`` percentile-bootstrap replicates in
    which each measure's units are resampled with replacement (the same draw for every policy,
    because a panel's policies are scored on the same held-out users and simulated sessions, so the
    policies' values move together as they do when another sample of users is drawn; the measures
    are resampled independently, as they are measured on different units), every policy's value is
    recomputed and then both correlations. What they cover is the sampling of users and sessions,
    not the randomness of training the policies. ``units``: an optional description of each
    measure (its unit of measurement, for plots and tables). Deterministic for a given ``seed``.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    policies, others = _check_panel(panel, reference, measures)
    rng = np.random.default_rng(seed)
    point, replicate, n_units = {}, {}, {}
    for measure in [reference, *others]:
        numerator, denominator = _stack(panel, policies, measure)
        point[measure] = numerator.sum(axis=1) / denominator.sum(axis=1)
        replicate[measure] = _replicates(numerator, denominator, n_bootstrap, rng)
        n_units[measure] = int(numerator.shape[1])
    correlations = {}
    for measure in others:
        rho, tau = _rank_correlations(point[reference], point[measure])
        boot = np.array([_rank_correlations(replicate[reference][b], replicate[measure][b]) for b in range(n_bootstrap)])
        correlations[measure] = {  # None: undefined (the policies tie on one of the measures)
            "spearman": None if math.isnan(rho) else rho, "spearman_interval": _interval(boot[:, 0], alpha),
            "kendall": None if math.isnan(tau) else tau, "kendall_interval": _interval(boot[:, 1], alpha),
            "defined_share": float(np.isfinite(boot[:, 0]).mean()),
        }
    values = {
        policy: {m: {"value": float(point[m][i]), "interval": _interval(replicate[m][:, i], alpha)} for m in point}
        for i, policy in enumerate(policies)
    }
    return {
        "reference": reference,
        "measures": others,
        "policies": policies,
        "n_units": n_units,
        "units": {m: (units or {}).get(m, m) for m in point},
        "values": values,
        "correlations": correlations,
        "n_bootstrap": n_bootstrap,
        "alpha": alpha,
        "seed": seed,
        "resampling": RESAMPLING_NOTE,
    }


# -- presentation --------------------------------------------------------------------------------


def correlation_text(section: dict[str, Any], measure: str) -> str:
    """'Spearman 0.83 [0.61, 0.95], Kendall 0.67 [0.44, 0.86]' for one measure."""
    c = section["correlations"][measure]
    return (f"Spearman {format_number(c['spearman'], 2)} {format_interval(c['spearman_interval'], 2)}, "
            f"Kendall {format_number(c['kendall'], 2)} {format_interval(c['kendall_interval'], 2)}")


def agreement_markdown(section: dict[str, Any], plot: str | None = None, heading: str = "##") -> str:
    """The 'Policy-ranking agreement' section of a report: correlations, then each policy's values."""
    ref = section["reference"]
    policies = section["policies"]
    interval = f"{100 * (1 - section['alpha']):.0f}%"
    lines = [f"{heading} Policy-ranking agreement", "",
             f"{len(policies)} policies ranked by **{ref}** against each held-out measure; {interval} intervals from "
             f"{section['n_bootstrap']} bootstrap replicates (seed {section['seed']}). {section['resampling']}", "",
             f"| held-out measure | units | Spearman | {interval} interval | Kendall tau-b | {interval} interval |",
             "|---|---|---|---|---|---|"]
    for measure in section["measures"]:
        c = section["correlations"][measure]
        lines.append(f"| {measure} | {section['n_units'][measure]} | {format_number(c['spearman'], 3)} | {format_interval(c['spearman_interval'], 3)} "
                     f"| {format_number(c['kendall'], 3)} | {format_interval(c['kendall_interval'], 3)} |")
    measures = [ref, *section["measures"]]
    lines += ["", "| policy | " + " | ".join(measures) + " |", "|---" * (len(measures) + 1) + "|"]
    for policy in policies:
        cells = []
        for m in measures:
            v = section["values"][policy][m]
            cells.append(f"{format_number(v['value'], 4)} {format_interval(v['interval'], 4)}")
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    lines += ["", "units: " + "; ".join(f"{m}: {section['units'][m]}" for m in measures), ""]
    if plot:
        lines += [f"![simulated return against held-out measures, one point per policy]({plot})", ""]
    return "\n".join(lines)


def plot_agreement(section: dict[str, Any], path: str | Path, title: str = "Policy-ranking agreement") -> Path:
    """Scatter of the reference (y) against each held-out measure (x), one labelled point per policy
    (colour legend on top) with its interval bars, the correlations and their intervals in each
    panel's title; PNG at ``path``."""
    from recarena.evaluation.report import _footer, _policy_colors, _pyplot, _save

    plt = _pyplot()
    ref, measures, policies = section["reference"], section["measures"], section["policies"]
    n_cols = min(3, len(measures))
    n_rows = math.ceil(len(measures) / n_cols)
    legend_rows = math.ceil(len(policies) / 5)
    height = 4.4 * n_rows + 0.9 + 0.2 * legend_rows
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(5.4 * n_cols, height), squeeze=False)
    colors = _policy_colors(policies)

    def bar(value: dict[str, Any]) -> list[list[float]] | None:
        low, high = value["interval"]
        return None if low is None else [[value["value"] - low], [high - value["value"]]]

    for axis, measure in zip(axes.flat, measures, strict=False):
        for policy in policies:
            x, y = section["values"][policy][measure], section["values"][policy][ref]
            axis.errorbar(x["value"], y["value"], xerr=bar(x), yerr=bar(y), fmt="o", capsize=2, markersize=5,
                          alpha=0.85, color=colors[policy])
            axis.annotate(policy, (x["value"], y["value"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set_xlabel("\n".join(textwrap.wrap(f"{measure}: {section['units'][measure]}", 60)), fontsize=8)
        axis.set_ylabel("\n".join(textwrap.wrap(f"{ref}: {section['units'][ref]}", 50)), fontsize=8)
        axis.set_title(correlation_text(section, measure), fontsize=9)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(measures):]:
        axis.axis("off")
    figure.suptitle(f"{title}: {len(policies)} policies", fontsize=11, y=1 - 0.08 / height)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[policy]) for policy in policies]
    figure.legend(handles, policies, loc="upper center", ncol=min(len(policies), 5), fontsize=8, frameon=False,
                  bbox_to_anchor=(0.5, 1 - 0.32 / height))
    note = (f"Points: policies; bars: {100 * (1 - section['alpha']):.0f}% bootstrap intervals of each value. Titles: rank "
            f"correlation of {ref} with the x measure over the policies, with bootstrap intervals. {section['resampling']}")
    bottom = _footer(figure, note)
    figure.tight_layout(rect=(0, bottom, 1, 1 - (0.3 + 0.2 * legend_rows) / height))
    _save(figure, Path(path), layout=False)
    return Path(path)
