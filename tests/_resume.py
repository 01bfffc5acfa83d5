"""Train an agent straight through and interrupted by a checkpoint, as train.py resumes a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def straight_and_resumed(build: Callable[[], Any], make_env: Callable[[], Any], first: int, rest: int) -> tuple[Any, Any]:
    """(agent trained ``first`` then ``rest`` user-steps on one env, agent trained ``first`` steps, then
    restored with its env's state into a fresh agent and env (first reset to another state) and trained
    ``rest`` more); the two should end identical."""
    env = make_env()
    straight = build()
    straight.learn(env, first)
    straight.learn(env, rest)

    env = make_env()
    interrupted = build()
    interrupted.learn(env, first)
    tensors, metadata = interrupted.checkpoint_state()
    env_state = env.get_state()
    resumed, fresh = build(), make_env()
    resumed.restore_checkpoint_state(tensors, metadata)
    fresh.reset(seed=999)  # another state, overwritten by the checkpoint's
    fresh.set_state(env_state)
    resumed.learn(fresh, rest)
    return straight, resumed
