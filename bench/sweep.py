"""Trials per hour: 8 short training runs by `recarena sweep` (local Ray Tune) against the same 8 run one
after another by train.py, measured in the same run; and the sweep's scaling from 1 to 2 concurrent trials.

    nice -n 10 .venv/bin/python bench/sweep.py                    # 2 configs x 4 seeds of tabular Q on ML-100K
    nice -n 10 .venv/bin/python bench/sweep.py --steps 20000 --out /tmp/bench_sweep

The trials: configs/qlearning_ml100k.yaml with n_states 16 or 32, seeds 0-3, --steps user-steps each.
The sweep scores each trial by its final train_eval return only (no evaluate.py pass), so a trial is
the same work as a train.py run. Each sweep starts (and stops) its own local Ray, counted in its time;
the simulator's cached models (ML-100K, in $RECARENA_CACHE) must exist already (a first train.py run
fits them). Results go in docs/benchmarks.md with date, machine, load and command.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "configs" / "qlearning_ml100k.yaml"
N_STATES = [16, 32]
SEEDS = [0, 1, 2, 3]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sequential(out: Path, steps: int) -> tuple[float, float]:
    """The 8 trials by train.py, one after another: (wall seconds, CPU seconds)."""
    wall, cpu = time.perf_counter(), children_cpu()
    for n_states in N_STATES:
        for seed in SEEDS:
            command = [sys.executable, str(ROOT / "train.py"), "--config", str(BASE), "--seed", str(seed),
                       "--total-steps", str(steps), "--set", f"agent.config.n_states={n_states}", "--device", "cpu",
                       "--run-dir", str(out / f"n{n_states}_s{seed}"), "--no-progress"]
            subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - wall, children_cpu() - cpu


def swept(out: Path, steps: int, concurrent: int) -> float:
    """The same 8 trials by recarena sweep with at most ``concurrent`` at a time: wall seconds."""
    from recarena.cli.sweep import sweep

    out.mkdir(parents=True)
    spec = {"base": str(BASE), "set": {"train.total_steps": steps}, "params": {"agent.config.n_states": N_STATES},
            "seeds": SEEDS, "select": "train_eval/episodic_return", "measures": ["train_eval/episodic_return"],
            "resources": {"cpu": 1}, "max_concurrent": concurrent}
    path = out / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    wall = time.perf_counter()
    sweep(path, out / "sweep")
    return time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="user-steps per trial")
    parser.add_argument("--out", type=Path, help="working folder (default: a temp dir, removed at the end)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    n = len(N_STATES) * len(SEEDS)
    print(f"{n} trials of {args.steps} user-steps (tabular Q, ML-100K); load average {os.getloadavg()[0]:.2f}", flush=True)
    seq_wall, seq_cpu = sequential(out / "sequential", args.steps)
    print(f"train.py one after another: {seq_wall:.1f} s wall ({seq_cpu:.1f} CPU-s), {n * 3600 / seq_wall:.0f} trials/hour", flush=True)
    walls = {}
    for concurrent in (1, 2):
        walls[concurrent] = swept(out / f"sweep{concurrent}", args.steps, concurrent)
        print(f"recarena sweep, {concurrent} at a time: {walls[concurrent]:.1f} s wall, "
              f"{n * 3600 / walls[concurrent]:.0f} trials/hour", flush=True)
    print(f"sweep (2 at a time) / train.py sequential: {seq_wall / walls[2]:.2f}x trials/hour; "
          f"scaling 1 -> 2 concurrent trials: {walls[1] / walls[2]:.2f}x; "
          f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
