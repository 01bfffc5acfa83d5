"""Run a sweep of training runs (configurations x seeds) on Ray Tune and tabulate it.

    recarena sweep configs/sweeps/qlearning_ml1m.yaml --out sweeps/qlearning_ml1m
    recarena sweep SPEC --address ray://head:10001      # on a Ray cluster instead of local Ray

Each trial is a normal train.py run in its own run directory (SWEEP_DIR/runs/<config>_s<seed>), then
scored by evaluate.py's code on the spec's measures. A trial that dies is retried (``max_failures``)
and continues from its run's last checkpoint (train.py's resume). Running the same command again on
the same --out continues an interrupted sweep. At the end SWEEP_DIR holds results.md, results.json
and results.png: each configuration's mean and 95% interval over seeds, and the best configuration by
the spec's selection metric (never a test-event measure). ``evaluate.py SWEEP_DIR`` scores the best
configuration's runs against baselines. Needs the ``ray`` extra: pip install 'recarena[ray]'.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from recarena.core.config import to_dict
from recarena.core.errors import ConfigError, RecarenaError, describe_os_error
from recarena.core.io import atomic_write_json
from recarena.evaluation import sweep_report
from recarena.evaluation.sweep_report import RUNS_DIR, SWEEP_FILE, TRIALS_DIR
from recarena.training.sweep_spec import SweepSpec, Trial, expand, load_sweep_spec

INSTALL_HINT = ("recarena sweep needs Ray Tune, which is not installed: pip install 'recarena[ray]' "
                "(or pip install 'ray[tune]==2.60.0')")
KILL_ENV = "RECARENA_SWEEP_KILL_TRIAL"
"""Test hook: the trial of this name kills its own worker (SIGKILL) once, after its first checkpoint."""
PASSED_ENV = ("RECARENA_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SB3_LOGDIR")
"""Environment variables of the driver that every trial gets (Ray workers do not inherit later changes)."""


def _log(message: str) -> None:
    print(f"[sweep] {message}", file=sys.stderr, flush=True)


def require_ray() -> Any:
    """``ray`` with Tune, or a one-line :class:`ConfigError` saying how to install the extra."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's older reporter honours verbose=0 (quiet)
    try:
        import ray
        import ray.tune  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start a quiet local Ray (no dashboard, workers' output kept in their log files, state in a temp dir)."""
    ray = require_ray()
    # Ray starts workers 15 niceness steps below the driver; trials are the work, so they keep its priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    temp_dir = tempfile.mkdtemp(prefix="recarena-ray-")  # short: Ray's socket paths must stay < 108 chars
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=256 * 2**20, _temp_dir=temp_dir)
    _RAY_TEMP_DIRS.append(temp_dir)


_RAY_TEMP_DIRS: list[str] = []


def stop_ray() -> None:
    """Shut Ray down and remove the temp dirs :func:`start_local_ray` made."""
    import ray

    ray.shutdown()
    while _RAY_TEMP_DIRS:
        shutil.rmtree(_RAY_TEMP_DIRS.pop(), ignore_errors=True)


# ------------------------------------------------------------------------------------------ a trial


