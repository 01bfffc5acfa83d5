"""Env steps/s of the native vector env next to gymnasium's SyncVectorEnv over the single env.

    .venv/bin/python bench/env_step.py                      # ML-1M logged users, CPU (+ CUDA if present)
    .venv/bin/python bench/env_step.py --simulator synthetic  # data-free users with ML-1M sizes
    .venv/bin/python bench/env_step.py --devices cuda --sizes 65536 --sync-sizes --profile 65536
    .venv/bin/python bench/env_step.py --vs-recsim           # the single env next to RecSim's env

``--vs-recsim`` times the single env (``gymnasium.make(id)``, each id of ``--ids``) and RecSim's
``interest_evolution`` env (its documented example config: 10 candidates, slates of 2, documents
resampled every step; ``pip install -e .[bench]`` installs ``recsim-no-tf``) side by side in one
process: ``--repeats`` rounds, each timing every env for ``--min-seconds`` with random valid actions
and a reset whenever an episode ends, in turn; it prints the median steps per CPU-second (and per
wall-second) over the rounds and the ratio to RecSim, and the steps per CPU-second of ``step`` alone
(the resets' CPU time left out). A second table puts the first round apart from the median of the
later ones, each against RecSim's same rounds: the ``-v1`` ids' reset memo
(``recarena.envs.reset_memo``) starts empty in the first round ("cold") and has filled in the later
ones ("warm"), with the share of resets served whole (their start copied, not computed) per round
and the resets run before the second round (each env on a simulator of its own, so with a memo of its own);
``--warm-resets N`` runs N untimed resets of each single env first. Those ids read every reset
from a start table (``recarena.envs.start_table``: built on first use, then cached): "served whole"
counts the resets served by it or the memo, and ``--compare-memo`` also times each of them
with the table off (the memo alone), in the same rounds.
``--history-lengths 20 200`` times each id at those history lengths
(``gymnasium.make(id, history_length=H)``; the step cost should not grow with H); without
``--vs-recsim`` it times both vector envs at each of them (``history_length=H``: the observation's
and the simulator's history).

``--compare-full`` also times each vector env with ``incremental=False`` (the full computation each
step: catalogue log-probabilities, replayed resets, pooled observation; the code before the
learned-choice vector env kept its users incrementally) in the same run, as "VecEnv full". ``--observation-keys llm_state`` times every env without the ``[N, H]`` history and
responses in the observation.

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


RECSIM_CONFIG = {"num_candidates": 10, "slate_size": 2, "resample_documents": True, "seed": 0}
"""RecSim's interest_evolution env as its README and tutorial configure it."""

SINGLE_IDS = ["recarena/Synthetic-v0", "recarena/ML100K-v0", "recarena/ML100K-v1"]


def _time_loop(step, reset, actions: list[Any], min_seconds: float) -> dict[str, float]:
    """Steps per wall- and CPU-second of ``step(action)`` (``step`` returns whether the episode ended),
    resets included; and per CPU-second of the steps alone (``steps_per_cpu_s_without_resets``)."""
    reset()
    for action in actions[:10]:  # warm-up
        if step(action):
            reset()
    steps, resets, reset_cpu = 0, 0, 0.0
    start, cpu_start = time.perf_counter(), time.process_time()
    while True:
        for _ in range(100):
            if step(actions[steps % len(actions)]):
                began = time.process_time()
                reset()
                reset_cpu += time.process_time() - began
                resets += 1
            steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
    cpu = time.process_time() - cpu_start
    result = _result(1, steps, elapsed, cpu)
    result.update(
        resets=resets,
        steps_per_episode=steps / max(resets, 1),
        steps_per_cpu_s_without_resets=steps / max(cpu - reset_cpu, 1e-9),
    )
    return result


