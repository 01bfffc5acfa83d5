"""Train RLlib's PPO on a registered recarena id, stepped by the native vector env (needs the rllib extra).

    python examples/rllib_ppo.py --iterations 3 --num-envs 8

RLlib builds the env by id, ``gymnasium.make_vec("recarena/ML100K-v1", num_envs=N,
vectorization_mode="vector_entry_point", ...)``: one ``RecommendationVectorEnv`` of N users.
``recarena.envs.rllib.configure_env`` sets what RLlib needs of it (NumPy output, next-step
autoreset, flattened observations, single-item actions). Sampling runs in this process (no remote
env runners) with one learner, on one or two CPUs. The first use of ``recarena/ML100K-v1`` on a
machine fits and caches the simulator's models (about 4 minutes; README, Environments).

The policy sees the ``llm_state`` and ``responses`` keys (continuous features); the ``history`` key
holds raw item ids, which flattening would hand an MLP as magnitudes. Install the extra into a
virtualenv of its own (ray[rllib] 2.60 pins gymnasium 1.2.2) with ``make rllib-install`` and run
this with ``.venv-rllib/bin/python`` (README: RLlib).
"""

from __future__ import annotations

import argparse
import logging
import math
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="recarena/ML100K-v1", help="a registered recarena id")
    parser.add_argument("--iterations", type=int, default=3, help="PPO training iterations")
    parser.add_argument("--num-envs", type=int, default=8, help="users stepped together (vector env size)")
    parser.add_argument("--batch", type=int, default=1000, help="env steps sampled per iteration")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig

    from recarena.envs.rllib import configure_env

    logging.getLogger("ray.rllib").setLevel(logging.ERROR)  # RLlib's own notices (new API stack, ...)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    config = configure_env(PPOConfig(), args.env, num_envs=args.num_envs, observation_keys=["llm_state", "responses"])
    config.env_runners(num_env_runners=0)  # sample in this process
    config.learners(num_learners=0)
    config.training(train_batch_size_per_learner=args.batch, minibatch_size=min(250, args.batch), num_epochs=4, lr=3e-4)
    config.debugging(seed=args.seed, log_level="ERROR")

    algo = config.build_algo()
    start, steps = time.perf_counter(), 0
    for iteration in range(1, args.iterations + 1):
        result = algo.train()
        runners = result["env_runners"]
        steps = int(runners["num_env_steps_sampled_lifetime"])
        episode_return = float(runners.get("episode_return_mean", math.nan))
        print(f"iteration {iteration}: env steps {steps}, episodes {int(runners.get('num_episodes', 0))}, "
              f"mean episode return {episode_return:.3f}")
    seconds = time.perf_counter() - start
    print(f"{steps} env steps in {seconds:.1f} s ({steps / seconds:.0f} steps/s, learning included)")
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