def run_trial(tune_config: dict[str, Any]) -> None:
    """Ray Tune's function trainable: train one trial's run (resuming it if it exists), score it, report.

    Reports ``step`` and ``episodic_return`` (train.py's held-out simulated return) at every periodic
    evaluation, for ASHA, and the spec's measures at the end. The trial's record
    (SWEEP_DIR/trials/<name>.json) lists its attempts and where each started."""
    from ray import tune

    from recarena.cli.train import train
    from recarena.core.checkpoint import latest_checkpoint
    from recarena.training.config import run_config_from_dict
    from recarena.training.run import RunDirectory

    trial = tune_config["trial"]
    os.environ.update(trial["env"])
    if os.path.isdir(trial["cwd"]):
        os.chdir(trial["cwd"])  # relative data paths mean what they meant to the driver
    sweep_dir = Path(trial["sweep_dir"])
    run_dir = sweep_dir / RUNS_DIR / trial["name"]
    record_path = sweep_dir / TRIALS_DIR / f"{trial['name']}.json"
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    if record.get("status") == "done":  # scored already (a sweep continued after its driver stopped)
        tune.report({"step": record["step"], "episodic_return": record["measures"].get("train_eval/episodic_return"),
                     **record["measures"]})
        return
    config = run_config_from_dict(trial["config"])
    resume = (run_dir / "config.yaml").is_file()
    point = RunDirectory(run_dir).resume_point() if resume else None
    record.setdefault("attempts", []).append({"pid": os.getpid(), "resumed": resume,
                                              "start_step": point.step if point is not None else 0,
                                              "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    record.update(name=trial["name"], status="running", run_dir=f"{RUNS_DIR}/{trial['name']}")
    atomic_write_json(record_path, record)

    def listener(tag: str, value: float, step: int) -> None:
        if tag != "train_eval/episodic_return":
            return
        if step < config.train.total_steps:  # the final figures come with the scores (ASHA would stop it here)
            tune.report({"step": step, "episodic_return": value})
        if trial.get("kill_after_checkpoint") and not record.get("killed") and latest_checkpoint(run_dir / "checkpoints"):
            record["killed"] = step
            atomic_write_json(record_path, record)
            os.kill(os.getpid(), signal.SIGKILL)

    train(config, run_dir, resume=resume, progress_bar=False, listeners=[listener])
    measures = score_run(run_dir, sweep_dir / "evaluations" / trial["name"], trial["measures"], trial["evaluation"])
    step = RunDirectory(run_dir).record().final_step
    record.update(status="done", step=step, measures=measures)
    atomic_write_json(record_path, record)
    tune.report({"step": step, "episodic_return": measures.get("train_eval/episodic_return"), **measures})


def score_run(run_dir: Path, out: Path, measures: list[str], evaluation: dict[str, Any]) -> dict[str, float | None]:
    """The measures of one finished run: evaluate.py (its own code, in this process) for ranking/ and
    simulated/ measures, the run's final held-out evaluation (eval.json) for train_eval/ ones."""
    from recarena.cli import evaluate
    from recarena.evaluation.report import metric_value
    from recarena.training.run import RunDirectory

    values: dict[str, float | None] = {}
    final_eval = RunDirectory(run_dir).read_eval() or {}
    for measure in measures:
        if measure.startswith("train_eval/"):
            value = final_eval.get(measure.split("/", 1)[1])
            values[measure] = None if value is None else float(value)
    scored = [m for m in measures if m.startswith(("ranking/", "simulated/"))]
    if not scored:
        return values
    protocols = sorted({m.split("/")[0] for m in scored})
    splits = sorted({m.split("/")[1] for m in scored if m.startswith("ranking/")})
    argv = [str(run_dir), "--out", str(out), "--protocols", ",".join(protocols), "--k", str(evaluation["k"]),
            "--sim-users", str(evaluation["sim_users"]), "--bootstrap", str(evaluation["bootstrap"]),
            "--seed", str(evaluation["seed"]), "--ope-validation-events", "0", "--device", evaluation["device"]]
    argv += ["--splits", ",".join(splits)] if splits else []
    argv += ["--sim-steps", str(evaluation["sim_steps"])] if evaluation.get("sim_steps") else []
    argv += ["--max-users", str(evaluation["max_users"])] if evaluation.get("max_users") else []
    results = evaluate.run(evaluate.build_parser().parse_args(argv))
    candidate = results["candidates"][run_dir.name]
    for measure in scored:
        path, metric = measure.rsplit("/", 1)
        value, _ = metric_value(candidate, path, metric)
        values[measure] = None if value is None else float(value)
    return values


# ------------------------------------------------------------------------------------------ the sweep


def _trial_payloads(spec: SweepSpec, trials: list[Trial], sweep_dir: Path) -> list[dict[str, Any]]:
    kill = os.environ.get(KILL_ENV)
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    env["RECARENA_TORCH_THREADS"] = str(spec.resources.cpu)  # evaluate.py's torch threads too
    evaluation = {**to_dict(spec.evaluation), "device": "auto" if spec.resources.gpu > 0 else "cpu"}
    return [{"name": t.name, "config_id": t.config_id, "seed": t.seed, "config": t.config,
             "sweep_dir": str(sweep_dir), "cwd": os.getcwd(), "env": env, "evaluation": evaluation,
             "measures": list(dict.fromkeys([spec.select, *spec.measures])),
             "kill_after_checkpoint": t.name == kill} for t in trials]


def _prepare_directory(sweep_dir: Path, sweep: dict[str, Any]) -> None:
    """Write sweep.json, or check that an existing sweep directory holds this same sweep (to continue it)."""
    path = sweep_dir / SWEEP_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("trials") != sweep["trials"]:
            raise ConfigError(f"{sweep_dir}: holds another sweep (its {SWEEP_FILE} lists other trials); "
                              f"give another --out, or the spec that made it to continue it")
        return
    if sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise ConfigError(f"{sweep_dir}: exists and is not a sweep directory; give another --out")
    atomic_write_json(path, sweep)


class _Progress:
    """Tune callback printing one line per trial event (Tune's own reporter is kept quiet)."""

    def __init__(self, total: int, measures: list[str], done: int = 0) -> None:
        self.total, self.measures, self.done = total, measures, done

    def make(self) -> Any:
        from ray import tune

        progress = self

        class Callback(tune.Callback):
            def on_trial_start(self, iteration, trials, trial, **info):  # noqa: ANN001
                _log(f"{trial}: started")

            def on_trial_recover(self, iteration, trials, trial, **info):  # noqa: ANN001
                _log(f"{trial}: died ({_last_line(trial)}); retrying from its run's last checkpoint")

            def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
                progress.done += 1
                shown = ", ".join(f"{m} {trial.last_result[m]:.4g}" for m in progress.measures
                                  if isinstance(trial.last_result.get(m), (int, float)))
                what = f"finished: {shown}" if shown else f"stopped early at step {trial.last_result.get('step')}"
                _log(f"{trial}: {what} ({progress.done}/{progress.total})")

            def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
                progress.done += 1
                _log(f"{trial}: failed for good ({progress.done}/{progress.total}): {_last_line(trial)}")

        return Callback()


def _last_line(trial: Any) -> str:
    """The last line of a Tune trial's error file (the exception), or a placeholder."""
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return "no error file"
    return lines[-1][:300] if lines else "no message"


def sweep(spec_path: str | Path, out: str | Path | None = None, address: str | None = None,
          max_concurrent: int | None = None) -> dict[str, Any]:
    """Run (or continue) the sweep in ``spec_path`` into ``out`` (default ``sweeps/<spec name>``) and
    return its results (``results.json``'s content). Uses a Ray that is already initialised, else starts
    a local one (``address``: connects to that cluster instead) and shuts it down at the end."""
    started = time.perf_counter()
    spec_path = Path(spec_path)
    spec, base = load_sweep_spec(spec_path)
    trials = expand(spec, base, where=str(spec_path))  # every config validated before Ray is imported
    ray = require_ray()
    sweep_dir = Path(out if out is not None else Path("sweeps") / spec_path.stem).absolute()
    sweep = {"spec_file": str(spec_path), "base": str(base), "spec": to_dict(spec),
             "trials": [{"name": t.name, "config_id": t.config_id, "seed": t.seed, "overrides": t.overrides,
                         "config": t.config} for t in trials]}
    _prepare_directory(sweep_dir, sweep)
    records = sweep_report.read_records(sweep_dir)
    pending = [t for t in trials if records.get(t.name, {}).get("status") != "done"]
    errored: set[str] = set()
    _log(f"{len(trials)} trials ({len(trials) // len(spec.seeds)} configurations x {len(spec.seeds)} seeds), "
         f"{len(trials) - len(pending)} done already; sweep directory {sweep_dir}")
    if pending:
        prepare_simulators(pending)
        own_ray = not ray.is_initialized()
        if own_ray and address is None:
            start_local_ray()
        elif own_ray:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        try:
            errored = _fit(spec, trials, sweep_dir, max_concurrent, done=len(trials) - len(pending))
        finally:
            if own_ray:
                stop_ray()
    records = sweep_report.read_records(sweep_dir)
    for name, record in records.items():
        if record.get("status") == "running":  # failed for good, stopped by ASHA, or the sweep was interrupted
            record["status"] = ("failed" if name in errored else
                                "stopped early" if spec.early_stopping is not None else "interrupted")
            atomic_write_json(sweep_dir / TRIALS_DIR / f"{name}.json", record)
    results = sweep_report.summarize(sweep, records)
    minutes = (time.perf_counter() - started) / 60
    notes = [f"Wall time of the last `recarena sweep` invocation on this directory: {minutes:.1f} min."]
    paths = sweep_report.write_results(sweep_dir, results, notes)
    _log(f"best configuration by {spec.select}: {results['best']}; table {paths['md']} ({minutes:.1f} min)")
    return {**results, "notes": notes}


def prepare_simulators(trials: list[Trial]) -> None:
    """Build each distinct training simulator of ``trials`` once in this process, so its one-time work
    (item encodings, preference and choice model fits, cached in $RECARENA_CACHE) is done once here
    rather than by every trial that starts at the same time. On a cluster it warms this machine's cache only."""
    from recarena.envs.common import build_simulator, clear_simulator_cache, parse_options
    from recarena.training.config import run_config_from_dict

    seen = set()
    for trial in trials:
        config = run_config_from_dict(trial.config)
        kwargs = config.env.env_kwargs(config.data, config.simulator, "cpu")
        key = json.dumps([kwargs["simulator"], kwargs["data"], kwargs["simulator_config"]], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            _log(f"preparing the simulator of {trial.name} (one-time fits are cached for every trial)")
            build_simulator(parse_options(**kwargs))
    clear_simulator_cache()


def _fit(spec: SweepSpec, trials: list[Trial], sweep_dir: Path, max_concurrent: int | None, done: int = 0) -> set[str]:
    """Run the trials on Ray Tune (continuing the Tune experiment in SWEEP_DIR/tune if there is one);
    returns the names of the trials that failed for good."""
    import ray
    from ray import tune

    available = ray.cluster_resources()
    for name, need in (("CPU", spec.resources.cpu), ("GPU", spec.resources.gpu)):
        if need > available.get(name, 0):
            raise ConfigError(f"resources.{name.lower()}: a trial needs {need} {name}s, the Ray cluster has "
                              f"{available.get(name, 0):g}")
    trainable = tune.with_resources(run_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    param_space = {"trial": tune.grid_search(_trial_payloads(spec, trials, sweep_dir))}
    scheduler = None
    if spec.early_stopping is not None:
        from ray.tune.schedulers import ASHAScheduler

        max_t = max(t.config["train"]["total_steps"] for t in trials)
        scheduler = ASHAScheduler(time_attr="step", metric="episodic_return", mode="max", max_t=max_t,
                                  grace_period=min(spec.early_stopping.grace_steps, max_t),
                                  reduction_factor=spec.early_stopping.reduction_factor)
    measures = list(dict.fromkeys([spec.select, *spec.measures]))
    experiment = sweep_dir / "tune"
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # failures are reported by _Progress, one line each
    if tune.Tuner.can_restore(experiment):
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True, param_space=param_space)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                scheduler=scheduler, max_concurrent_trials=max_concurrent or spec.max_concurrent,
                trial_name_creator=lambda trial: trial.config["trial"]["name"],
                trial_dirname_creator=lambda trial: trial.config["trial"]["name"],
            ),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(sweep_dir), verbose=0,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                callbacks=[_Progress(len(trials), measures, done).make()],
            ),
        )
    return {Path(result.path).name for result in tuner.fit() if result.error is not None}


