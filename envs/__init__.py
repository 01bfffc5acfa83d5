"""Gymnasium envs of simulated recommendation users; importing this package registers the ids.

``recgym/ML100K-v0``, ``recgym/ML1M-v0`` (logged MovieLens users) and ``recgym/Synthetic-v0``
(data-free). ``gymnasium.make(id)`` builds a :class:`RecommendationEnv`;
``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` a
:class:`RecommendationVectorEnv`; :class:`envs.sb3.SB3VecEnvAdapter` hands the latter to SB3.
"""

from envs.recommendation_env import RecommendationEnv
from envs.registration import ENV_KWARGS, register_envs
from envs.vector_env import RecommendationVectorEnv

register_envs()

__all__ = ["ENV_KWARGS", "RecommendationEnv", "RecommendationVectorEnv", "register_envs"]
