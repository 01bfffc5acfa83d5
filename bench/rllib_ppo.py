"""Benchmark: RLlib PPO against the native PPO on the same recarena id, same users and env steps.

Run with the interpreter of the rllib virtualenv (README: RLlib); each run trains in its own
subprocess, alternating native and RLlib, ``--repeats`` times each. For each run it prints the
training wall time and the driver process's CPU time (env construction and Ray start-up excluded),
env steps per second of each, and the mean return of the episodes ended in the last rollout /
iteration; then the medians and the ratios. Both agents use one torch thread, the same rollout size
(``--batch`` user-steps of ``--num-envs`` users), 4 epochs of minibatches of ``--batch / 4``, and
learning rate 3e-4; RLlib samples in the driver process (``num_env_runners=0``) and learns there
(``num_learners=0``), with its default MLP (256, 256) on the flattened ``llm_state`` and
``responses``; the native PPO scores the catalogue with its item scorer on the whole observation.
RLlib's Ray processes (GCS, raylet, ...) spend CPU outside the driver: their CPU time during training
is printed beside it (``+ Ray``), and the ratios are given without and with it.

    python bench/rllib_ppo.py --env recarena/ML100K-v1 --steps 5000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_native(args: argparse.Namespace) -> dict[str, Any]:
    import gymnasium as gym

    import recarena  # noqa: F401  (registers the ids)
    from recarena.agents.registry import make_agent

    env = gym.make_vec(args.env, num_envs=args.num_envs, vectorization_mode="vector_entry_point")
    config = {"n_steps": args.batch // args.num_envs, "num_minibatches": 4, "n_epochs": 4,
              "learning_rate": 3e-4, "seed": args.seed}
    agent = make_agent("native_ppo", env.n_items, config, env=env)
    returns: list[float] = []

    class Recorder:
        def log_scalar(self, tag: str, value: float, step: int) -> None:
            if tag == "charts/episodic_return":
                returns.append(float(value))

    wall, cpu = time.perf_counter(), time.process_time()
    agent.learn(env, args.steps, Recorder())
    return {"steps": agent.steps_done, "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
            "return": returns[-1] if returns else math.nan}


def ray_processes_cpu() -> float:
    """CPU seconds used so far by this process's descendants (Ray's GCS, raylet, ...)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def run_rllib(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig

    from recarena.envs.rllib import configure_env

    logging.getLogger("ray.rllib").setLevel(logging.ERROR)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    config = configure_env(PPOConfig(), args.env, num_envs=args.num_envs, observation_keys=["llm_state", "responses"])
    config.env_runners(num_env_runners=0).learners(num_learners=0)
    config.training(train_batch_size_per_learner=args.batch, minibatch_size=args.batch // 4, num_epochs=4, lr=3e-4)
    config.debugging(seed=args.seed, log_level="ERROR")
    algo = config.build_algo()  # builds the env (and fits/loads the simulator's models)
    ray_cpu = ray_processes_cpu()
    wall, cpu = time.perf_counter(), time.process_time()
    steps, episode_return = 0, math.nan
    while steps < args.steps:
        runners = algo.train()["env_runners"]
        steps = int(runners["num_env_steps_sampled_lifetime"])
        episode_return = float(runners.get("episode_return_mean", math.nan))
    result = {"steps": steps, "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "return": episode_return,
              "ray_cpu": ray_processes_cpu() - ray_cpu}
    algo.stop()
    ray.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="recarena/ML100K-v1")
    parser.add_argument("--steps", type=int, default=5000, help="env steps (user-steps) per run")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1000, help="user-steps per rollout / iteration")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agent", choices=("native", "rllib"), help=argparse.SUPPRESS)  # one subprocess run
    args = parser.parse_args()
    if args.batch % args.num_envs or args.batch % 4:
        parser.error("--batch must be a multiple of --num-envs and of 4")
    if args.agent:
        from recarena.core.seeding import configure_torch_threads

        configure_torch_threads(1)
        result = run_native(args) if args.agent == "native" else run_rllib(args)
        print(json.dumps(result))
        return

    runs: dict[str, list[dict[str, Any]]] = {"native": [], "rllib": []}
    for repeat in range(args.repeats):
        for agent in runs:
            command = [sys.executable, __file__, "--agent", agent, "--env", args.env, "--steps", str(args.steps),
                       "--num-envs", str(args.num_envs), "--batch", str(args.batch), "--seed", str(args.seed)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            runs[agent].append(result)
            result["cpu_all"] = result["cpu"] + result.get("ray_cpu", 0.0)
            print(f"run {repeat + 1} {agent:6s}: {result['steps']} steps, {result['wall']:.1f} s wall, "
                  f"{result['cpu']:.1f} CPU-s (+ Ray {result.get('ray_cpu', 0.0):.1f}), "
                  f"{result['steps'] / result['wall']:.0f} steps/s, "
                  f"{result['steps'] / result['cpu']:.0f} steps/CPU-s, last return {result['return']:.3f}", flush=True)
    medians = {agent: {key: statistics.median(r[key] / (r["steps"] if key != "return" else 1) for r in results)
                       for key in ("wall", "cpu", "cpu_all", "return")} for agent, results in runs.items()}
    for agent, median in medians.items():
        print(f"median {agent:6s}: {1 / median['wall']:.0f} steps/s, {1 / median['cpu']:.0f} steps/CPU-s "
              f"({1 / median['cpu_all']:.0f} with Ray's processes), last return {median['return']:.3f}")
    native, rllib = medians["native"], medians["rllib"]
    print(f"RLlib / native: {native['wall'] / rllib['wall']:.2f}x steps/s, {native['cpu'] / rllib['cpu']:.2f}x "
          f"steps/CPU-s ({native['cpu_all'] / rllib['cpu_all']:.2f}x with Ray's processes)")


if __name__ == "__main__":
    main()
