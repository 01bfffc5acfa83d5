"""Env steps/s of the native vector env next to gymnasium's SyncVectorEnv over the single env.

    .venv/bin/python bench/env_step.py                      # ML-1M logged users, CPU (+ CUDA if present)
    .venv/bin/python bench/env_step.py --simulator synthetic  # data-free users with ML-1M sizes
    .venv/bin/python bench/env_step.py --devices cuda --sizes 65536 --sync-sizes --profile 65536

One "env step" is one user shown one item (slate size 1). For every N the native
:class:`recarena.envs.RecommendationVectorEnv` is stepped with pre-generated random actions (already on its
device) for at least ``--min-seconds``; ``SyncVectorEnv`` of N single :class:`recarena.envs.RecommendationEnv`
(the same simulator, same options) is measured in the same run at the ``--sync-sizes``, and the
ratio is printed at equal N. Both include autoreset and the full observation (history, responses,
384-d LLM state).

The logged simulator needs a fitted preference model: the first run fits one for
``--preference-epochs`` epochs and caches it in ``$RECARENA_CACHE`` (its step cost depends on the
model's size, not on how long it was trained).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from recarena.core.io import atomic_write_json
from recarena.core.seeding import configure_torch_threads

ML1M_SYNTHETIC = {"n_users": 6040, "n_items": 3706, "embedding_dim": 384, "events_per_user": 100}
"""Synthetic fallback with ML-1M sizes: users, rated items, MiniLM width."""


def env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.simulator == "logged":
        return {
            "simulator": "logged",
            "data": args.data,
            "simulator_config": {"preference": {"epochs": args.preference_epochs}},
        }
    return {"simulator": "synthetic", "simulator_config": dict(ML1M_SYNTHETIC)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_vector_env(kwargs: dict[str, Any], n: int, device: str, min_seconds: float) -> dict[str, float]:
    """Steps/s of the native vector env with N users on ``device``."""
    from recarena import envs

    env = envs.RecommendationVectorEnv(num_envs=n, device=device, **kwargs)
    env.reset(seed=0)
    generator = torch.Generator(device=env.device).manual_seed(0)
    pool = [torch.randint(env.n_items, (n,), generator=generator, device=env.device) for _ in range(8)]
    for action in pool[:3]:  # warm-up
        env.step(action)
    _sync(env.device)
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        env.step(pool[steps % len(pool)])
        steps += 1
        if steps % 4 == 0 or n >= 4096:
            _sync(env.device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds and steps >= 3:
                break
    return _result(n, steps, elapsed, time.process_time() - cpu_start)


def profile_vector_env(kwargs: dict[str, Any], n: int, device: str, steps: int = 20) -> None:
    """Print where a step of the vector env with N users spends its time (``torch.profiler``;
    action validation off, as a training loop that makes its own valid actions would run it)."""
    from torch.profiler import ProfilerActivity, profile

    from recarena import envs

    env = envs.RecommendationVectorEnv(num_envs=n, device=device, validate_actions=False, **kwargs)
    env.reset(seed=0)
    generator = torch.Generator(device=env.device).manual_seed(1)
    pool = [torch.randint(env.n_items, (n, 1), generator=generator, device=env.device) for _ in range(4)]
    for i in range(10):  # warm-up
        env.step(pool[i % 4])
    _sync(env.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if env.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(steps):
            env.step(pool[i % 4])
        _sync(env.device)
    events = prof.key_averages()
    ops = sum(e.count for e in events if e.key.startswith("aten::")) / steps
    print(f"\nprofile, {device}, N={n}: {ops:,.0f} PyTorch ops per step", end="")
    if env.device.type == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        kernel_ms = sum(e.self_device_time_total for e in kernels) / steps / 1e3
        print(f", {kernel_ms:.2f} ms of kernel time per step")
        print(events.table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))
    else:
        print()
        print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))


def _result(n: int, steps: int, elapsed: float, cpu: float) -> dict[str, float]:
    """Throughput by wall clock, and by this process's CPU time (robust to other load on the machine)."""
    return {
        "env_steps_per_s": n * steps / elapsed,
        "env_steps_per_cpu_s": n * steps / max(cpu, 1e-9),
        "seconds_per_step": elapsed / steps,
        "steps": steps,
    }


