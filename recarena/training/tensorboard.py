"""TensorBoard logging with stable tag namespaces (CleanRL's convention).

Tags: ``charts/episodic_return``, ``charts/ctr``, ``charts/session_length``, ``charts/sps``
(and ``charts/exploration_rate``, ``charts/learning_rate``), ``losses/*`` (``td_loss``,
``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``, ``clip_fraction``...),
``train_eval/*`` (train.py's periodic evaluation: the greedy policy on ``train.eval_sessions``
fixed-seed simulated sessions at the training slate size) and ``sim/coverage``, ``sim/diversity``,
``sim/leave_rate``; evaluate.py writes its own figures under ``eval/*`` (held-out users, slate
``--k``). Each tag train.py writes carries a description (shown by TensorBoard beside the chart)
that states what it averages over: the slate size and the number of users or sessions. The
hyperparameters are written once, as a Markdown table under the ``hyperparameters`` text tag.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from recarena.core.io import atomic_write


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


def tag_descriptions(config: Any) -> dict[str, str]:
    """What each scalar train.py logs is a mean over, for a run config (:class:`RunConfig`): its
    TensorBoard descriptions, with the slate size and the numbers of users and sessions."""
    env, train = config.env, config.train
    k, users, cap, sessions = env.slate_size, env.num_envs, env.max_steps, train.eval_sessions
    training = (f"Training ({users} simulated users per step, slate {k}, sessions of at most {cap} steps; "
                f"the exploring policy), over the log window since the last point: ")
    periodic = (f"train.py's periodic evaluation: the greedy policy on {sessions} fixed-seed sessions the training "
                f"simulator draws (not the training sessions), slate {k}, at most {cap} steps each: ")
    other = " Not evaluate.py's eval/simulated/* (held-out users, slate --k)."
    return {
        "charts/episodic_return": training + "mean return (sum of rewards) of the sessions that ended.",
        "charts/session_length": training + "mean length (steps) of the sessions that ended.",
        "charts/ctr": training + f"clicks per user-step (a step shows one slate of {k}).",
        "charts/sps": f"Training speed: user-steps per wall-clock second ({users} user-steps per vector step).",
        "sim/leave_rate": training + "share of the ended sessions that ended by the user leaving (not the cap).",
        "sim/coverage": training + "share of the catalogue recommended.",
        "sim/diversity": training + "mean 1 - cosine similarity of consecutive recommendations to a user.",
        "train_eval/episodic_return": periodic + "mean return (sum of rewards per session)." + other,
        "train_eval/session_length": periodic + "mean session length (steps)." + other,
        "train_eval/ctr": periodic + f"clicks per step (a step shows one slate of {k})." + other,
        "train_eval/coverage": periodic + "share of the catalogue recommended." + other,
        "train_eval/diversity": periodic + f"mean intra-list diversity of the slates of {k}." + other,
    }


def scalar_summary(tag: str, value: float, description: str | None = None) -> Any:
    """A TensorBoard ``Summary`` of one scalar, with ``description`` in its metadata where given
    (TensorBoard shows it beside the chart; the first point of a tag in a file carries it)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.scalar.metadata import create_summary_metadata

    value_proto = Summary.Value(tag=tag, simple_value=float(value))
    if description:
        value_proto.metadata.CopyFrom(create_summary_metadata(display_name=tag, description=description))
    return Summary(value=[value_proto])


def write_event_file(path: str | Path, step: int, scalars: dict[str, float],
                     descriptions: dict[str, str] | None = None, keep: bool = True) -> Path:
    """Write ``scalars`` at ``step`` into the event file ``path`` (a fixed name, atomically), replacing
    what it held for those tags: writing the same figures twice leaves one point per tag, not two.
    With ``keep``, the file's other tags stay (with their descriptions)."""
    import time

    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    path = Path(path)
    values: dict[str, Any] = {}
    if keep and path.is_file():
        for event in LegacyEventFileLoader(str(path)).Load():  # as written: no migration
            for value in event.summary.value:
                if value.tag not in scalars and event.step == step:
                    values[value.tag] = value
    for tag, number in scalars.items():
        values[tag] = scalar_summary(tag, number, (descriptions or {}).get(tag)).value[0]
    wall_time = time.time()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            records = RecordWriter(handle)
            records.write(Event(wall_time=wall_time, file_version="brain.Event:2").SerializeToString())
            for tag in sorted(values):
                event = Event(wall_time=wall_time, step=int(step), summary=Summary(value=[values[tag]]))
                records.write(event.SerializeToString())

    return atomic_write(path, write)


class TensorBoardLogger:
    """A :class:`recarena.agents.base.ScalarLogger` that writes TensorBoard event files into ``log_dir``.

    ``listeners`` are called with every ``(tag, value, step)`` (train.py uses one to feed the
    progress bar); ``descriptions`` (tag -> text, e.g. :func:`tag_descriptions`) go into the metadata of
    each tag's first point. Events of a resumed run are appended to new files in the same directory;
    TensorBoard merges them.
    """

    def __init__(self, log_dir: str | Path, listeners: list[Callable[[str, float, int], None]] | None = None,
                 descriptions: dict[str, str] | None = None):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.listeners = list(listeners or [])
        self.descriptions = dict(descriptions or {})
        self.last: dict[str, float] = {}

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        value = float(value)
        description = self.descriptions.pop(tag, None)  # once per tag and file is enough
        if description is None:
            self.writer.add_scalar(tag, value, int(step))
        else:
            self.writer._get_file_writer().add_summary(scalar_summary(tag, value, description), int(step))
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


def read_descriptions(log_dir: str | Path) -> dict[str, str]:
    """The description of every scalar tag that has one in the event files under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result: dict[str, str] = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents*")):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
        accumulator.Reload()
        for tag, metadata in accumulator.summary_metadata.items():
            if metadata.summary_description:
                result[tag] = metadata.summary_description
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
