"""Train a recommendation agent on simulated users and watch it in TensorBoard.

    python train.py --config configs/quickstart.yaml
    python train.py --config configs/dqn_ml1m.yaml --set agent.config.learning_rate=3e-4 --total-steps 200000
    python train.py --resume runs/<run>            # continue a killed or finished run
    .venv/bin/tensorboard --logdir runs            # (the end of training prints the full command)

Training runs in chunks of ``train.checkpoint_every`` user-steps; after each chunk the agent is
evaluated on held-out simulated sessions (every ``train.eval_every`` steps) and the whole training
state (agent, optimiser, replay buffer, env users mid-session, random generators) is checkpointed
atomically, so a run killed at any moment resumes from its last checkpoint and, on CPU, ends with
the same weights as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import os
import random
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recarena.agents.base import TrainableAgent
from recarena.cli.help import HelpFormatter
from recarena.core.checkpoint import check_identity, flatten_state, unflatten_state, write_checkpoint
from recarena.core.config import to_dict
from recarena.core.errors import CheckpointError, ConfigError, RecarenaError, describe_os_error
from recarena.core.seeding import configure_torch_threads, resolve_device, seed_everything
from recarena.data.spec import data_argument
from recarena.training.config import RunConfig, load_run_config, run_config_from_dict
from recarena.training.run import ResumePoint, RunDirectory, default_run_name, run_metadata
from recarena.training.tensorboard import TensorBoardLogger, tag_descriptions

EVAL_SEED_OFFSET = 1_000_003
"""Evaluation sessions are drawn with ``seed + EVAL_SEED_OFFSET``: fixed, and apart from training's."""

EVAL_NAMESPACE = "train_eval"
"""TensorBoard namespace of the periodic evaluation (``train_eval/episodic_return``...): not ``eval/``,
which holds evaluate.py's figures (other users, another slate size)."""


# ------------------------------------------------------------------------------------------ pieces


def build_env(config: RunConfig, device: str) -> Any:
    """The training vector env of ``config.env.num_envs`` simulated users.

    Its options are checked first, before any data is loaded, with errors naming the run config's
    keys (``env.max_steps``, ``simulator.config.choice``), not the env's keyword arguments."""
    from recarena.envs.common import check_options
    from recarena.envs.vector_env import RecommendationVectorEnv

    kwargs = config.env.env_kwargs(config.data, config.simulator, device)
    check_options(kwargs, prefix="env.", simulator_prefix="simulator.config.")
    return RecommendationVectorEnv(num_envs=config.env.num_envs, **kwargs)


def build_agent(config: RunConfig, env: Any, device: str) -> TrainableAgent:
    """The registered agent ``config.agent.name``, given the context its constructor asks for."""
    from recarena.agents.registry import agent_class, make_agent

    cls = agent_class(config.agent.name)
    if not issubclass(cls, TrainableAgent):
        raise ConfigError(
            f"agent.name: '{config.agent.name}' does not learn by interaction; train one of the "
            f"trainable agents or evaluate it directly with evaluate.py"
        )
    context = {
        "env": env,
        "seed": config.train.seed,
        "device": device,
        "total_steps": config.train.total_steps,
        "log_every": config.train.log_every,
    }
    accepted = inspect.signature(cls.__init__).parameters
    if "log_every" not in accepted:
        raise ConfigError(f"agent '{config.agent.name}' takes no log_every: it cannot honour train.log_every")
    context = {key: value for key, value in context.items() if key in accepted}
    agent = make_agent(config.agent.name, env.n_items, config.agent.config, **context)
    assert isinstance(agent, TrainableAgent)
    return agent


@contextlib.contextmanager
def isolated_global_rng() -> Iterator[None]:
    """Run a block without disturbing the global torch/NumPy/Python generators training draws from."""
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def evaluate(agent: Any, env: Any, config: RunConfig) -> dict[str, float]:
    """Held-out simulated return: fixed-seed sessions the agent never trained on, greedy actions."""
    from recarena.evaluation.simulated import evaluate_simulated

    with isolated_global_rng():
        result = evaluate_simulated(
            agent,
            env.simulator,
            n_sessions=config.train.eval_sessions,
            k=config.env.slate_size,
            max_steps=config.env.max_steps,
            seed=config.train.seed + EVAL_SEED_OFFSET,
            n_bootstrap=200,
        )
    values = {}
    for name, value in result.metrics.items():
        base = name.split("@")[0].lower()
        values[{"ild": "diversity"}.get(base, base)] = float(value)
    return values