def time_sync_env(kwargs: dict[str, Any], n: int, min_seconds: float) -> dict[str, float]:
    """Steps/s of gymnasium's SyncVectorEnv over N single envs (CPU, NumPy actions)."""
    from recarena import envs

    env = gym.vector.SyncVectorEnv([lambda: envs.RecommendationEnv(**kwargs) for _ in range(n)])
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    n_items = env.single_action_space.n
    pool = [rng.integers(n_items, size=n) for _ in range(8)]
    env.step(pool[0])  # warm-up
    steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        env.step(pool[steps % len(pool)])
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and steps >= 2:
            break
    cpu = time.process_time() - cpu_start
    env.close()
    return _result(n, steps, elapsed, cpu)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulator", choices=["logged", "synthetic"], default="logged")
    parser.add_argument("--data", default="ml-1m", help="data source of the logged simulator")
    parser.add_argument("--preference-epochs", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 256, 4096, 65536])
    parser.add_argument("--sync-sizes", type=int, nargs="*", default=[1, 256, 4096])
    parser.add_argument(
        "--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--profile", type=int, default=None, metavar="N",
                        help="also profile 20 steps with N users on each device")
    args = parser.parse_args(argv)

    threads = configure_torch_threads(args.threads)
    kwargs = env_kwargs(args)
    from recarena import envs  # noqa: F401

    print(
        f"simulator={args.simulator} data={args.data if args.simulator == 'logged' else '-'} "
        f"torch threads={threads} cpu={platform.processor() or platform.machine()}"
    )
    start = time.perf_counter()
    envs.RecommendationVectorEnv(num_envs=1, **kwargs)  # builds (or loads) the simulator once
    print(f"simulator ready in {time.perf_counter() - start:.1f} s")

    results: dict[str, Any] = {
        "simulator": args.simulator,
        "kwargs": kwargs,
        "threads": threads,
        "vector": {},
        "sync": {},
    }
    print(
        f"{'env':<22}{'device':<7}{'N':>7}{'steps/s (wall)':>17}{'steps/CPU-s':>15}{'x Sync (wall)':>15}{'x Sync (CPU)':>14}"
    )
    for n in args.sync_sizes:
        result = results["sync"][n] = time_sync_env(kwargs, n, args.min_seconds)
        print(
            f"{'SyncVectorEnv':<22}{'cpu':<7}{n:>7}{result['env_steps_per_s']:>17,.0f}{result['env_steps_per_cpu_s']:>15,.0f}"
        )
    for device in args.devices:
        for n in args.sizes:
            result = time_vector_env(kwargs, n, device, args.min_seconds)
            results["vector"][f"{device}:{n}"] = result
            line = f"{'RecommendationVecEnv':<22}{device:<7}{n:>7}{result['env_steps_per_s']:>17,.0f}{result['env_steps_per_cpu_s']:>15,.0f}"
            if device == "cpu" and n in results["sync"]:
                sync = results["sync"][n]
                result["ratio_vs_sync"] = result["env_steps_per_s"] / sync["env_steps_per_s"]
                result["ratio_vs_sync_cpu"] = result["env_steps_per_cpu_s"] / sync["env_steps_per_cpu_s"]
                line += f"{result['ratio_vs_sync']:>14,.0f}x{result['ratio_vs_sync_cpu']:>13,.0f}x"
            print(line, flush=True)
    if args.profile is not None:
        for device in args.devices:
            profile_vector_env(kwargs, args.profile, device)
    if args.json is not None:
        atomic_write_json(args.json, json.loads(json.dumps(results, default=str)))
    return results


if __name__ == "__main__":
    main()
