"""Benchmark: training steps/s of recarena's SB3 agents (LLM-state features extractor) on one CPU thread.

Env: the synthetic simulator at MovieLens-1M size (6,040 users, 3,706 items, 384-d item encodings,
history 20). For DQN and PPO it times, in the same run and process:

* ``env only``: uniformly random actions through the SB3 VecEnv adapter (the ceiling);
* ``stock SB3``: ``DQN/PPO("MultiInputPolicy")`` with SB3's default flatten extractor;
* ``recarena``: ``recarena.agents.sb3_agents`` DQN/PPO (history pooled by the features extractor + llm_state),
  with the stock run's hyperparameters (batch size, train frequency, net_arch [64, 64]), so the
  ratio isolates the cost of the LLM-state extractor.

and prints user-steps/s (learning included) and the ratio recarena / stock.

    python bench/sb3_agents.py                       # 1 env, 3000 steps each
    python bench/sb3_agents.py --num-envs 16 --steps 8000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ML1M_SIZED = {"n_users": 6040, "n_items": 3706, "embedding_dim": 384}


def make_env(num_envs: int):
    from recarena.envs.vector_env import RecommendationVectorEnv

    return RecommendationVectorEnv(num_envs=num_envs, simulator="synthetic", simulator_config=dict(ML1M_SIZED),
                                   max_steps=50, mask_consumed=False)


def time_env_only(num_envs: int, steps: int) -> float:
    from recarena.envs.sb3 import SB3VecEnvAdapter

    venv = SB3VecEnvAdapter(make_env(num_envs))
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    n = steps // num_envs
    start = time.perf_counter()
    for _ in range(n):
        venv.step(rng.integers(0, venv.action_space.n, size=num_envs))
    return n * num_envs / (time.perf_counter() - start)


def time_stock(algorithm: str, num_envs: int, steps: int, warmup: int) -> float:
    from stable_baselines3 import DQN, PPO

    from recarena.envs.sb3 import SB3VecEnvAdapter

    venv = SB3VecEnvAdapter(make_env(num_envs))
    if algorithm == "dqn":
        model = DQN("MultiInputPolicy", venv, learning_starts=warmup, buffer_size=50_000, seed=0, device="cpu")
    else:
        model = PPO("MultiInputPolicy", venv, n_steps=max(64 // num_envs, 8), batch_size=64, seed=0, device="cpu")
    model.learn(warmup, reset_num_timesteps=False)
    start, before = time.perf_counter(), model.num_timesteps
    model.learn(steps, reset_num_timesteps=False)
    return (model.num_timesteps - before) / (time.perf_counter() - start)


def time_recarena(algorithm: str, num_envs: int, steps: int, warmup: int, pooler: str) -> float:
    from recarena.agents.registry import make_agent

    env = make_env(num_envs)
    # Hyperparameters matched to the stock run, so the ratio isolates the features extractor.
    config = {"features": {"pooler": pooler}, "net_arch": [64, 64]}
    if algorithm == "dqn":
        config.update(learning_starts=warmup, buffer_size=50_000, batch_size=32, train_freq=4,
                      target_update_interval=10_000, gamma=0.99)
    else:
        config.update(n_steps=max(64 // num_envs, 8), batch_size=64, n_epochs=10, gamma=0.99, ent_coef=0.0)
    agent = make_agent(algorithm, env.n_items, config, env=env, seed=0, total_steps=warmup + steps)
    agent.learn(env, warmup)
    start, before = time.perf_counter(), agent.steps_done
    agent.learn(env, steps)
    return (agent.steps_done - before) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3000, help="timed user-steps per agent")
    parser.add_argument("--warmup", type=int, default=1000, help="untimed user-steps first (DQN: before learning)")
    parser.add_argument("--pooler", default="mean", choices=["mean", "gru", "attention"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"ML-1M-sized synthetic env, num_envs={args.num_envs}, torch threads={torch.get_num_threads()}, "
          f"pooler={args.pooler}, {args.steps} timed steps after {args.warmup} warm-up")
    env_sps = time_env_only(args.num_envs, args.steps)
    print(f"{'env only (random actions)':34s} {env_sps:10.0f} steps/s")
    for algorithm in ("dqn", "ppo"):
        stock = time_stock(algorithm, args.num_envs, args.steps, args.warmup)
        ours = time_recarena(algorithm, args.num_envs, args.steps, args.warmup, args.pooler)
        print(f"{'stock SB3 ' + algorithm.upper() + ' (MultiInputPolicy)':34s} {stock:10.0f} steps/s")
        print(f"{'recarena ' + algorithm.upper() + ' (LLM-state extractor)':34s} {ours:10.0f} steps/s"
              f"   ratio recarena/stock = {ours / stock:.2f}")


if __name__ == "__main__":
    main()
