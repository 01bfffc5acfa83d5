"""Rollout comparisons shared by the env tests: exact equality of nested rollout traces, and a digest
of a random-action rollout (test_envs.py, test_calibrated_answers.py and the learned-choice env tests)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def assert_same(a, b) -> None:
    """Nested dicts, tuples and lists of arrays equal element for element, exactly."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        np.testing.assert_array_equal(a, b)


def trajectory_digest(env: gym.Env, seed: int, steps: int) -> tuple[str, int, float]:
    """(SHA-256 prefix of every observation, reward, flag and info value, clicks, return) of a
    random-action rollout that resets whenever an episode ends."""
    import hashlib

    digest = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, dict):
            for key in sorted(value):
                digest.update(key.encode())
                feed(value[key])
        else:
            array = np.asarray(value)
            digest.update(str(array.dtype).encode())
            digest.update(array.tobytes())

    rng = np.random.default_rng(seed + 1000)
    observation, info = env.reset(seed=seed)
    feed(observation)
    feed(info)
    space, clicks, total = env.action_space, 0, 0.0
    for _ in range(steps):
        if isinstance(space, gym.spaces.Discrete):
            action = int(rng.integers(space.n))
        else:
            action = rng.choice(space.nvec[0], size=len(space.nvec), replace=False)
        observation, reward, terminated, truncated, info = env.step(action)
        feed(observation)
        feed(np.float64(reward))
        feed(np.array([terminated, truncated]))
        feed(info)
        clicks += info["clicked"]
        total += reward
        if terminated or truncated:
            observation, info = env.reset()
            feed(observation)
            feed(info)
    return digest.hexdigest()[:16], clicks, round(total, 4)
