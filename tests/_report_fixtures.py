"""evaluate.py inputs and checks shared by the report tests: tiny MovieLens-format data, fast flags,
a train.py config of a few seconds on that data, the readability check of saved figures, and a
5-baseline report with a policy-ranking panel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recarena.cli import evaluate
from tests._eval_fixtures import make_log

FAST = ["--item-encoder", "genres", "--bootstrap", "50", "--ope-validation-events", "0", "--sim-users", "10", "--sim-steps", "3"]
"""Baseline-only reports: genre encodings, no model needed."""
SIM_ONLY = ["--protocols", "simulated", "--bootstrap", "50", "--sim-users", "10"]
"""Simulated-protocol reports only."""


def write_tiny_data(folder: Path, n_users: int = 30, n_items: int = 20, seed: int = 0) -> Path:
    """MovieLens-style ratings.csv / movies.csv with popularity-skewed random histories."""
    rng = np.random.default_rng(seed)
    popularity = np.arange(n_items, 0, -1, dtype=float)
    sequences = []
    for _ in range(n_users):
        items = rng.choice(n_items, size=int(rng.integers(6, 12)), replace=False, p=popularity / popularity.sum())
        sequences.append([(int(i), float(rng.integers(1, 6))) for i in items])
    log = make_log(sequences, n_items)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{u + 1},{i + 1},{r:.1f},{t}" for u, i, r, t in zip(log.user, log.item, log.rating, log.timestamp, strict=False)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"] + [f"{i + 1},Movie {i + 1} (1995),{'Drama' if i % 2 else 'Comedy'}" for i in range(n_items)]
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    return folder


TOTAL_STEPS = 256
MAX_STEPS = 7
SIMULATOR_HISTORY = 12


def train_config(data: Path) -> dict[str, Any]:
    """A run of a few seconds: the logged simulator on ``data`` (2-epoch preference model), per-item linear Q.

    The env leaves history_length to the simulator (12) and scores steps by rating, with a session cap of 7.
    """
    return {
        "data": {"source": str(data)},
        "simulator": {"name": "logged", "config": {"history_length": SIMULATOR_HISTORY, "preference": {"epochs": 2},
                                                   "encoder": {"progress": False}}},
        "env": {"num_envs": 8, "max_steps": MAX_STEPS, "reward": "rating"},
        "agent": {"name": "linear_q", "config": {"form": "per_item", "exploration_steps": 200}},
        "train": {"total_steps": TOTAL_STEPS, "device": "cpu", "checkpoint_every": 128, "eval_every": 128,
                  "eval_sessions": 16, "log_every": 64},
    }


def readability_problems(figure: Any) -> list[str]:
    """What keeps a figure from being read on its own: a title, axis labels, a legend, the meaning of
    error bars and dashed reference lines written on it, x tick labels that do not overlap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.container import ErrorbarContainer

    canvas = FigureCanvasAgg(figure)  # a saved figure is closed: draw it again, as laid out
    canvas.draw()
    renderer = canvas.get_renderer()
    axes = [axis for axis in figure.axes if axis.get_visible() and axis.axison]
    words = " ".join([text.get_text() for text in figure.texts] + [axis.get_title() for axis in axes]
                     + ([figure._suptitle.get_text()] if figure._suptitle is not None else []))
    problems = []
    if figure._suptitle is None and not all(axis.get_title() for axis in axes):
        problems.append("no title")
    for axis in axes:
        name = axis.get_title() or "an axis"
        if not axis.get_xlabel() or not axis.get_ylabel():
            problems.append(f"{name}: an axis label is missing")
        boxes = [label.get_window_extent(renderer) for label in axis.get_xticklabels()
                 if label.get_visible() and label.get_text()]
        if any(a.overlaps(b) for a, b in zip(boxes, boxes[1:], strict=False)):
            problems.append(f"{name}: x tick labels overlap")
    if not figure.legends and not all(axis.get_legend() is not None for axis in axes):
        problems.append("no legend")
    intervals = any(isinstance(c, ErrorbarContainer) or getattr(c, "errorbar", None) is not None
                    for axis in axes for c in axis.containers)
    if intervals and "95%" not in words:
        problems.append("what the error bars are is not stated")
    if any(line.get_linestyle() == "--" for axis in axes for line in axis.get_lines()) and "dashed" not in words:
        problems.append("what the dashed lines are is not stated")
    return problems


def evaluate_panel_report(root: Path) -> Path:
    """evaluate.py's report of 5 baselines on tiny data (ranking, replay, simulated return) under ``root``."""
    data = write_tiny_data(root / "data")
    out = root / "report"
    argv = ["--data", str(data), "--out", str(out), "--k", "5", "--protocols", "ranking,replay,simulated",
            "--set", "sasrec.epochs=1", "--set", "gru4rec.epochs=1", "--set", "preference.epochs=2", *FAST,
            "--sim-users", "30", "--sim-steps", "20"]
    for name in ("random", "most_popular", "greedy", "sasrec", "gru4rec"):
        argv += ["--baseline", name]
    assert evaluate.main(argv) == 0
    return out
