"""RLlib on the registered ids (recarena.envs.rllib): the env config in the default suite (no Ray
needed); RLlib PPO itself, marked slow and rllib (skipped where the rllib extra is not installed)."""

from __future__ import annotations

import math
import re
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from recarena.core.errors import ConfigError
from recarena.envs import RecommendationVectorEnv
from recarena.envs.rllib import REQUIRED_OPTIONS, configure_env, rllib_env_config

TINY = {"n_users": 40, "n_items": 30, "embedding_dim": 8}
NEVER_LEAVE = {**TINY, "leave": {"no_click_cost": 0.0, "dislike_cost": 0.0, "hazard": 0.0}}


def test_env_config_builds_the_native_vector_env_with_numpy_next_step_output():
    config = rllib_env_config("recarena/Synthetic-v0", simulator_config=TINY, max_steps=4)
    assert config == {"simulator_config": TINY, "max_steps": 4, **REQUIRED_OPTIONS}
    env = gym.make_vec("recarena:recarena/Synthetic-v0", num_envs=3, vectorization_mode="vector_entry_point", **config)
    assert isinstance(env, RecommendationVectorEnv)
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert env.single_action_space == gym.spaces.Discrete(30)
    observation, _ = env.reset(seed=0)
    assert all(isinstance(value, np.ndarray) for value in observation.values())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"as_numpy": False}, "as_numpy: RLlib needs True, got False"),
        ({"autoreset_mode": "SameStep"}, "autoreset_mode: RLlib needs 'NextStep', got 'SameStep'"),
        ({"slate_size": 3}, "slate_size: RLlib needs 1, got 3"),
        ({"autoreset": False}, "autoreset, final_observation: set by recarena.envs.rllib"),
        ({"max_step": 5}, "unknown env option(s) ['max_step'] (did you mean 'max_steps'?)"),
        ({"simulator_config": {"n_items": 0}}, "simulator_config.n_items"),
    ],
)
def test_env_config_refuses_what_rllib_cannot_use_before_anything_is_built(options, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        rllib_env_config("recarena/Synthetic-v0", **options)


def test_env_config_refuses_an_id_that_is_not_recarenas():
    with pytest.raises(ConfigError, match=r"^env: 'CartPole-v1' is not a registered recarena id; the ids are \["):
        rllib_env_config("CartPole-v1")


def test_configure_env_without_rllib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray.rllib.connectors.env_to_module", None)  # import fails
    with pytest.raises(ImportError, match=r"^RLlib is not installed: the rllib extra, pip install -e '\.\[rllib\]'"):
        configure_env(object(), "recarena/Synthetic-v0")


@pytest.mark.slow
@pytest.mark.rllib
def test_rllib_ppo_trains_on_the_native_vector_env_by_id():
    """Two PPO iterations on tiny synthetic users; every session lasts exactly max_steps (users never
    leave), which RLlib reports only if it reads the env's next-step autoreset right."""
    import logging

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig

    logging.getLogger("ray.rllib").setLevel(logging.ERROR)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        config = configure_env(PPOConfig(), "recarena/Synthetic-v0", num_envs=4, max_steps=5,
                               simulator_config=NEVER_LEAVE, reward="click")
        config.env_runners(num_env_runners=0).learners(num_learners=0)
        config.training(train_batch_size_per_learner=200, minibatch_size=50, num_epochs=2)
        config.debugging(seed=0, log_level="ERROR")
        algo = config.build_algo()
        assert isinstance(algo.env_runner.env.unwrapped, RecommendationVectorEnv)
        for iteration in (1, 2):
            result = algo.train()
            runners = result["env_runners"]
            assert runners["num_env_steps_sampled_lifetime"] >= 200 * iteration
            assert runners["num_episodes"] > 0 and runners["episode_len_mean"] == 5
            assert math.isfinite(runners["episode_return_mean"]) and 0 <= runners["episode_return_mean"] <= 5
            learner = result["learners"]["default_policy"]
            assert learner["num_module_steps_trained_lifetime"] > 0 and math.isfinite(learner["total_loss"])
        algo.stop()
    finally:
        ray.shutdown()
