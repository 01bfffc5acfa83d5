"""The evaluation report: a terminal table, ``report.json``, ``report.md`` with PNG plots, and
evaluation scalars written back to each run's TensorBoard under ``eval/``.

``results`` is plain data: ``{"config": {...}, "candidates": {label: {"source": ..., "ranking":
{split: RankingResult.to_dict()}, "replay": ..., "ope": ..., "simulated": ...}}, "ope_validation":
..., "agreement": ...}`` (the policy-ranking agreement, :mod:`recarena.evaluation.agreement`, when evaluate.py
had enough policies). Plots use matplotlib's Agg backend (no display needed). ``report.json`` is strict JSON: a
figure that could not be computed (NaN, e.g. a mean over no sessions) is written as ``null``
(``recarena.core.io.atomic_write_json``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recarena.core.io import atomic_write, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from recarena.training.config import RunConfig
    from recarena.training.run import RunRecord

LEARNING_CURVE_TAGS = ("charts/episodic_return", "charts/ctr", "train_eval/episodic_return")
LEGACY_TAGS = {"eval/episodic_return": "train_eval/episodic_return"}
"""Tags of runs trained before train.py wrote its periodic evaluation under ``train_eval/``."""

NOT_SCORED = "not_scored"
"""The key of a protocol section evaluate.py did not score, with why (``{"not_scored": "n/a: trained on
leave-last-out"}``): a trained run is scored only on the held-out events of the split it trained on."""


def scored(section: Any) -> bool:
    """Whether a protocol section holds figures (not a :data:`NOT_SCORED` marker)."""
    return isinstance(section, dict) and NOT_SCORED not in section


INTERVAL_NOTE = ("error bars: 95% percentile bootstrap intervals (resampling users for ranking, replay and "
                 "SNIPS/DR; simulated sessions for sim return and sim CTR)")


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
    if not scored(section):
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


def _split_label(path: str) -> str:
    return path.split("/", 1)[1] if "/" in path else path


def column_meaning(candidates: dict[str, Any], name: str, path: str, metric: str, k: int) -> tuple[str, str]:
    """(panel title, y-axis label with its unit) of one headline figure, with the protocol's sizes."""
    def first(section: str) -> dict[str, Any]:
        for candidate in candidates.values():
            value: Any = candidate
            for part in section.split("/"):
                value = value.get(part) if isinstance(value, dict) else None
            if scored(value):
                return value
        return {}

    info = first(path)
    if path.startswith("ranking/"):
        unit = {"HR": f"share of queries hit in the top {k}", "NDCG": "NDCG (0-1)", "MRR": "mean reciprocal rank"}
        title = f"{name} ({_split_label(path)}, {info.get('n_queries', '?')} queries)"
        return title, unit[metric.split("@")[0]]
    if path == "replay":
        if metric == "match_rate":
            return f"replay match (slate {info.get('k', k)}, {info.get('n_events', '?')} events)", "share of events matched"
        kind = info.get("reward_kind", "like")
        unit = "mean rating of matched events (1-5)" if kind == "rating" else f"mean {kind} of matched events (0-1)"
        return f"replay reward (slate {info.get('k', k)}, {info.get('n_events', '?')} events)", unit
    if path == "ope":
        return f"{name} ({info.get('n_events', '?')} held-out events)", "estimated reward per event"
    sessions = f"{info.get('n_sessions', '?')} sessions, slate {info.get('k', k)}"
    if metric == "ctr":
        return f"sim CTR ({sessions})", "clicks per step"
    return f"sim return ({sessions})", "rewards per session"


def shown_columns(results: dict[str, Any], k: int) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The headline columns the table and bar plot show, and their footnotes: the replay match rate
    is left out where HR@k on the temporal split is shown, as it is the same figure by construction
    for a policy that shows its top k (report.json keeps it); the simulated figures say whose users,
    which slate and how many sessions they are."""
    columns = headline(results, k)
    candidates = results["candidates"]
    present = {name for name, path, metric in columns
               if any(metric_value(c, path, metric)[0] is not None for c in candidates.values())}
    notes = []
    if "replay match" in present and f"HR@{k} temp" in present:
        columns = [column for column in columns if column[0] != "replay match"]
        notes.append(f"replay match (in report.json) = HR@{k} temp by construction for every policy that shows the "
                     f"top {k} of its scores (all but random): the same temporal-split queries; not repeated here.")
    simulated = next((c["simulated"] for c in candidates.values() if scored(c.get("simulated"))), None)
    if simulated and {"sim return", "sim CTR"} & present:
        notes.append(f"sim return, sim CTR: evaluate.py's simulated sessions of {simulated['n_sessions']} "
                     f"{simulated['users']}, slate {simulated['k']}, at most {simulated['max_steps']} steps; return = "
                     f"sum of rewards per session, CTR = clicks per step (one slate per step). train.py's "
                     f"train_eval/* figures (progress bar 'eval') are other sessions at the run's slate size.")
    return columns, notes


def _format(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def table(results: dict[str, Any], k: int) -> str:
    """A plain-text comparison table, one row per candidate (columns that nobody has are dropped),
    with footnotes saying what the simulated figures average over (:func:`shown_columns`)."""
    columns, notes = shown_columns(results, k)
    candidates = results["candidates"]
    rows = {label: [metric_value(c, path, m)[0] for _, path, m in columns] for label, c in candidates.items()}
    keep = [i for i in range(len(columns)) if any(row[i] is not None or _not_scored(candidates[label], columns[i][1])
                                                  for label, row in rows.items())]
    header = ["policy"] + [columns[i][0] for i in keep]
    body = [[label] + ["n/a" if _not_scored(candidates[label], columns[i][1]) else _format(row[i]) for i in keep]
            for label, row in rows.items()]
    widths = [max(len(line[j]) for line in [header] + body) for j in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) for line in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    reasons = sorted({_not_scored(c, path) for c in candidates.values() for _, path, _ in columns} - {None})
    notes += [f"n/a: {reason.removeprefix('n/a: ')}; a run is scored only on the held-out events of the split it "
              f"trained on (data.split)"
              for reason in reasons]
    if notes:
        lines += [""] + [f"* {note}" for note in notes]
    return "\n".join(lines)


def _not_scored(candidate: dict[str, Any], path: str) -> str | None:
    """Why a candidate's protocol section was not scored, None if it was (or is absent)."""
    section: Any = candidate
    for part in path.split("/"):
        section = section.get(part) if isinstance(section, dict) else None
    return section.get(NOT_SCORED) if isinstance(section, dict) else None


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (reports are written on headless machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path, layout: bool = True) -> None:
    """Write ``figure`` as a PNG atomically and free it."""
    if layout:
        figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    _pyplot().close(figure)


def _policy_colors(labels: list[str]) -> dict[str, Any]:
    plt = _pyplot()
    palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: palette(i % palette.N) for i, label in enumerate(labels)}


def _footer(figure: Any, text: str) -> float:
    """A note at the bottom of ``figure`` (what the intervals and lines mean), wrapped to its width;
    returns the share of the figure's height it takes."""
    import textwrap

    lines = textwrap.wrap(text, int(figure.get_figwidth() * 17))
    figure.text(0.01, 0.005, "\n".join(lines), fontsize=8, va="bottom", ha="left")
    return (len(lines) * 8 * 1.25 + 8) / 72 / figure.get_figheight()


def _bar_plot(results: dict[str, Any], columns: list[tuple[str, str, str]], path: Path, k: int = 10,
              notes: list[str] | None = None) -> bool:
    """One panel per headline figure, one coloured bar per policy (legend on top), error bars with
    the 95% bootstrap intervals; titles, units and the intervals' meaning are on the image."""
    plt = _pyplot()
    candidates = results["candidates"]
    labels = list(candidates)
    panels = []
    for name, protocol, metric in columns:
        values = [metric_value(candidates[label], protocol, metric) for label in labels]
        if any(v is not None for v, _ in values):
            panels.append((column_meaning(candidates, name, protocol, metric, k), values))
    if not panels:
        return False
    colors = _policy_colors(labels)
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    height = 3.0 * n_rows + 1.4
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(4.6 * n_cols, height), squeeze=False)
    for axis, ((title, unit), values) in zip(axes.flat, panels, strict=False):
        for i, (label, (value, ci)) in enumerate(zip(labels, values, strict=True)):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                axis.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="grey")
                continue
            yerr = [[value - ci[0]], [ci[1] - value]] if ci else None
            axis.bar(i, value, yerr=yerr, capsize=4, color=colors[label], label=label)
        axis.set_xticks([])
        axis.set_xlabel("policy (colour: legend above)", fontsize=8)
        axis.set_ylabel(unit, fontsize=8)
        axis.set_title(title, fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[label]) for label in labels]
    config = results.get("config", {})
    figure.suptitle(f"Held-out evaluation of {len(labels)} policies on {config.get('data', 'the data')} (K = {k})",
                    fontsize=12, y=1 - 0.08 / height)
    legend_rows = math.ceil(len(labels) / 5)
    figure.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), fontsize=8, frameon=False,
                  bbox_to_anchor=(0.5, 1 - 0.35 / height))
    bottom = _footer(figure, " ".join([INTERVAL_NOTE + "; n/a: not computed.", *(notes or [])]))
    figure.tight_layout(rect=(0, bottom, 1, 1 - (0.55 + 0.2 * legend_rows) / height))
    _save(figure, path, layout=False)
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
    colors = _policy_colors(list(results["candidates"]))
    figure, axis = plt.subplots(figsize=(7.5, 5.6))
    for label, hr, hr_ci, ret, ret_ci in points:
        xerr = [[hr - hr_ci[0]], [hr_ci[1] - hr]] if hr_ci else None
        yerr = [[ret - ret_ci[0]], [ret_ci[1] - ret]] if ret_ci else None
        axis.errorbar(hr, ret, xerr=xerr, yerr=yerr, fmt="o", capsize=2, markersize=5, alpha=0.85,
                      color=colors[label], label=label)
        axis.annotate(label, (hr, ret), fontsize=7, xytext=(3, 3), textcoords="offset points")
    reference = [(hr, ret) for label, hr, _, ret, _ in points if label == "most_popular"]
    for hr, ret in reference:
        axis.axvline(hr, color="black", lw=0.6, ls="--", label="most_popular's HR and return (reference)")
        axis.axhline(ret, color="black", lw=0.6, ls="--")
    candidates = results["candidates"]
    llo = next((c["ranking"]["leave-last-out"] for c in candidates.values()
                if scored(c.get("ranking", {}).get("leave-last-out"))), {})
    simulated = next((c["simulated"] for c in candidates.values() if scored(c.get("simulated"))), {})
    axis.set_xlabel(f"HR@{k}, leave-last-out: share of {llo.get('n_users', '?')} users whose held-out last item "
                    f"is in the top {k}", fontsize=9)
    axis.set_ylabel(f"simulated return (rewards per session; {simulated.get('n_sessions', '?')} held-out users,\n"
                    f"slate {simulated.get('k', k)}, at most {simulated.get('max_steps', '?')} steps)", fontsize=9)
    axis.set_title("Held-out ranking vs simulated return (up and right is better)", fontsize=11)
    axis.legend(fontsize=7, loc="best")
    axis.grid(alpha=0.3)
    note = "error bars: 95% bootstrap intervals (over users for HR, over sessions for return)"
    if reference:
        note += "; dashed lines: most_popular's HR and return"
    figure.tight_layout(rect=(0, _footer(figure, note), 1, 1))
    _save(figure, path, layout=False)
    return True


