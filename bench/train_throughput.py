"""Benchmark: end-to-end training throughput of native DQN/PPO against Stable-Baselines3 DQN/PPO.

Every agent trains on the same env, machine and run, in its own subprocess (so peak host memory is
its own). For each it prints training env-steps/s (user-steps per second of wall time, learning
included), peak host RSS, peak GPU memory (CUDA), and the return reached: the mean episodic return
of its greedy policy on held-out simulated sessions (a fixed evaluation seed), measured at several
points of training to give learning curves over env steps. Ratios are against the SB3 agent of the
same algorithm.

    python bench/train_throughput.py                       # CPU, synthetic env of ML-1M size
    python bench/train_throughput.py --env recarena/ML1M-v0  # logged ML-1M users (fits/caches once)
    python bench/train_throughput.py --device cuda --native-envs 4096 --steps 2000000
    python bench/train_throughput.py --agents native_ppo,native_ppo:n_epochs=2,sb3_ppo
    python bench/train_throughput.py --agents native_ppo,native_ppo:state=sequence:encoder.max_length=50 --history-length 50

A native agent may carry config overrides after a colon (``name:key=value:key=value``); each
spec runs as its own agent, compared with the SB3 agent of the same algorithm.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recarena.agents.base import NullLogger  # noqa: E402

AGENTS = ("native_dqn", "native_ppo", "sb3_dqn", "sb3_ppo")
ML1M_SIZED = {"n_users": 6040, "n_items": 3706, "embedding_dim": 384}


def make_vector_env(args: argparse.Namespace, num_envs: int, device: str, **extra: Any):
    from recarena.envs.registration import ENV_KWARGS
    from recarena.envs.vector_env import RecommendationVectorEnv

    if args.env == "synthetic-ml1m":
        kwargs = {"simulator": "synthetic", "simulator_config": dict(ML1M_SIZED)}
    else:
        kwargs = dict(ENV_KWARGS[args.env])
    if args.history_length is not None:
        kwargs["history_length"] = args.history_length
    return RecommendationVectorEnv(num_envs=num_envs, device=device, max_steps=args.max_steps, **kwargs, **extra)


def evaluate_return(args: argparse.Namespace, act) -> float:
    """Mean episodic return of ``act`` (obs dict of tensors -> int64 [N]) over held-out sessions."""
    env = make_vector_env(args, args.eval_users, "cpu", autoreset=False)
    observation, _ = env.reset(seed=10_000 + args.seed)
    active = torch.ones(env.num_envs, dtype=torch.bool)
    total = torch.zeros(env.num_envs)
    while active.any():
        with torch.no_grad():
            actions = act(observation, env.action_masks())
        observation, reward, terminated, truncated, _ = env.step(actions)
        total += reward * active
        active &= ~(terminated | truncated)
    return float(total.mean())


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"native_ppo:n_epochs=2"`` -> ("native_ppo", {"n_epochs": 2}); values parsed as YAML
    scalars; a dotted key sets a nested section (``encoder.max_length=50`` -> {"encoder": {"max_length": 50}})."""
    import yaml

    name, *pairs = spec.split(":")
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"agent spec {spec!r}: expected key=value after ':', got {pair!r}")
        *sections, leaf = key.split(".")
        target = overrides
        for section in sections:
            target = target.setdefault(section, {})
        target[leaf] = yaml.safe_load(value)
    if name not in AGENTS or (overrides and not name.startswith("native")):
        raise SystemExit(f"unknown agent spec {spec!r}; agents are {AGENTS} (overrides only for native ones)")
    return name, overrides


def run_native(args: argparse.Namespace, spec: str) -> dict[str, Any]:
    from recarena.agents.registry import make_agent

    name, overrides = parse_spec(spec)
    users = args.native_envs if name == "native_dqn" else args.native_ppo_envs
    env = make_vector_env(args, users, args.device)
    agent = make_agent(name, env.n_items, {**overrides, "device": args.device, "seed": args.seed}, env=env)
    act = lambda obs, mask: agent.act({k: v.to(args.device) for k, v in obs.items()}, 1, mask.to(args.device))[:, 0].cpu()  # noqa: E731
    return train_with_curve(args, lambda steps: agent.learn(env, steps, NullLogger()), act,
                            lambda: agent.steps_done)


def run_sb3(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from stable_baselines3 import DQN, PPO

    from recarena.envs.sb3 import SB3VecEnvAdapter

    if name == "sb3_dqn":
        env = SB3VecEnvAdapter(make_vector_env(args, 1, "cpu"))
        model = DQN("MultiInputPolicy", env, seed=args.seed, device=args.device, learning_starts=1000,
                    exploration_fraction=0.1, verbose=0)
    else:
        env = SB3VecEnvAdapter(make_vector_env(args, args.sb3_ppo_envs, "cpu"))
        model = PPO("MultiInputPolicy", env, seed=args.seed, device=args.device, n_steps=256, verbose=0)

    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))  # no /tmp/SB3-<time> folder per learn()

    def act(obs, mask):
        numpy_obs = {k: v.numpy() for k, v in obs.items()}
        return torch.as_tensor(model.predict(numpy_obs, deterministic=True)[0])

    return train_with_curve(args, lambda steps: model.learn(steps, reset_num_timesteps=False), act,
                            lambda: model.num_timesteps)


