"""The table of a sweep: each configuration's mean and 95% interval over seeds on the spec's measures,
and the best configuration by the selection metric; written as ``results.json``, ``results.md`` and
``results.png`` into the sweep directory (``recarena sweep`` writes the per-trial records it reads).

Intervals are Student-t intervals of the mean over seeds (the seeds are the replicates); one seed
gives a mean and no interval. The best configuration is chosen among those whose every seed finished,
by the mean of the selection metric (never a test-event measure: the spec refuses that).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from recarena.core.errors import ConfigError
from recarena.core.io import atomic_write, atomic_write_json, atomic_write_text

SWEEP_FILE = "sweep.json"
"""The spec, the base config and the trials of a sweep directory (written before any trial runs)."""
RESULTS_FILE = "results.json"
TRIALS_DIR = "trials"
"""One ``<trial>.json`` record per trial: its attempts and, once scored, its measures."""
RUNS_DIR = "runs"
"""The trials' train.py run directories, ``runs/<config>_s<seed>``."""


def mean_interval(values: list[float], confidence: float = 0.95) -> tuple[float, tuple[float, float] | None]:
    """Mean of ``values`` and its Student-t interval over them (None for fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, (mean - half, mean + half)


def summarize(sweep: dict[str, Any], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sweep's results from its ``sweep.json`` content and the trial records (by trial name)."""
    spec = sweep["spec"]
    measures = list(dict.fromkeys([spec["select"], *spec["measures"]]))
    configs: dict[str, dict[str, Any]] = {}
    for trial in sweep["trials"]:
        entry = configs.setdefault(trial["config_id"], {
            "id": trial["config_id"], "overrides": trial["overrides"], "seeds": [], "runs": [],
            "values": {m: [] for m in measures}, "unfinished": []})
        record = records.get(trial["name"], {})
        if record.get("status") != "done":
            entry["unfinished"].append({"trial": trial["name"], "status": record.get("status", "not run"),
                                        "step": record.get("step")})
            continue
        entry["seeds"].append(trial["seed"])
        entry["runs"].append(record["run_dir"])
        for measure in measures:
            entry["values"][measure].append(record["measures"].get(measure))
    for entry in configs.values():
        entry["mean"], entry["interval"] = {}, {}
        for measure, values in entry["values"].items():
            present = [float(v) for v in values if v is not None]
            if present:
                entry["mean"][measure], entry["interval"][measure] = mean_interval(present)
    complete = [e for e in configs.values() if not e["unfinished"] and spec["select"] in e["mean"]]
    sign = 1 if spec["mode"] == "max" else -1
    best = max(complete, key=lambda e: sign * e["mean"][spec["select"]])["id"] if complete else None
    return {"select": spec["select"], "mode": spec["mode"], "measures": measures, "best": best,
            "configs": list(configs.values()), "spec_file": sweep.get("spec_file"), "base": sweep.get("base")}


def _cell(mean: float | None, interval: tuple[float, float] | None) -> str:
    if mean is None:
        return "n/a"
    text = f"{mean:.4g}"
    return f"{text} [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else text