def read_learning_curves(run_dir: str | Path, tags: tuple[str, ...] = LEARNING_CURVE_TAGS) -> dict[str, list[tuple[int, float]]]:
    """Scalar series {tag: [(step, value)]} from every TensorBoard event file under ``run_dir`` (a run
    trained before ``train_eval/`` has its periodic evaluation read from ``eval/episodic_return``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    wanted = {tag: tag for tag in tags}
    wanted.update({old: new for old, new in LEGACY_TAGS.items() if new in tags and old not in tags})
    curves: dict[str, list[tuple[int, float]]] = {}
    for directory in sorted({path.parent for path in Path(run_dir).rglob("events.out.tfevents*")}):
        accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        accumulator.Reload()
        available = set(accumulator.Tags().get("scalars", []))
        for tag, name in wanted.items():
            if tag in available:
                curves.setdefault(name, []).extend((e.step, float(e.value)) for e in accumulator.Scalars(tag))
    return {tag: sorted(points) for tag, points in curves.items()}


CURVE_MEANING = {
    "charts/episodic_return": ("Training return (charts/episodic_return)", "rewards per session"),
    "charts/ctr": ("Training CTR (charts/ctr)", "clicks per user-step"),
    "train_eval/episodic_return": ("Periodic evaluation (train_eval/episodic_return)", "rewards per session"),
}


def _steps_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    def short(value: float, _position: Any) -> str:
        for size, suffix in ((1e6, "M"), (1e3, "k")):
            if abs(value) >= size:
                return f"{value / size:.3g}{suffix}"
        return f"{value:.0f}"

    return FuncFormatter(short)


def _curve_label(label: str, tag: str, settings: dict[str, Any] | None) -> str:
    """The legend entry of one run's curve: what its points average over."""
    if not settings:
        return label
    if tag.startswith("train_eval/"):
        return f"{label} ({settings['eval_sessions']} sessions, slate {settings['slate_size']})"
    return f"{label} ({settings['num_envs']} users/step, slate {settings['slate_size']})"


