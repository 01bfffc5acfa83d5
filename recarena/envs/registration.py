"""Gymnasium registration of the recarena envs (run on ``import recarena``).

Each id has a lazy ``"module:Class"`` entry point for :func:`gymnasium.make` and a
``vector_entry_point`` for ``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``.
Bump the ``-vN`` suffix whenever the dynamics or spaces of an id change.
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

ENTRY_POINT = "recarena.envs.recommendation_env:RecommendationEnv"
VECTOR_ENTRY_POINT = "recarena.envs.vector_env:RecommendationVectorEnv"

ENV_KWARGS: dict[str, dict[str, Any]] = {
    # Logged users of MovieLens-100K / -1M (bundled data) who choose with the learned choice model
    # (next-item model + preference model + boredom, weights fitted on validation events), answer
    # films the log does not answer with a fixed draw from the calibrated rating distribution, like
    # a response that rounds to 4 or more, and end a session after a chosen item as often as the
    # logged sessions do (simulator "logged", its defaults).
    "recarena/ML100K-v3": {"simulator": "logged", "data": "ml-100k"},
    "recarena/ML1M-v3": {"simulator": "logged", "data": "ml-1m"},
    # v2: the same users leaving by the patience rules alone (simulator "logged-v2").
    "recarena/ML100K-v2": {"simulator": "logged-v2", "data": "ml-100k"},
    "recarena/ML1M-v2": {"simulator": "logged-v2", "data": "ml-1m"},
    # v1: the same users answering with the preference model's mean prediction and liking a
    # response >= 4 (simulator "logged-v1": "logged" with answers: mean, like_rounding: false).
    "recarena/ML100K-v1": {"simulator": "logged-v1", "data": "ml-100k"},
    "recarena/ML1M-v1": {"simulator": "logged-v1", "data": "ml-1m"},
    # v0: the same users choosing by the rating-only logit (kept for comparison).
    "recarena/ML100K-v0": {"simulator": "logged-rating", "data": "ml-100k"},
    "recarena/ML1M-v0": {"simulator": "logged-rating", "data": "ml-1m"},
    # Data-free users with known latent preferences: fast, for tests and examples.
    "recarena/Synthetic-v0": {"simulator": "synthetic"},
}
"""The registered ids and their default keyword arguments (any env option may be overridden)."""


def register_envs() -> None:
    """Register every recarena id (idempotent)."""
    for env_id, kwargs in ENV_KWARGS.items():
        if env_id in registry:
            continue
        register(
            id=env_id,
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            kwargs=dict(kwargs),
        )
