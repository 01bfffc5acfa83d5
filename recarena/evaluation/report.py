"""The evaluation report: a terminal table, ``report.json``, ``report.md`` with PNG plots, and
evaluation scalars written back to each run's TensorBoard under ``eval/``.

``results`` is plain data: ``{"config": {...}, "candidates": {label: {"source": ..., "ranking":
{split: RankingResult.to_dict()}, "replay": ..., "ope": ..., "simulated": ...}}, "ope_validation":
...}``. Plots use matplotlib's Agg backend (no display needed). ``report.json`` is strict JSON: a
figure that could not be computed (NaN, e.g. a mean over no sessions) is written as ``null``
(``recarena.core.io.atomic_write_json``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from recarena.core.io import atomic_write, atomic_write_json, atomic_write_text

LEARNING_CURVE_TAGS = ("charts/episodic_return", "charts/ctr", "eval/episodic_return")


def headline(results: dict[str, Any], k: int) -> list[tuple[str, str, str]]:
    """(column name, protocol path, metric) of the figures shown in the table and bar plots."""
    columns = []
    for split, short in (("leave-last-out", "LLO"), ("temporal", "temp"), ("validation", "valid")):
        for metric in (f"HR@{k}", f"NDCG@{k}", "MRR"):
            columns.append((f"{metric} {short}", f"ranking/{split}", metric))
    columns += [
        ("replay match", "replay", "match_rate"),
        ("replay reward", "replay", "reward"),
        ("SNIPS", "ope", "SNIPS"),
        ("DR", "ope", "DR"),
        ("sim return", "simulated", "episodic_return"),
        ("sim CTR", "simulated", "ctr"),
    ]
    return columns


def metric_value(candidate: dict[str, Any], path: str, metric: str) -> tuple[float | None, tuple[float, float] | None]:
    """(value, interval) of one figure of a candidate's results, None where it was not computed."""
    section: Any = candidate
    for part in path.split("/"):
        section = section.get(part) if isinstance(section, dict) else None
    if not isinstance(section, dict):
        return None, None
    if path == "replay":
        value = section.get(metric)
        interval = section.get("interval") if metric == "reward" else None
        return value, tuple(interval) if interval else None
    if path == "ope":
        estimate = section.get("estimates", {}).get(metric)
        return (estimate["value"], (estimate["low"], estimate["high"])) if estimate else (None, None)
    value = section.get("metrics", {}).get(metric)
    interval = section.get("intervals", {}).get(metric)
    return value, tuple(interval) if interval else None


def _format(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def table(results: dict[str, Any], k: int) -> str:
    """A plain-text comparison table, one row per candidate (columns that nobody has are dropped)."""
    columns = headline(results, k)
    candidates = results["candidates"]
    rows = {label: [metric_value(c, path, m)[0] for _, path, m in columns] for label, c in candidates.items()}
    keep = [i for i in range(len(columns)) if any(row[i] is not None for row in rows.values())]
    header = ["policy"] + [columns[i][0] for i in keep]
    body = [[label] + [_format(row[i]) for i in keep] for label, row in rows.items()]
    widths = [max(len(line[j]) for line in [header] + body) for j in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) for line in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (reports are written on headless machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> None:
    """Write ``figure`` as a PNG atomically and free it."""
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    _pyplot().close(figure)


def _bar_plot(results: dict[str, Any], columns: list[tuple[str, str, str]], path: Path) -> bool:
    plt = _pyplot()
    labels = list(results["candidates"])
    panels = []
    for name, protocol, metric in columns:
        values = [metric_value(results["candidates"][label], protocol, metric) for label in labels]
        if any(v is not None for v, _ in values):
            panels.append((name, values))
    if not panels:
        return False
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.2 * n_rows), squeeze=False)
    for axis, (name, values) in zip(axes.flat, panels, strict=False):
        heights = [v if v is not None else 0.0 for v, _ in values]
        low = [v - ci[0] if ci and v is not None else 0.0 for v, ci in values]
        high = [ci[1] - v if ci and v is not None else 0.0 for v, ci in values]
        axis.bar(range(len(labels)), heights, yerr=[low, high], capsize=4, color="#4c72b0")
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        axis.set_title(name, fontsize=10)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    _save(figure, path)
    return True