def _curve_plot(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path,
                settings: dict[str, dict[str, Any]] | None = None) -> bool:
    """One panel per tag, one line per run (legend: what its points average over), steps in k/M."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    order = list(CURVE_MEANING)
    tags = sorted({tag for run in curves.values() for tag in run}, key=lambda t: (order.index(t) if t in order else 99, t))
    if not tags:
        return False
    figure, axes = plt.subplots(1, len(tags), figsize=(5.2 * len(tags), 4.4), squeeze=False)
    for axis, tag in zip(axes.flat, tags, strict=False):
        for label, run in curves.items():
            if tag in run:
                steps, values = zip(*run[tag], strict=False)
                axis.plot(steps, values, label=_curve_label(label, tag, (settings or {}).get(label)),
                          marker="o" if len(steps) < 20 else None, markersize=3)
        title, unit = CURVE_MEANING.get(tag, (tag, "value"))
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("training user-steps")
        axis.set_ylabel(unit)
        axis.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        axis.xaxis.set_major_formatter(_steps_formatter())
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle("Learning curves, read from each run's TensorBoard", fontsize=11)
    bottom = _footer(figure, "charts/*: means over the training sessions that ended in each log window (the exploring "
                             "policy); train_eval/*: the greedy policy on fixed-seed sessions of the training simulator, "
                             "at the run's slate size; neither is the report's sim return (held-out users). Lines join "
                             "the logged points; no intervals.")
    figure.tight_layout(rect=(0, bottom, 1, 0.95))
    _save(figure, path, layout=False)
    return True


def _run_settings(config: RunConfig) -> dict[str, Any]:
    """Slate size, users per step and evaluation sessions of a run (for the curves' legend)."""
    return {"slate_size": config.env.slate_size, "num_envs": config.env.num_envs,
            "eval_sessions": config.train.eval_sessions}


def eval_scalars(candidate: dict[str, Any], k: int) -> dict[str, float]:
    """Flat ``eval/...`` scalars of one candidate (for TensorBoard)."""
    scalars = {}
    for _name, path, metric in headline({"candidates": {}}, k):
        value, _ = metric_value(candidate, path, metric)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            tag = f"eval/{path.replace('/', '_')}/{metric}".replace("@", "_at_")
            scalars[tag] = float(value)
    return scalars


def eval_descriptions(candidate: dict[str, Any], k: int) -> dict[str, str]:
    """TensorBoard descriptions of :func:`eval_scalars`' tags: protocol, users or sessions, slate size."""
    descriptions = {}
    for name, path, metric in headline({"candidates": {}}, k):
        section: Any = candidate
        for part in path.split("/"):
            section = section.get(part) if isinstance(section, dict) else None
        if not scored(section):
            continue
        tag = f"eval/{path.replace('/', '_')}/{metric}".replace("@", "_at_")
        if path.startswith("ranking/"):
            text = (f"{metric} on the {_split_label(path)} split: full ranking over the catalogue, "
                    f"{section.get('n_queries')} held-out queries of {section.get('n_users')} users")
        elif path == "replay":
            what = ("share of events whose logged item is in the slate (= HR@K temp for a top-K policy)"
                    if metric == "match_rate" else f"mean logged {section.get('reward_kind')} over the matched events")
            text = f"replay of {section.get('n_events')} held-out temporal-split events, slate {section.get('k')}: {what}"
        elif path == "ope":
            text = f"{metric} estimate of the reward per event on {section.get('n_events')} held-out events"
        else:
            what = "clicks per step (one slate per step)" if metric == "ctr" else "mean return (sum of rewards per session)"
            text = (f"simulated sessions of {section.get('n_sessions')} {section.get('users')}, slate {section.get('k')}, "
                    f"at most {section.get('max_steps')} steps: {what}; not train.py's train_eval/* (other sessions, "
                    f"the run's slate size)")
        descriptions[tag] = f"evaluate.py ({name}): {text}."
    return descriptions


def evaluation_event_file(run_dir: str | Path, step: int) -> Path:
    """The one event file evaluate.py writes a run's figures at ``step`` into (a re-run replaces it)."""
    from recarena.training.run import TENSORBOARD_DIR

    return Path(run_dir) / TENSORBOARD_DIR / f"events.out.tfevents.evaluate.step_{int(step)}"


def write_back_to_tensorboard(run_dir: str | Path, scalars: dict[str, float], step: int,
                              descriptions: dict[str, str] | None = None) -> Path:
    """Write ``scalars`` into the run's TensorBoard at ``step``, in the folder train.py logs to: one
    event file of a fixed name per step (:func:`evaluation_event_file`), so evaluating a run again
    replaces its points instead of adding a second point per tag (tags the new evaluation does not
    have, e.g. another ``--k``, stay)."""
    from recarena.training.tensorboard import write_event_file

    return write_event_file(evaluation_event_file(run_dir, step), step, scalars, descriptions)


def _markdown(results: dict[str, Any], k: int, plots: dict[str, str]) -> str:
    lines = ["# recarena evaluation report", ""]
    config = results.get("config", {})
    lines += [f"- data: `{config.get('data')}` ({config.get('n_users')} users, {config.get('n_items')} items)",
              f"- command: `{config.get('command')}`",
              f"- protocols: {', '.join(config.get('protocols', []))}; K = {k}; seed = {config.get('seed')}",
              *[f"- {protocol} scored with models fitted on {what}" for protocol, what in config.get("fitted_on", {}).items()],
              *[f"- run {label} trained on the {split} split" for label, split in config.get("runs_trained_on", {}).items()],
              ""]
    lines += ["## Comparison", "", "```", table(results, k), "```", ""]
    if "bars" in plots:
        lines += [f"![headline metrics per policy with 95% bootstrap intervals]({plots['bars']})", ""]
    if "tradeoff" in plots:
        lines += [f"![held-out ranking against simulated return]({plots['tradeoff']})", ""]
    if results.get("agreement"):
        from recarena.evaluation.agreement import agreement_markdown

        lines += [agreement_markdown(results["agreement"], plots.get("agreement"))]
    for label, candidate in results["candidates"].items():
        lines += [f"## {label}", "", f"- source: {candidate.get('source')}"]
        for split, ranking in candidate.get("ranking", {}).items():
            if not scored(ranking):
                lines.append(f"- ranking ({split}): {ranking[NOT_SCORED]}")
                continue
            metric_text = ", ".join(
                f"{name} {value:.4f} [{ranking['intervals'][name][0]:.4f}, {ranking['intervals'][name][1]:.4f}]"
                for name, value in ranking["metrics"].items()
            )
            extra = ", ".join(f"{name} {value:.4f}" for name, value in ranking["beyond_accuracy"].items())
            lines.append(f"- ranking ({split}, {ranking['n_queries']} queries, {ranking['n_users']} users, "
                         f"{ranking['seconds']:.1f} s): {metric_text}; {extra}")
        lines += [f"- {name}: {candidate[name][NOT_SCORED]}" for name in ("replay", "ope", "simulated")
                  if isinstance(candidate.get(name), dict) and not scored(candidate[name])]
        replay = candidate.get("replay")
        if scored(replay):
            ci = replay["interval"]
            reward = "-" if replay["reward"] is None else f"{replay['reward']:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
            lines.append(f"- replay (slate {replay['k']}, {replay['n_events']} events): match rate "
                         f"{replay['match_rate']:.4f}, {replay['n_matched']} matched, {replay['reward_kind']} reward {reward}")
        ope = candidate.get("ope")
        if scored(ope):
            text = ", ".join(f"{n} {e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]" for n, e in ope["estimates"].items())
            lines.append(f"- off-policy ({ope['n_events']} events, {ope['evaluated_policy']}, clip {ope['clip']}): {text}")
        simulated = candidate.get("simulated")
        if scored(simulated):
            text = ", ".join(f"{n} {v:.4f}" for n, v in simulated["metrics"].items())
            lines.append(f"- simulated ({simulated['n_sessions']} sessions, {simulated['users']}, slate {simulated['k']}, "
                         f"<= {simulated['max_steps']} steps): {text}")
        lines.append("")
    if any(scored(c.get("replay")) for c in results["candidates"].values()):
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


def write_report(results: dict[str, Any], out_dir: str | Path, k: int, runs: dict[str, RunRecord] | None = None) -> dict[str, Path]:
    """Write report.json, report.md and the PNG plots into ``out_dir``; returns the paths written.
    ``runs``: the evaluated runs as evaluate.py read them (their learning curves are drawn)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    written = {}
    columns, notes = shown_columns(results, k)
    if _bar_plot(results, columns, out_dir / "metrics.png", k, notes):
        plots["bars"] = "metrics.png"
        written["metrics.png"] = out_dir / "metrics.png"
    if _tradeoff_plot(results, k, out_dir / "tradeoff.png"):
        plots["tradeoff"] = "tradeoff.png"
        written["tradeoff.png"] = out_dir / "tradeoff.png"
    if results.get("agreement"):
        from recarena.evaluation.agreement import plot_agreement

        written["agreement.png"] = plot_agreement(results["agreement"], out_dir / "agreement.png",
                                                  f"Simulated return vs held-out measures on {results.get('config', {}).get('data')}")
        plots["agreement"] = "agreement.png"
    curves = {label: read_learning_curves(run.path) for label, run in (runs or {}).items()}
    curves = {label: c for label, c in curves.items() if c}
    settings = {label: _run_settings(runs[label].config) for label in curves}
    if curves and _curve_plot(curves, out_dir / "learning_curves.png", settings):
        plots["curves"] = "learning_curves.png"
        written["learning_curves.png"] = out_dir / "learning_curves.png"
    written["report.json"] = atomic_write_json(out_dir / "report.json", results)
    written["report.md"] = atomic_write_text(out_dir / "report.md", _markdown(results, k, plots))
    return written
