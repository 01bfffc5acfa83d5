"""TensorBoard logging with stable tag namespaces (CleanRL's convention).

Tags: ``charts/episodic_return``, ``charts/ctr``, ``charts/session_length``, ``charts/sps``
(and ``charts/exploration_rate``, ``charts/learning_rate``), ``losses/*`` (``td_loss``,
``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``, ``clip_fraction``...), ``eval/*``
(periodic held-out evaluation) and ``sim/coverage``, ``sim/diversity``, ``sim/leave_rate``. The
hyperparameters are written once, as a Markdown table under the ``hyperparameters`` text tag.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter


def flatten_hyperparameters(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"agent.lr": 3e-4, ...}`` from nested plain data (dicts of scalars/lists)."""
    flat: dict[str, Any] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            flat.update(flatten_hyperparameters(value, f"{prefix}{key}."))
        return flat
    flat[prefix.rstrip(".")] = config
    return flat


def hyperparameter_table(config: dict[str, Any]) -> str:
    """A Markdown table of every (dotted) hyperparameter, the way CleanRL logs them."""
    rows = [f"|{key}|{value}|" for key, value in sorted(flatten_hyperparameters(config).items())]
    return "|param|value|\n|-|-|\n" + "\n".join(rows)


class TensorBoardLogger:
    """A :class:`recarena.agents.base.ScalarLogger` that writes TensorBoard event files into ``log_dir``.

    ``listeners`` are called with every ``(tag, value, step)`` (train.py uses one to feed the
    progress bar). Events of a resumed run are appended to new files in the same directory;
    TensorBoard merges them.
    """

    def __init__(self, log_dir: str | Path, listeners: list[Callable[[str, float, int], None]] | None = None):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.listeners = list(listeners or [])
        self.last: dict[str, float] = {}

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        value = float(value)
        self.writer.add_scalar(tag, value, int(step))
        self.last[tag] = value
        for listener in self.listeners:
            listener(tag, value, int(step))

    def log_hyperparameters(self, config: dict[str, Any]) -> None:
        """Write the hyperparameter table once (text tag ``hyperparameters``)."""
        self.writer.add_text("hyperparameters", hyperparameter_table(config), 0)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under ``log_dir``: ``{tag: [(step, value), ...]}`` (for tests/docs)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents*")):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            result.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return result


def read_text_tags(log_dir: str | Path) -> list[str]:
    """Names of the text summaries (e.g. ``hyperparameters``) in the event files under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for path in sorted(Path(log_dir).glob("events.out.tfevents*")):
        accumulator = EventAccumulator(str(path), size_guidance={"tensors": 0})
        accumulator.Reload()
        tags.update(accumulator.Tags().get("tensors", []))
    return sorted(tags)