def _tradeoff_plot(results: dict[str, Any], k: int, path: Path) -> bool:
    """Held-out HR@k (leave-last-out) against simulated return, one point per policy with its 95%
    intervals, dashed lines at most-popular's values when it was evaluated: which policies beat a
    baseline on both measures shows at a glance."""
    points = []
    for label, candidate in results["candidates"].items():
        hr, hr_ci = metric_value(candidate, "ranking/leave-last-out", f"HR@{k}")
        ret, ret_ci = metric_value(candidate, "simulated", "episodic_return")
        if hr is not None and ret is not None:
            points.append((label, hr, hr_ci, ret, ret_ci))
    if len(points) < 2:
        return False
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 5.0))
    for label, hr, hr_ci, ret, ret_ci in points:
        xerr = [[hr - hr_ci[0]], [hr_ci[1] - hr]] if hr_ci else None
        yerr = [[ret - ret_ci[0]], [ret_ci[1] - ret]] if ret_ci else None
        axis.errorbar(hr, ret, xerr=xerr, yerr=yerr, fmt="o", capsize=2, markersize=5, alpha=0.85)
        axis.annotate(label, (hr, ret), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for label, hr, _, ret, _ in points:
        if label == "most_popular":
            axis.axvline(hr, color="black", lw=0.6, ls="--")
            axis.axhline(ret, color="black", lw=0.6, ls="--")
    axis.set_xlabel(f"held-out HR@{k} (leave-last-out)")
    axis.set_ylabel("simulated return")
    axis.grid(alpha=0.3)
    _save(figure, path)
    return True


def read_learning_curves(run_dir: str | Path, tags: tuple[str, ...] = LEARNING_CURVE_TAGS) -> dict[str, list[tuple[int, float]]]:
    """Scalar series {tag: [(step, value)]} from every TensorBoard event file under ``run_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, list[tuple[int, float]]] = {}
    for directory in sorted({path.parent for path in Path(run_dir).rglob("events.out.tfevents*")}):
        accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        accumulator.Reload()
        available = set(accumulator.Tags().get("scalars", []))
        for tag in tags:
            if tag in available:
                curves.setdefault(tag, []).extend((e.step, float(e.value)) for e in accumulator.Scalars(tag))
    return {tag: sorted(points) for tag, points in curves.items()}


def _curve_plot(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> bool:
    plt = _pyplot()
    tags = sorted({tag for run in curves.values() for tag in run})
    if not tags:
        return False
    figure, axes = plt.subplots(1, len(tags), figsize=(5 * len(tags), 3.4), squeeze=False)
    for axis, tag in zip(axes.flat, tags, strict=False):
        for label, run in curves.items():
            if tag in run:
                steps, values = zip(*run[tag], strict=False)
                axis.plot(steps, values, label=label)
        axis.set_title(tag, fontsize=10)
        axis.set_xlabel("environment steps")
        axis.legend(fontsize=8)
    _save(figure, path)
    return True


def eval_scalars(candidate: dict[str, Any], k: int) -> dict[str, float]:
    """Flat ``eval/...`` scalars of one candidate (for TensorBoard)."""
    scalars = {}
    for _name, path, metric in headline({"candidates": {}}, k):
        value, _ = metric_value(candidate, path, metric)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            tag = f"eval/{path.replace('/', '_')}/{metric}".replace("@", "_at_")
            scalars[tag] = float(value)
    return scalars


def write_back_to_tensorboard(run_dir: str | Path, scalars: dict[str, float], step: int) -> Path:
    """Append ``scalars`` to the run's TensorBoard: a new event file in the folder train.py logs to."""
    from torch.utils.tensorboard import SummaryWriter

    from recarena.training.run import TENSORBOARD_DIR

    directory = Path(run_dir) / TENSORBOARD_DIR
    writer = SummaryWriter(log_dir=str(directory))
    for tag, value in sorted(scalars.items()):
        writer.add_scalar(tag, value, step)
    writer.close()
    return directory


def _markdown(results: dict[str, Any], k: int, plots: dict[str, str]) -> str:
    lines = ["# recarena evaluation report", ""]
    config = results.get("config", {})
    lines += [f"- data: `{config.get('data')}` ({config.get('n_users')} users, {config.get('n_items')} items)",
              f"- command: `{config.get('command')}`",
              f"- protocols: {', '.join(config.get('protocols', []))}; K = {k}; seed = {config.get('seed')}",
              ""]
    lines += ["## Comparison", "", "```", table(results, k), "```", ""]
    if "bars" in plots:
        lines += [f"![metrics with 95% bootstrap intervals]({plots['bars']})", ""]
    if "tradeoff" in plots:
        lines += [f"![held-out ranking against simulated return]({plots['tradeoff']})", ""]
    for label, candidate in results["candidates"].items():
        lines += [f"## {label}", "", f"- source: {candidate.get('source')}"]
        for split, ranking in candidate.get("ranking", {}).items():
            metric_text = ", ".join(
                f"{name} {value:.4f} [{ranking['intervals'][name][0]:.4f}, {ranking['intervals'][name][1]:.4f}]"
                for name, value in ranking["metrics"].items()
            )
            extra = ", ".join(f"{name} {value:.4f}" for name, value in ranking["beyond_accuracy"].items())
            lines.append(f"- ranking ({split}, {ranking['n_queries']} queries, {ranking['n_users']} users, "
                         f"{ranking['seconds']:.1f} s): {metric_text}; {extra}")
        replay = candidate.get("replay")
        if replay:
            ci = replay["interval"]
            reward = "-" if replay["reward"] is None else f"{replay['reward']:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
            lines.append(f"- replay (slate {replay['k']}, {replay['n_events']} events): match rate "
                         f"{replay['match_rate']:.4f}, {replay['n_matched']} matched, {replay['reward_kind']} reward {reward}")
        ope = candidate.get("ope")
        if ope:
            text = ", ".join(f"{n} {e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]" for n, e in ope["estimates"].items())
            lines.append(f"- off-policy ({ope['n_events']} events, {ope['evaluated_policy']}, clip {ope['clip']}): {text}")
        simulated = candidate.get("simulated")
        if simulated:
            text = ", ".join(f"{n} {v:.4f}" for n, v in simulated["metrics"].items())
            lines.append(f"- simulated ({simulated['n_sessions']} sessions, {simulated['users']}, slate {simulated['k']}, "
                         f"<= {simulated['max_steps']} steps): {text}")
        lines.append("")
    if any(c.get("replay") for c in results["candidates"].values()):
        from recarena.evaluation.replay import BIAS_NOTE

        lines += ["## Note on replay", "", BIAS_NOTE, ""]
    validation = results.get("ope_validation")
    if validation:
        lines += ["## Off-policy estimators on simulated logs with known truth", "",
                  f"{validation['n_events']} logged events from the synthetic simulator; logging policy "
                  f"{validation['logging_policy']}; evaluated policy {validation['evaluated_policy']}; true value "
                  f"{validation['true_value']:.4f} (± {validation['true_value_se']:.4f} s.e., {validation['n_true']} simulated users).",
                  "", "| estimator | value | 95% interval | relative error |", "|---|---|---|---|"]
        for row in validation["estimators"]:
            lines.append(f"| {row['estimator']} | {row['value']:.4f} | [{row['low']:.4f}, {row['high']:.4f}] | {100 * row['rel_error']:.2f}% |")
        lines.append("")
    if "curves" in plots:
        lines += ["## Learning curves", "", f"![learning curves]({plots['curves']})", ""]
    return "\n".join(lines)


def write_report(results: dict[str, Any], out_dir: str | Path, k: int, run_dirs: dict[str, Path] | None = None) -> dict[str, Path]:
    """Write report.json, report.md and the PNG plots into ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    written = {}
    if _bar_plot(results, headline(results, k), out_dir / "metrics.png"):
        plots["bars"] = "metrics.png"
        written["metrics.png"] = out_dir / "metrics.png"
    if _tradeoff_plot(results, k, out_dir / "tradeoff.png"):
        plots["tradeoff"] = "tradeoff.png"
        written["tradeoff.png"] = out_dir / "tradeoff.png"
    curves = {label: read_learning_curves(path) for label, path in (run_dirs or {}).items()}
    curves = {label: c for label, c in curves.items() if c}
    if curves and _curve_plot(curves, out_dir / "learning_curves.png"):
        plots["curves"] = "learning_curves.png"
        written["learning_curves.png"] = out_dir / "learning_curves.png"
    written["report.json"] = atomic_write_json(out_dir / "report.json", results)
    written["report.md"] = atomic_write_text(out_dir / "report.md", _markdown(results, k, plots))
    return written