# ------------------------------------------------------------------------------------------ CLI


def build_parser(prog: str = "recarena sweep") -> argparse.ArgumentParser:
    from recarena.cli.help import HelpFormatter

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("spec", type=Path, metavar="SPEC", help="the sweep spec (YAML; see configs/sweeps/ and docs/sweeps.md)")
    parser.add_argument("--out", type=Path, help="the sweep directory (default sweeps/<spec name>); an existing one "
                                                 "of the same sweep is continued")
    parser.add_argument("--address", help="a Ray cluster to run on (e.g. auto or ray://head:10001); default: local "
                                          "Ray on this machine, trials packed onto its cores")
    parser.add_argument("--max-concurrent", type=int, metavar="N", help="trials at once (default: the spec's "
                                                                        "max_concurrent, else as resources allow)")
    return parser


def main(argv: list[str] | None = None, prog: str = "recarena sweep") -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser(prog).parse_args(argv)
    try:
        results = sweep(args.spec, args.out, args.address, args.max_concurrent)
    except RecarenaError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{prog}: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    sweep_dir = Path(args.out if args.out is not None else Path("sweeps") / args.spec.stem)
    print((sweep_dir / "results.md").read_text(encoding="utf-8"))
    print(f"sweep directory: {sweep_dir}  (best configuration: {results['best']}; "
          f"evaluate.py {sweep_dir} --baseline most_popular scores its runs)")
    unfinished = [u for config in results["configs"] for u in config["unfinished"] if u["status"] != "stopped early"]
    if unfinished:
        print(f"{prog}: {len(unfinished)} trial(s) did not finish ({', '.join(u['trial'] for u in unfinished)}); "
              f"run the same command again to continue them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
