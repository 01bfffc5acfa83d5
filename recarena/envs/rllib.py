"""RLlib on the registered ids: the env part of an RLlib ``AlgorithmConfig`` (the ``rllib`` extra).

RLlib's ``SingleAgentEnvRunner`` builds its env as ``gymnasium.make_vec(config.env, num_envs=...,
vectorization_mode=config.gym_env_vectorize_mode, **config.env_config)``; with ``"vector_entry_point"``
that is recarena's :class:`~recarena.envs.vector_env.RecommendationVectorEnv`, N users stepped as one
batch. :func:`configure_env` sets what RLlib needs of it, each of which fails silently or late if missed:

- NumPy output (``as_numpy=True``): RLlib unbatches and stores NumPy observations.
- Next-step autoreset (``autoreset_mode="NextStep"``): after an episode ends the runner records the
  *next* step's observation as the new episode's reset observation and ignores that step's reward.
  Under same-step autoreset it would record the next session's first observation as the ended
  session's last.
- A flat observation: RLlib's default PPO catalog builds no encoder for a ``Dict``; the
  ``FlattenObservations`` env-to-module connector concatenates the keys into one vector.
- ``slate_size=1`` (a ``Discrete`` action): RLlib's ``MultiDiscrete`` distribution draws slots
  independently and can repeat an item in a slate, which the env refuses.
- The ids registered in every env-runner process: the env is named ``"recarena:<id>"`` so that
  Gymnasium imports recarena before looking the id up (remote runners start fresh interpreters).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from recarena.core.errors import ConfigError
from recarena.envs.common import check_options
from recarena.envs.registration import ENV_KWARGS, VECTOR_ENTRY_POINT

RLLIB_INSTALL_HINT = (
    "RLlib is not installed: the rllib extra, pip install -e '.[rllib]' in a virtualenv of its own "
    "(ray[rllib] 2.60 pins gymnasium 1.2.2; make rllib-install; README: RLlib)"
)
REQUIRED_OPTIONS: dict[str, Any] = {"as_numpy": True, "autoreset_mode": "NextStep"}
"""Vector-env options RLlib's env runner needs (module docstring); :func:`rllib_env_config` sets them."""


def rllib_env_config(env_id: str, **options: Any) -> dict[str, Any]:
    """The ``env_config`` for RLlib: the env ``options`` plus :data:`REQUIRED_OPTIONS`, checked now
    (with the id's registered defaults) so a bad option fails before Ray starts.

    Raises :class:`ConfigError` for an unknown id, an invalid option, one that contradicts what
    RLlib needs, or a ``slate_size`` other than 1.
    """
    spec = gym.registry.get(env_id.split(":", 1)[-1])
    if spec is None or spec.vector_entry_point != VECTOR_ENTRY_POINT:
        raise ConfigError(f"env: {env_id!r} is not a registered recarena id; the ids are {sorted(ENV_KWARGS)}")
    for name, needed in REQUIRED_OPTIONS.items():
        if name in options and options[name] != needed:
            raise ConfigError(f"{name}: RLlib needs {needed!r}, got {options[name]!r} (recarena.envs.rllib)")
    if options.get("slate_size", 1) != 1:
        raise ConfigError(
            f"slate_size: RLlib needs 1, got {options['slate_size']!r} (its MultiDiscrete policies can "
            "repeat an item in a slate; the native PPO draws slates without repeats)"
        )
    if "autoreset" in options or "final_observation" in options:
        raise ConfigError("autoreset, final_observation: set by recarena.envs.rllib for RLlib, do not pass them")
    check_options({**spec.kwargs, **options})
    return {**options, **REQUIRED_OPTIONS}


def configure_env(config: Any, env_id: str, *, num_envs: int = 1, **options: Any) -> Any:
    """Point an RLlib ``AlgorithmConfig`` at a recarena id, stepped by the native vector env.

    Sets ``.environment(env="recarena:<env_id>", env_config=rllib_env_config(env_id, **options))`` and
    ``.env_runners(num_envs_per_env_runner=num_envs, gym_env_vectorize_mode="vector_entry_point",
    env_to_module_connector=<FlattenObservations>)``; returns ``config``. Other settings (runners,
    training, seeds) stay the caller's. Needs the ``rllib`` extra (ImportError naming it otherwise).
    """
    try:
        from ray.rllib.connectors.env_to_module import FlattenObservations
    except ImportError as error:
        raise ImportError(f"{RLLIB_INSTALL_HINT} [{error}]") from error
    if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
        raise ConfigError(f"num_envs: expected an integer >= 1, got {num_envs!r}")
    env_config = rllib_env_config(env_id, **options)
    name = env_id if ":" in env_id else f"recarena:{env_id}"

    def flatten(env: Any = None, spaces: Any = None, device: Any = None) -> Any:
        return FlattenObservations()

    config.environment(env=name, env_config=env_config)
    config.env_runners(
        num_envs_per_env_runner=num_envs,
        gym_env_vectorize_mode="vector_entry_point",
        env_to_module_connector=flatten,
    )
    return config