def run_identity(config: RunConfig, env: Any, simulator_record: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed into this run."""
    return {
        "agent": config.agent.name,
        "n_items": int(env.n_items),
        "num_envs": int(env.num_envs),
        "simulator": simulator_record.get("name"),
        "data_fingerprint": simulator_record.get("data_fingerprint"),
        "item_set_fingerprint": simulator_record.get("item_set_fingerprint"),
    }


def save_checkpoint(run: RunDirectory, agent: TrainableAgent, env: Any, identity: dict[str, Any],
                    progress: dict[str, Any], keep: int) -> Path:
    """Checkpoint agent + env + loop progress (one atomic directory)."""
    agent_tensors, agent_metadata = agent.checkpoint_state()
    tensors = {f"agent/{k}": v for k, v in agent_tensors.items()}
    env_metadata = None
    if hasattr(env, "get_state") and not getattr(env, "_needs_reset", False):
        env_tensors, env_metadata = flatten_state(env.get_state())
        tensors.update({f"env/{k}": v for k, v in env_tensors.items()})
    metadata = {"identity": identity, "progress": progress, "agent": agent_metadata, "env": env_metadata}
    return write_checkpoint(run.checkpoints, progress["steps_done"], tensors, metadata, keep=keep)


def checkpoint_progress(point: ResumePoint) -> dict[str, Any]:
    """The loop progress a train.py checkpoint records (refuses other checkpoints)."""
    for key in ("identity", "progress", "agent", "env"):
        if key not in point.metadata:
            raise CheckpointError(f"{point.path}: metadata lacks '{key}'; not a train.py checkpoint")
    progress = point.metadata["progress"]
    if not isinstance(progress, dict) or not isinstance(progress.get("steps_done"), int):
        raise CheckpointError(f"{point.path}: metadata.json: progress.steps_done is not a step count")
    return dict(progress)


def restore_checkpoint(point: ResumePoint, agent: TrainableAgent, env: Any, identity: dict[str, Any]) -> dict[str, Any]:
    """Restore the checkpoint ``point`` into ``agent`` and ``env``; returns the loop progress."""
    progress = checkpoint_progress(point)
    tensors, metadata = point.tensors, point.metadata
    check_identity(identity, metadata["identity"], point.path)
    agent.restore_checkpoint_state(
        {k[len("agent/"):]: v for k, v in tensors.items() if k.startswith("agent/")}, metadata["agent"]
    )
    if metadata["env"] is not None:
        env_tensors = {k[len("env/"):]: v for k, v in tensors.items() if k.startswith("env/")}
        env.set_state(unflatten_state(env_tensors, metadata["env"]))
    if agent.steps_done != progress["steps_done"]:  # one counter: the loop records the agent's steps_done
        raise CheckpointError(f"{point.path}: the checkpoint records {progress['steps_done']} steps done, its agent "
                              f"state {agent.steps_done}; the two must agree (resume from another checkpoint)")
    return progress


def chunk_target(steps_done: int, checkpoint_every: int, total_steps: int) -> int:
    """Where the chunk that starts at ``steps_done`` ends: the next multiple of ``checkpoint_every``, at
    most ``total_steps``. Targets are absolute, so an agent that overshoots a target (PPO trains in
    whole rollouts) does not shift the later ones, and ``checkpoint_every`` does not change what is learned."""
    return min((steps_done // checkpoint_every + 1) * checkpoint_every, total_steps)


PROGRESS_LEGEND = """\
progress bar: "train (slate K, N users)" counts user-steps (one step of N simulated users is N
user-steps) and their rate; K is env.slate_size, N env.num_envs. Its two figures:
  return             mean return of the training sessions that ended since the last log point
                     (the exploring policy; TensorBoard charts/episodic_return)
  eval(S sessions)   the greedy policy's mean return over S = train.eval_sessions fixed-seed sessions
                     the training simulator draws, slate K, at most env.max_steps steps each
                     (TensorBoard train_eval/episodic_return, every train.eval_every steps)
evaluate.py's "sim return" is another figure: held-out users from their whole training history,
slate --k (default 10)."""
"""What the progress bar shows (``train.py --help`` prints it)."""


class ProgressBar:
    """tqdm bar over user-steps with the live training return and the periodic evaluation's return
    (:data:`PROGRESS_LEGEND`); the slate size and the numbers of users and sessions are on the bar."""

    def __init__(self, total: int, initial: int, enabled: bool, config: RunConfig | None = None) -> None:
        self.bar = None
        env, train_cfg = (config.env, config.train) if config is not None else (None, None)
        self.eval_field = f"eval({train_cfg.eval_sessions} sessions)" if train_cfg is not None else "eval"
        if enabled:
            from tqdm import tqdm

            description = f"train (slate {env.slate_size}, {env.num_envs} users)" if env is not None else "train"
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1,
                            desc=description)
        self.postfix: dict[str, str] = {}

    def listener(self, tag: str, value: float, step: int) -> None:
        if self.bar is None:
            return
        names = {"charts/episodic_return": "return", f"{EVAL_NAMESPACE}/episodic_return": self.eval_field}
        if tag in names:
            self.postfix[names[tag]] = f"{value:.3g}"
            order = list(names.values())
            self.bar.set_postfix(sorted(self.postfix.items(), key=lambda item: order.index(item[0])), refresh=False)
        self.update(step)

    def update(self, step: int) -> None:
        if self.bar is not None and step > self.bar.n:
            self.bar.update(min(step, self.bar.total) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------ the loop


def train(
    config: RunConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress_bar: bool = True,
    listeners: list[Callable[[str, float, int], None]] | None = None,
    checkpoint: str | None = None,
) -> RunDirectory:
    """Train ``config`` into ``run_dir`` (a new directory, or an existing one with ``resume=True``,
    continued from ``checkpoint`` if given, else as :meth:`RunDirectory.resume_point` chooses)."""
    train_cfg = config.train
    configure_torch_threads(train_cfg.torch_threads)
    seed_everything(train_cfg.seed)
    device = str(resolve_device(train_cfg.device))
    point = None
    if resume:  # the run and its checkpoint first: refuse before any data is loaded
        run = RunDirectory.open(run_dir)  # type: ignore[arg-type]
        point = run.resume_point(checkpoint)
        if point is not None and point.notice:
            print(f"train.py: warning: {point.notice}", file=sys.stderr)
        recorded = checkpoint_progress(point) if point is not None else {"steps_done": 0}
        check_total_steps(run, config, recorded["steps_done"], recorded.get("step_unit"))
        if point is not None and finished_run(run, config, recorded["steps_done"]):
            print(f"train.py: {run.path} has trained {recorded['steps_done']} user-steps (train.total_steps "
                  f"{train_cfg.total_steps}) and saved its agent: nothing to do; give --total-steps above "
                  f"{recorded['steps_done']} to train on", file=sys.stderr)
            return run
    env = build_env(config, device)
    agent = build_agent(config, env, device)
    unit = agent.step_unit(env.num_envs)
    config = whole_units(config, unit, config.agent.name)
    train_cfg = config.train

    from recarena.training.run import simulator_fingerprints

    simulator_record = simulator_fingerprints(env.simulator)
    identity = run_identity(config, env, simulator_record)
    if resume:
        recorded = run.read_metadata().get("simulator", {})
        for key in ("data_fingerprint", "item_set_fingerprint"):
            if recorded.get(key) != simulator_record.get(key):
                raise CheckpointError(
                    f"{run.path}: {key} is {recorded.get(key)!r} in the run, {simulator_record.get(key)!r} "
                    f"for the data loaded now; the run's data has changed"
                )
        if point is not None:
            progress = restore_checkpoint(point, agent, env, identity)
        else:
            print(f"train.py: warning: {run.path} has no checkpoint yet; training starts from step 0", file=sys.stderr)
            progress = {"steps_done": 0, "last_eval": -1}
        run.pin_simulator_version()  # a run from before the pin: its version, read from config.yaml before the rewrite
        run.write_config(config)  # --total-steps and other train.* changes made on resume
    else:
        if run_dir is None:
            data_name = config.data.name if config.data.path is not None else None
            run_dir = Path(train_cfg.runs_root) / default_run_name(config.agent.name, data_name, train_cfg.seed)
        metadata = run_metadata(env.simulator, {"device": device}, history_length=env.history_length)
        run = RunDirectory.create(run_dir, config, metadata)
        progress = {"steps_done": 0, "last_eval": -1}
    progress["step_unit"] = unit  # lets a resume round a new --total-steps as this run does
    if progress["steps_done"] >= train_cfg.total_steps and progress["last_eval"] >= 0:
        run.save_agent(agent, progress["steps_done"])  # trained to the end but killed before the agent was saved
        return run

    bar = ProgressBar(train_cfg.total_steps, progress["steps_done"], progress_bar, config)
    logger = TensorBoardLogger(run.tensorboard, listeners=[bar.listener, *(listeners or [])],
                               descriptions=tag_descriptions(config))
    try:
        if progress["steps_done"] == 0 and progress["last_eval"] < 0:
            logger.log_hyperparameters(to_dict(config))
            _log_eval(run, logger, evaluate(agent, env, config), 0)
            progress["last_eval"] = 0
        while progress["steps_done"] < train_cfg.total_steps:
            target = chunk_target(progress["steps_done"], train_cfg.checkpoint_every, train_cfg.total_steps)
            agent.learn(env, target - progress["steps_done"], logger)
            done = agent.steps_done
            if done < target:
                raise RuntimeError(f"{type(agent).__name__}.learn stopped at step {done}, before {target}")
            progress["steps_done"] = done
            finished = progress["steps_done"] >= train_cfg.total_steps
            due = train_cfg.eval_every > 0 and progress["steps_done"] - progress["last_eval"] >= train_cfg.eval_every
            if due or finished:
                _log_eval(run, logger, evaluate(agent, env, config), progress["steps_done"])
                progress["last_eval"] = progress["steps_done"]
            logger.flush()
            save_checkpoint(run, agent, env, identity, progress, train_cfg.keep_checkpoints)
            bar.update(progress["steps_done"])
        run.save_agent(agent, progress["steps_done"])
    finally:
        logger.close()
        bar.close()
    return run


def round_up(steps: int, unit: int) -> int:
    """``steps`` rounded up to a whole number of ``unit``."""
    return -(-steps // unit) * unit


def whole_units(config: RunConfig, unit: int, agent_name: str) -> RunConfig:
    """``config`` with ``train.total_steps`` rounded up to the agent's unit (:meth:`TrainableAgent.step_unit`:
    a vector step, or a whole rollout), saying so when that changes it: the agent trains in whole units,
    so the run ends there and its logs (``charts/*``...) reach that step; config.yaml records it."""
    total = config.train.total_steps
    rounded = round_up(total, unit)
    if rounded == total:
        return config
    print(f"train.py: note: {agent_name} trains in units of {unit} user-steps, so train.total_steps {total} "
          f"rounds up to {rounded}; training to {rounded}", file=sys.stderr)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, total_steps=rounded))


def finished_run(run: RunDirectory, config: RunConfig, steps_done: int) -> bool:
    """True when the run has trained ``train.total_steps`` and saved its agent at that step: a resume
    has nothing to do."""
    return (steps_done >= config.train.total_steps and run.read_metadata().get("agent_step") == steps_done
            and (run.agent / "agent.json").is_file())


def check_total_steps(run: RunDirectory, config: RunConfig, steps_done: int, unit: int | None = None) -> None:
    """Refuse a ``train.total_steps`` changed on resume to below the steps the run has trained
    (``config.yaml`` is left as it was). An unchanged one is fine: the run is finished; so is one that
    rounds up (to the run's ``unit``) to the steps trained."""
    recorded = run.read_config().get("train", {})
    recorded_total = recorded.get("total_steps") if isinstance(recorded, dict) else None
    requested = config.train.total_steps
    if round_up(requested, unit or 1) < steps_done and requested != recorded_total:
        raise ConfigError(
            f"--total-steps {requested} is below the {steps_done} steps {run.path} has already trained; "
            f"give at least {steps_done} to train on (or {recorded_total} as recorded), or start a new run"
        )


def _log_eval(run: RunDirectory, logger: TensorBoardLogger, values: dict[str, float], step: int) -> None:
    for name, value in values.items():
        logger.log_scalar(f"{EVAL_NAMESPACE}/{name}", value, step)
    run.write_eval({"step": step, **values})


# ------------------------------------------------------------------------------------------ CLI


def parse_args(argv: list[str] | None = None, prog: str = "train.py") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
        epilog=PROGRESS_LEGEND + "\n\nAt the end, train.py prints the run directory and the TensorBoard command for it.",
    )
    parser.add_argument("--config", type=Path, help="YAML run config (configs/<agent>_<data>.yaml)")
    parser.add_argument("--data", metavar="SPEC",
                        help="the logs to train on, replacing the config's data section: a bundled name (ml-100k, "
                             "ml-1m), a log file or folder, a YAML/JSON data spec file, or an inline mapping "
                             "'{path: events.csv, columns: {user: uid, item: sku, timestamp: ts}}' (README: Your own logs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set agent.config.learning_rate=3e-4 (repeatable)")
    parser.add_argument("--total-steps", type=int,
                        help="user-steps to train for, rounded up to the agent's unit (default: the config's train.total_steps)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="(default: the config's train.device)")
    parser.add_argument("--seed", type=int, help="(default: the config's train.seed)")
    parser.add_argument("--run-dir", type=Path, help="run directory (default runs/<agent>_<data>_s<seed>_<time>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--checkpoint", metavar="NAME",
                        help="with --resume: continue from this checkpoint (checkpoints/step_<N>) instead of the "
                             "latest, e.g. the intact one an error names when the latest is corrupt")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def _cli_overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    if args.total_steps is not None:
        overrides.append(f"train.total_steps={args.total_steps}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    return overrides


_RESUMABLE_OVERRIDES = ("train.total_steps", "train.device", "train.eval_every", "train.eval_sessions",
                        "train.log_every", "train.keep_checkpoints", "train.torch_threads")


def resolve(args: argparse.Namespace) -> tuple[RunConfig, Path | None, bool]:
    """(config, run directory, resuming?) from the command line."""
    overrides = _cli_overrides(args)
    if args.checkpoint is not None and args.resume is None:
        raise ConfigError("--checkpoint picks the checkpoint of a run to continue: give it with --resume RUN_DIR")
    if args.resume is not None:
        if args.config is not None or args.run_dir is not None or args.data is not None:
            raise ConfigError("--resume takes the config, data and directory of the run; drop --config/--data/--run-dir")
        fixed = [o for o in overrides if o.split("=", 1)[0].strip() not in _RESUMABLE_OVERRIDES]
        if fixed:
            raise ConfigError(
                f"cannot change {[o.split('=', 1)[0] for o in fixed]} when resuming (it would not be the same run); "
                f"changeable: {list(_RESUMABLE_OVERRIDES)}"
            )
        run = RunDirectory.open(args.resume)
        config = run_config_from_dict(run.config_data(overrides))  # an older run's agent keys read as the new ones
        return config, args.resume, True
    if args.config is None:
        raise ConfigError("give --config FILE (see configs/) or --resume RUN_DIR")
    data = data_argument(args.data) if args.data is not None else None
    return load_run_config(args.config, overrides, data=data), args.run_dir, False


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    args = parse_args(argv, prog)
    try:
        config, run_dir, resuming = resolve(args)
        run = train(config, run_dir, resume=resuming, progress_bar=not args.no_progress, checkpoint=args.checkpoint)
    except RecarenaError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a read-only run directory...: what was written before is intact
        print(f"{prog}: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    print(f"run directory: {run.path}\nwatch it in TensorBoard:\n  {tensorboard_command(run.path.parent)}")
    return 0


def tensorboard_command(logdir: Path) -> str:
    """The command that starts this environment's TensorBoard on ``logdir``: the full path of the
    ``tensorboard`` script beside this Python (a venv's bin/ need not be on PATH), else ``python -m``."""
    script = Path(sys.executable).parent / ("tensorboard.exe" if os.name == "nt" else "tensorboard")
    command = [str(script)] if script.is_file() and os.access(script, os.X_OK) else [sys.executable, "-m", "tensorboard.main"]
    return shlex.join([*command, "--logdir", str(logdir)])


if __name__ == "__main__":
    sys.exit(main())
