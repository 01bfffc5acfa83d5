"""Training env-steps/s of a native agent as the number of parallel users N grows, and where a step's time goes.

On a GPU a vector step of native DQN or PPO is a fixed number of small kernels (about 1,800 PyTorch
ops and 575 kernels per step at the defaults), so at small N the host's launch rate bounds the
throughput and a larger N buys env steps almost for free, until the kernels themselves fill the
device. This script measures that curve on the synthetic env of ML-1M size (no data needed):

    python bench/native_scaling.py --agent native_dqn --device cuda --sizes 4096 16384 65536
    python bench/native_scaling.py --agent native_ppo --device cuda --sizes 65536 --set n_epochs=2 --profile

For each N it trains an untimed warm-up chunk (at least 48 vector steps), then times ``--steps``
env steps of ``agent.learn`` (at least 128 vector steps: 8 PPO rollouts). ``--profile`` adds a ``torch.profiler`` table for the first N: PyTorch
ops and device kernels per vector step, and the ops that take the most host and device time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from recarena.agents.base import NullLogger  # noqa: E402
from recarena.agents.registry import make_agent  # noqa: E402
from recarena.core.seeding import configure_torch_threads  # noqa: E402
from recarena.envs.vector_env import RecommendationVectorEnv  # noqa: E402

ML1M_SIZED = {"n_users": 6040, "n_items": 3706, "embedding_dim": 384}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def profile_steps(agent, env, device: str, vector_steps: int) -> None:
    """Print ops and kernels per vector step and the top ops by host and device time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        agent.learn(env, vector_steps * env.num_envs, NullLogger())
        synchronize(device)
    events = prof.key_averages()
    ops = sum(e.count for e in events if e.key.startswith("aten::")) / vector_steps
    kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA) / vector_steps
    print(f"per vector step: {ops:,.0f} PyTorch ops, {kernels:,.0f} device kernels")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50))
    if device.startswith("cuda"):
        print(events.table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=50))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", choices=["native_dqn", "native_ppo"], default="native_dqn")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536], help="parallel users N")
    parser.add_argument("--steps", type=int, default=1_000_000, help="timed env steps per N")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent config override")
    parser.add_argument("--profile", action="store_true", help="profile 16 vector steps at the first N")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_torch_threads(args.threads)
    overrides = {}
    for pair in args.set:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)

    print(f"{args.agent} {overrides or ''} on {args.device}"
          f" ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'})")
    print(f"{'N':>8} {'env-steps/s':>14} {'peak GPU GiB':>13}")
    for i, n in enumerate(args.sizes):
        env = RecommendationVectorEnv(num_envs=n, device=args.device, max_steps=20, simulator="synthetic",
                                      simulator_config=dict(ML1M_SIZED))
        agent = make_agent(args.agent, env.n_items, {**overrides, "device": args.device, "seed": 0}, env=env)
        rollout = 16 * n  # one PPO rollout at the default n_steps; the same unit for DQN
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        agent.learn(env, max(args.steps // 4, 3 * rollout), NullLogger())  # warm-up: allocations, learning_starts
        synchronize(args.device)
        start_step, start = agent.steps_done, time.perf_counter()
        agent.learn(env, max(args.steps, 8 * rollout), NullLogger())
        synchronize(args.device)
        rate = (agent.steps_done - start_step) / (time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
        print(f"{n:>8} {rate:>14,.0f} {peak:>13.1f}", flush=True)
        if args.profile and i == 0:
            profile_steps(agent, env, args.device, 16)
        del agent, env
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