def markdown(results: dict[str, Any], notes: list[str] | None = None) -> str:
    """The sweep's table (one row per configuration, the best in bold) and the per-run figures."""
    measures, best = results["measures"], results["best"]
    varied = list(dict.fromkeys(key for c in results["configs"] for key in c["overrides"]))
    lines = ["# Sweep results", ""]
    if results.get("spec_file"):
        lines += [f"Spec `{results['spec_file']}`, base config `{results['base']}`.", ""]
    header = ["config", *varied, "seeds", *measures]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in results["configs"]:
        cells = [config["id"] + (" (best)" if config["id"] == best else "")]
        cells += [str(config["overrides"].get(key, "")) for key in varied]
        cells.append(", ".join(str(s) for s in config["seeds"]) or "none finished")
        cells += [_cell(config["mean"].get(m), config["interval"].get(m)) for m in measures]
        if config["id"] == best:
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Mean over seeds [95% Student-t interval over seeds]; best configuration by the mean of "
              f"`{results['select']}` ({results['mode']}), among configurations whose every seed finished: "
              f"**{best or 'none'}**. `ranking/validation/*` is scored on each user's second-last event, "
              f"`ranking/leave-last-out/*` on the last (test) event, `simulated/*` in evaluate.py's "
              f"simulated sessions, `train_eval/*` is train.py's final held-out evaluation."]
    unfinished = [u for c in results["configs"] for u in c["unfinished"]]
    if unfinished:
        lines += ["", "Not in the table: " + "; ".join(
            f"{u['trial']} ({u['status']}{'' if u.get('step') is None else ' at step ' + str(u['step'])})"
            for u in unfinished) + "."]
    lines += ["", "## Runs", "", "| run | " + " | ".join(measures) + " |", "|---|" + "---|" * len(measures)]
    for config in results["configs"]:
        for index, run in enumerate(config["runs"]):
            values = [config["values"][m][index] for m in measures]
            lines.append(f"| `{run}` | " + " | ".join("n/a" if v is None else f"{v:.4g}" for v in values) + " |")
    lines += [""] + [f"{note}" for note in notes or []]
    return "\n".join(lines).rstrip() + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """One panel per measure: every seed's value (dots) and the mean with its interval, best in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures, configs = results["measures"], results["configs"]
    figure, axes = plt.subplots(1, len(measures), figsize=(3.2 * len(measures) + 1, 3.4), squeeze=False)
    for axis, measure in zip(axes[0], measures, strict=True):
        for x, config in enumerate(configs):
            color = "tab:red" if config["id"] == results["best"] else "tab:blue"
            values = [v for v in config["values"][measure] if v is not None]
            axis.scatter([x] * len(values), values, s=12, color=color, alpha=0.4)
            mean, interval = config["mean"].get(measure), config["interval"].get(measure)
            if mean is not None:
                error = [[mean - interval[0]], [interval[1] - mean]] if interval else None
                axis.errorbar([x], [mean], yerr=error, fmt="o", color=color, capsize=4)
        axis.set_xticks(range(len(configs)), [c["id"] for c in configs], rotation=45 if len(configs) > 6 else 0)
        axis.set_xlim(-0.6, len(configs) - 0.4)
        axis.set_title(measure, fontsize=9)
    figure.suptitle(f"mean and 95% interval over seeds; best by {results['select']} in red", fontsize=9)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)


def write_results(sweep_dir: str | Path, results: dict[str, Any], notes: list[str] | None = None) -> dict[str, Path]:
    """``results.json``, ``results.md`` and ``results.png`` in ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    paths = {"json": sweep_dir / RESULTS_FILE, "md": sweep_dir / "results.md", "png": sweep_dir / "results.png"}
    atomic_write_json(paths["json"], {**results, "notes": notes or []})
    atomic_write_text(paths["md"], markdown(results, notes))
    plot(results, paths["png"])
    return paths


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def read_records(sweep_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The trial records of a sweep directory, by trial name."""
    folder = Path(sweep_dir) / TRIALS_DIR
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))}


def best_runs(sweep_dir: str | Path) -> list[Path]:
    """The run directories of a finished sweep's best configuration (one per seed), from ``results.json``."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / RESULTS_FILE
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: a sweep directory without {RESULTS_FILE}; the sweep has not finished "
                          f"(run recarena sweep again to continue it)")
    results = json.loads(path.read_text(encoding="utf-8"))
    best = next((c for c in results.get("configs", []) if c["id"] == results.get("best")), None)
    if best is None:
        raise ConfigError(f"{path}: no best configuration (no configuration finished on every seed)")
    return [Path(run) if Path(run).is_absolute() else sweep_dir / run for run in best["runs"]]