def train_with_curve(args: argparse.Namespace, learn, act, steps_done) -> dict[str, Any]:
    """Train in ``args.points`` equal chunks, timing only training and evaluating after each.

    Agents may overshoot a chunk (PPO completes whole rollouts), so ``steps_done()`` - the agent's
    own count of env steps taken - is what the figures use.
    """
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    curve = [(0, evaluate_return(args, act))]
    chunk = args.steps // args.points
    train_seconds = 0.0
    for _ in range(args.points):
        start = time.perf_counter()
        learn(chunk)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - start
        curve.append((steps_done(), evaluate_return(args, act)))
    return {
        "steps": steps_done(),
        "train_seconds": train_seconds,
        "steps_per_second": steps_done() / train_seconds,
        "peak_host_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None,
        "curve": curve,
        "final_return": curve[-1][1],
    }


def worker(args: argparse.Namespace) -> None:
    from recarena.core.seeding import configure_torch_threads, seed_everything

    configure_torch_threads(args.threads)
    seed_everything(args.seed)
    result = run_native(args, args.worker) if args.worker.startswith("native") else run_sb3(args, args.worker)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="synthetic-ml1m", help="synthetic-ml1m or a registered id, e.g. recarena/ML1M-v0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20_000, help="training env steps per agent")
    parser.add_argument("--sb3-steps", type=int, default=None, help="training steps for SB3 agents (default: --steps)")
    parser.add_argument("--points", type=int, default=4, help="learning-curve evaluations")
    parser.add_argument("--native-envs", type=int, default=1024, help="parallel users of native DQN")
    parser.add_argument("--native-ppo-envs", type=int, default=256, help="parallel users of native PPO")
    parser.add_argument("--sb3-ppo-envs", type=int, default=8, help="parallel envs of SB3 PPO")
    parser.add_argument("--eval-users", type=int, default=256)
    parser.add_argument("--max-steps", type=int, default=20, help="session cap")
    parser.add_argument("--history-length", type=int, default=None,
                        help="observation history window of every agent's env (default: the env's own, 20)")
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    results: dict[str, dict[str, Any]] = {}
    for name in args.agents.split(","):
        parse_spec(name)  # fail early on a bad spec
        steps = args.sb3_steps if (name.startswith("sb3") and args.sb3_steps) else args.steps
        command = [sys.executable, __file__, "--worker", name, "--steps", str(steps)] + [
            a for a in _forwarded(args)]
        output = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
        if output.returncode != 0 or not lines:
            print(output.stdout[-3000:], output.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{name} failed")
        results[name] = json.loads(lines[-1][len("RESULT "):])
        r = results[name]
        print(f"{name:24s} {r['steps_per_second']:>12,.0f} steps/s  peak host {r['peak_host_mib']:7.0f} MiB  "
              f"return {r['final_return']:.3f}", flush=True)

    print(f"\nenv={args.env} device={args.device} threads={args.threads} users: native DQN {args.native_envs}, "
          f"native PPO {args.native_ppo_envs}, SB3 DQN 1, SB3 PPO {args.sb3_ppo_envs}")
    width = max(11, *(len(name) for name in results))
    print(f"{'agent':{width}s} {'steps/s':>12s} {'x SB3':>8s} {'peak host MiB':>14s} {'peak GPU MiB':>13s}  return by env steps")
    for name, r in results.items():
        baseline = results.get("sb3_" + parse_spec(name)[0].split("_", 1)[1])
        ratio = r["steps_per_second"] / baseline["steps_per_second"] if baseline else float("nan")
        gpu = f"{r['peak_gpu_mib']:.0f}" if r["peak_gpu_mib"] is not None else "-"
        curve = "  ".join(f"{s}:{v:.2f}" for s, v in r["curve"])
        print(f"{name:{width}s} {r['steps_per_second']:12,.0f} {ratio:8.1f} {r['peak_host_mib']:14.0f} {gpu:>13s}  {curve}")
    print(f"\nreturn = mean episodic return of the greedy policy on {args.eval_users} held-out simulated sessions")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


def _forwarded(args: argparse.Namespace) -> list[str]:
    return ["--env", args.env, "--device", args.device, "--points", str(args.points),
            "--native-envs", str(args.native_envs), "--native-ppo-envs", str(args.native_ppo_envs), "--sb3-ppo-envs", str(args.sb3_ppo_envs),
            "--eval-users", str(args.eval_users), "--max-steps", str(args.max_steps),
            "--threads", str(args.threads), "--seed", str(args.seed)] + (
            ["--history-length", str(args.history_length)] if args.history_length is not None else [])


if __name__ == "__main__":
    main()