def single_env_timer(env_id: str, kwargs: dict[str, Any], warm_resets: int = 0, memo_only: bool = False):
    """A closure timing ``gymnasium.make(env_id, **kwargs)`` (what a stock Gymnasium/SB3 user steps),
    with the counters of the start table and the reset memo over each round
    (``recarena.envs.start_table``, ``recarena.envs.reset_memo``; -v1 to -v3 ids only); ``memo_only``: the
    start table turned off; ``warm_resets`` untimed resets first (they fill the memo).
    It prints what ``gymnasium.make`` cost (CPU-s), building or loading the start table included. Each timer's env has a simulator of its
    own: envs with the same options in one process share one, and with it the memo, and the envs
    here all reset with seed 0, so a shared memo would serve one env the (user, prefix) starts
    another one drew before."""
    from recarena.envs.common import clear_simulator_cache
    from recarena.envs.single_user_choice import reset_memo, start_table

    clear_simulator_cache()  # its own simulator (from the disk cache): no reset memo shared with other timers
    began = time.process_time()
    env = gym.make(env_id, **kwargs)
    make_cpu = time.process_time() - began
    simulator = env.unwrapped.simulator
    table = start_table(simulator)
    if memo_only and table is not None:
        table.enabled, table = False, None
    built = table.build_seconds if table is not None else 0.0
    print(f"{env_id} {kwargs}: gym.make {make_cpu:.2f} CPU-s"
          + ("" if table is None else f", start table {len(table.data):,} rows "
             + (f"built in {built:.1f} CPU-s" if built else "loaded from the cache")), flush=True)
    env.reset(seed=0)
    for _ in range(warm_resets):
        env.reset()
    rng = np.random.default_rng(0)
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        actions: list[Any] = [int(a) for a in rng.integers(space.n, size=4096)]
    else:
        actions = [rng.choice(space.nvec[0], size=len(space.nvec), replace=False) for _ in range(4096)]

    def step(action: Any) -> bool:
        _, _, terminated, truncated, _ = env.step(action)
        return terminated or truncated

    def timed(seconds: float) -> dict[str, float]:
        memo = reset_memo(simulator)
        before = memo.statistics() if memo is not None else None
        table_before = table.resets if table is not None else 0
        result = _time_loop(step, env.reset, actions, seconds)
        if memo is not None and reset_memo(simulator) is memo:
            after = memo.statistics()
            from_table = (table.resets if table is not None else 0) - table_before
            resets = after["resets"] - before["resets"] + from_table
            result.update(
                resets_before=before["resets"] + table_before, counted_resets=resets,
                table_rate=from_table / max(resets, 1), make_cpu_s=make_cpu, table_build_cpu_s=built,
                served_whole_rate=(after["hits"] - before["hits"] + from_table) / max(resets, 1),
                memo_extended_rate=(after["extended"] - before["extended"]) / max(resets, 1),
                memo_entries=after["entries"], memo_bytes=after["bytes"], memo_clears=after["clears"],
            )
        return result

    return timed


