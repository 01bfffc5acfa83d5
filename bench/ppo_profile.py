"""Profile native PPO's training on the throughput benchmark's env: rollout (``_collect``) against update.

Builds the env of ``bench/train_throughput.py`` (synthetic, ML-1M size), runs one untimed warm-up
rollout and update, then times ``--rollouts`` rollouts and their updates separately (wall seconds,
one torch thread); with ``--table`` it also prints ``torch.profiler``'s busiest operators of one
more update (the profiler's own overhead inflates those times; use them for shares, not speeds).

    python bench/ppo_profile.py                                    # state: sequence (2-layer transformer)
    python bench/ppo_profile.py --agent native_ppo:state=sequence:encoder.n_layers=1 --table 25
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import make_vector_env, parse_spec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", default="native_ppo:state=sequence", help="a native_ppo spec, as in train_throughput.py")
    parser.add_argument("--users", type=int, default=256, help="parallel users (the benchmark's native PPO default)")
    parser.add_argument("--history-length", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=20, help="session cap")
    parser.add_argument("--rollouts", type=int, default=3, help="timed rollouts (each followed by its update)")
    parser.add_argument("--table", type=int, default=0, help="also print the profiler's N busiest operators of one update")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from recarena.agents.base import NullLogger
    from recarena.agents.registry import make_agent
    from recarena.core.seeding import configure_torch_threads, seed_everything

    name, overrides = parse_spec(args.agent)
    if name != "native_ppo":
        raise SystemExit(f"--agent must be a native_ppo spec, got {args.agent!r}")
    configure_torch_threads(1)
    seed_everything(args.seed)
    env = make_vector_env(argparse.Namespace(env="synthetic-ml1m", history_length=args.history_length,
                                             max_steps=args.max_steps), args.users, "cpu")
    agent = make_agent(name, env.n_items, {**overrides, "device": "cpu", "seed": args.seed}, env=env)
    agent.learn(env, 1, NullLogger())  # warm-up: one rollout and its update
    collect = update = 0.0
    for _ in range(args.rollouts):
        start = time.perf_counter()
        batch = agent._collect(env)
        middle = time.perf_counter()
        agent._update(batch)
        collect, update = collect + middle - start, update + time.perf_counter() - middle
    steps = args.rollouts * agent.step_unit(env.num_envs)
    print(f"{args.agent}: {steps / (collect + update):,.0f} env-steps/s; per rollout of {agent.step_unit(env.num_envs)} "
          f"steps: rollout {collect / args.rollouts:.3f} s, update {update / args.rollouts:.3f} s "
          f"({update / (collect + update):.0%} of the time)")
    if args.table:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            agent._update(batch)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.table))


if __name__ == "__main__":
    main()
