"""Gymnasium envs of simulated recommendation users.

``recarena/ML100K-v3``, ``recarena/ML1M-v3`` (logged MovieLens users; ``-v2``, ``-v1``, ``-v0``: earlier
versions of them, kept for comparison) and ``recarena/Synthetic-v0``
(data-free), registered by ``import recarena``. ``gymnasium.make(id)`` builds a
:class:`RecommendationEnv`; ``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``
a :class:`RecommendationVectorEnv`; :class:`recarena.envs.sb3.SB3VecEnvAdapter` hands the latter to SB3.

The env classes are imported on first use, so registering the ids does not import torch.
"""

from __future__ import annotations

from typing import Any

from recarena.envs.registration import ENV_KWARGS, register_envs

register_envs()

_LAZY = {
    "RecommendationEnv": "recarena.envs.recommendation_env",
    "RecommendationVectorEnv": "recarena.envs.vector_env",
}

__all__ = ["ENV_KWARGS", "RecommendationEnv", "RecommendationVectorEnv", "register_envs"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recarena.envs' has no attribute {name!r}")