def recsim_timer():
    """A closure timing RecSim's interest_evolution env (``RECSIM_CONFIG``), or None without RecSim."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from recsim.environments import interest_evolution
    except ImportError:
        return None
    env = interest_evolution.create_environment(dict(RECSIM_CONFIG))
    rng = np.random.default_rng(0)
    k, n = RECSIM_CONFIG["slate_size"], RECSIM_CONFIG["num_candidates"]
    actions = [rng.choice(n, size=k, replace=False) for _ in range(4096)]

    def step(action: Any) -> bool:
        return bool(env.step(action)[2])

    return lambda seconds: _time_loop(step, env.reset, actions, seconds)


def single_vs_recsim(args: argparse.Namespace) -> dict[str, Any]:
    """The single env next to RecSim, rounds interleaved; medians and ratios (see the module docstring)."""
    timers: dict[str, Any] = {}
    recsim = recsim_timer()
    if recsim is None:
        print("RecSim is not installed (pip install -e .[bench], or pip install recsim-no-tf==0.2.3)")
    else:
        timers["RecSim interest_evolution"] = recsim
    for env_id in args.ids:
        kwargs: dict[str, Any] = {}
        if "ML" in env_id:
            kwargs["simulator_config"] = {"preference": {"epochs": args.preference_epochs}}
        for history_length in args.history_lengths or [None]:
            for slate_size in args.slate_sizes:
                name, options = f"{env_id} k={slate_size}", {**kwargs, "slate_size": slate_size}
                if history_length is not None:
                    name, options["history_length"] = f"{name} H={history_length}", history_length
                timers[name] = single_env_timer(env_id, options, args.warm_resets)
                if args.compare_memo and env_id.endswith(("-v1", "-v2", "-v3")):
                    timers[f"{name} memo only"] = single_env_timer(env_id, options, args.warm_resets, memo_only=True)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in timers}
    for _ in range(args.repeats):
        for name, timer in timers.items():
            runs[name].append(timer(args.min_seconds))
    baseline = "RecSim interest_evolution"
    results: dict[str, Any] = {}
    print(f"{'env':<42}{'steps/CPU-s (median)':>22}{'steps/s wall':>14}{'x RecSim (CPU)':>16}"
          f"{'steps/episode':>15}{'without resets':>16}  runs (steps/CPU-s)")
    for name, rounds in runs.items():
        cpu = float(np.median([r["env_steps_per_cpu_s"] for r in rounds]))
        wall = float(np.median([r["env_steps_per_s"] for r in rounds]))
        alone = float(np.median([r["steps_per_cpu_s_without_resets"] for r in rounds]))
        length = float(np.median([r["steps_per_episode"] for r in rounds]))
        results[name] = {"steps_per_cpu_s": cpu, "steps_per_s": wall, "steps_per_cpu_s_without_resets": alone,
                         "steps_per_episode": length, "runs": rounds}
        ratio = cpu / results[baseline]["steps_per_cpu_s"] if baseline in results else float("nan")
        results[name]["ratio_vs_recsim_cpu"] = ratio
        each = ", ".join(f"{r['env_steps_per_cpu_s']:,.0f}" for r in rounds)
        print(f"{name:<42}{cpu:>22,.0f}{wall:>14,.0f}{ratio:>15.2f}x{length:>15.1f}{alone:>16,.0f}  {each}", flush=True)
    if args.repeats >= 2:
        _cold_and_warm(runs, baseline, results, cold=args.warm_resets == 0)
    return results


def _cold_and_warm(
    runs: dict[str, list[dict[str, float]]], baseline: str, results: dict[str, Any], cold: bool = True
) -> None:
    """The first round (reset memo cold, unless ``--warm-resets`` filled it) apart from the median of
    the later ones (warm), each against RecSim's same rounds, with the share of resets served whole
    (their start copied from the start table or an exact (user, prefix) hit of the memo)."""
    first = "round 1 (cold)" if cold else "round 1"
    print(f"\n{'env':<42}{first:>16}{'x RecSim':>10}{'served whole':>14}{'rounds 2+ (warm)':>18}"
          f"{'x RecSim':>10}{'served whole':>14}{'resets before':>15}")
    recsim = runs.get(baseline)
    for name, rounds in runs.items():
        cold, warm = rounds[0]["env_steps_per_cpu_s"], float(np.median([r["env_steps_per_cpu_s"] for r in rounds[1:]]))
        cold_ratio = cold / recsim[0]["env_steps_per_cpu_s"] if recsim else float("nan")
        warm_ratio = warm / float(np.median([r["env_steps_per_cpu_s"] for r in recsim[1:]])) if recsim else float("nan")
        counted = "served_whole_rate" in rounds[0]
        whole_cold = rounds[0]["served_whole_rate"] if counted else float("nan")
        whole_warm = float(np.median([r["served_whole_rate"] for r in rounds[1:]])) if counted else float("nan")
        before = rounds[1]["resets_before"] if counted else float("nan")
        results[name].update(
            cold_steps_per_cpu_s=cold, cold_ratio_vs_recsim_cpu=cold_ratio, warm_steps_per_cpu_s=warm,
            warm_ratio_vs_recsim_cpu=warm_ratio, cold_served_whole_rate=whole_cold, warm_served_whole_rate=whole_warm,
        )
        rate = (lambda x: f"{x:>14.1%}") if counted else (lambda x: f"{'-':>14}")
        print(f"{name:<42}{cold:>16,.0f}{cold_ratio:>9.2f}x{rate(whole_cold)}{warm:>18,.0f}{warm_ratio:>9.2f}x"
              f"{rate(whole_warm)}{before if counted else '-':>15}", flush=True)


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
    parser.add_argument("--vs-recsim", action="store_true",
                        help="time the single env next to RecSim's interest_evolution env instead")
    parser.add_argument("--ids", nargs="+", default=SINGLE_IDS, help="single-env ids for --vs-recsim")
    parser.add_argument("--slate-sizes", type=int, nargs="+", default=[1], help="slate sizes for --vs-recsim")
    parser.add_argument("--history-lengths", type=int, nargs="+", default=None,
                        help="history lengths (default: the simulator's or each id's own)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds for --vs-recsim")
    parser.add_argument("--compare-memo", action="store_true",
                        help="also time each -v1/-v2/-v3 id with its start table off (the reset memo alone)")
    parser.add_argument("--observation-keys", nargs="+", default=None,
                        help="observation keys of every env (default: all three)")
    parser.add_argument("--compare-full", action="store_true",
                        help="also time each vector env with incremental=False (the full computation)")
    parser.add_argument("--warm-resets", type=int, default=0,
                        help="untimed resets of each single env before the rounds of --vs-recsim (fill the reset memo)")
    args = parser.parse_args(argv)

    threads = configure_torch_threads(args.threads)
    kwargs = env_kwargs(args)
    if args.observation_keys:
        kwargs["observation_keys"] = list(args.observation_keys)
    from recarena import envs  # noqa: F401

    if args.vs_recsim:
        print(f"single env vs RecSim: torch threads={threads} cpu={platform.processor() or platform.machine()} "
              f"{args.repeats} rounds of {args.min_seconds:g} s per env")
        results = single_vs_recsim(args)
        if args.json is not None:
            atomic_write_json(args.json, json.loads(json.dumps(results, default=str)))
        return results

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
        f"{'env':<22}{'H':>5}{'device':>7}{'N':>7}{'steps/s (wall)':>17}{'steps/CPU-s':>15}{'x Sync (wall)':>15}"
        f"{'x Sync (CPU)':>14}"
    )
    for history_length in args.history_lengths or [None]:
        # Keys "N" (the simulator's own history length) or "N H=200" (--history-lengths).
        h_kwargs = kwargs if history_length is None else {**kwargs, "history_length": history_length}
        suffix, h = ("", "-") if history_length is None else (f" H={history_length}", str(history_length))
        for n in args.sync_sizes:
            result = results["sync"][f"{n}{suffix}"] = time_sync_env(h_kwargs, n, args.min_seconds)
            print(f"{'SyncVectorEnv':<22}{h:>5}{'cpu':>7}{n:>7}{result['env_steps_per_s']:>17,.0f}"
                  f"{result['env_steps_per_cpu_s']:>15,.0f}", flush=True)
        for device in args.devices:
            for n in args.sizes:
                result = time_vector_env(h_kwargs, n, device, args.min_seconds)
                results["vector"][f"{device}:{n}{suffix}"] = result
                line = (f"{'RecommendationVecEnv':<22}{h:>5}{device:>7}{n:>7}{result['env_steps_per_s']:>17,.0f}"
                        f"{result['env_steps_per_cpu_s']:>15,.0f}")
                sync = results["sync"].get(f"{n}{suffix}")
                if device == "cpu" and sync is not None:
                    result["ratio_vs_sync"] = result["env_steps_per_s"] / sync["env_steps_per_s"]
                    result["ratio_vs_sync_cpu"] = result["env_steps_per_cpu_s"] / sync["env_steps_per_cpu_s"]
                    line += f"{result['ratio_vs_sync']:>14,.0f}x{result['ratio_vs_sync_cpu']:>13,.0f}x"
                print(line, flush=True)
                if args.compare_full:
                    full = time_vector_env({**h_kwargs, "incremental": False}, n, device, args.min_seconds)
                    results["vector"][f"{device}:{n}{suffix} full"] = full
                    print(f"{'VecEnv full':<22}{h:>5}{device:>7}{n:>7}{full['env_steps_per_s']:>17,.0f}"
                          f"{full['env_steps_per_cpu_s']:>15,.0f}   (incremental / full: "
                          f"{result['env_steps_per_cpu_s'] / full['env_steps_per_cpu_s']:.2f}x CPU)", flush=True)
    if args.profile is not None:
        for device in args.devices:
            profile_vector_env(kwargs, args.profile, device)
    if args.json is not None:
        atomic_write_json(args.json, json.loads(json.dumps(results, default=str)))
    return results


if __name__ == "__main__":
    main()
