"""Stable-Baselines3 adapter: the native vector env as an SB3 ``VecEnv``.

Stock SB3 algorithms (PPO, A2C, DQN) and sb3-contrib's MaskablePPO train on
``SB3VecEnvAdapter(gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point"))``
directly. The adapter converts tensors to NumPy (SB3 keeps its buffers on the host) and maps
Gymnasium's same-step autoreset onto SB3's convention, which is the same one: a finished env's
returned observation already starts the next episode and ``infos[i]["terminal_observation"]``
holds the last one; ``infos[i]["TimeLimit.truncated"]`` marks a session-cap ending so SB3
bootstraps from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from recarena.envs.vector_env import RecommendationVectorEnv

USER_INFO_KEYS = ("clicked", "liked", "from_log", "item", "response")
"""The per-user step info of the vector env that each of SB3's per-env info dicts carries."""


def _numpy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _numpy(item) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class SB3VecEnvAdapter(VecEnv):
    """Present a :class:`RecommendationVectorEnv` (or a wrapper of one) as an SB3 ``VecEnv``.

    ``infos[i]`` holds user i's ``clicked``, ``liked``, ``from_log``, ``item`` and ``response`` (as
    the single env's ``info`` does), plus ``terminal_observation``/``TimeLimit.truncated`` when the
    user's episode ended. ``env_method("action_masks")`` returns one bool mask [n_items] per env,
    which is what MaskablePPO asks for. ``seed(s)`` seeds the next ``reset`` (one seed for the whole batch;
    the per-env seeds SB3 passes ``s, s+1, ...`` all derive from ``s``).
    """

    def __init__(self, vector_env: gym.vector.VectorEnv) -> None:
        unwrapped = vector_env.unwrapped
        if not isinstance(unwrapped, RecommendationVectorEnv):
            raise TypeError(
                f"SB3VecEnvAdapter needs a RecommendationVectorEnv, got {type(unwrapped).__name__}"
            )
        if not unwrapped.autoreset or unwrapped.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError("SB3VecEnvAdapter needs a vector env with same-step autoreset (autoreset=True)")
        if not unwrapped.final_observation:
            raise ValueError("SB3VecEnvAdapter needs final_observation=True (SB3 reads terminal_observation)")
        self.vector_env = vector_env
        self.venv_unwrapped = unwrapped
        self._actions: np.ndarray | None = None
        self.render_mode = None
        super().__init__(
            unwrapped.num_envs, unwrapped.single_observation_space, unwrapped.single_action_space
        )

    # SB3 VecEnv API -----------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]
        self._reset_seeds()
        self._reset_options()
        observation, info = self.vector_env.reset(seed=seed)
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return _numpy(observation)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        actions, self._actions = self._actions, None
        observation, reward, terminated, truncated, info = self.vector_env.step(actions)
        observation = _numpy(observation)
        terminated, truncated = _numpy(terminated), _numpy(truncated)
        dones = terminated | truncated
        columns = [_numpy(info[key]).tolist() for key in USER_INFO_KEYS]  # Python bool / int / float
        infos: list[dict[str, Any]] = [dict(zip(USER_INFO_KEYS, row, strict=True)) for row in zip(*columns, strict=True)]
        done_rows = np.flatnonzero(dones)
        if len(done_rows):
            final = _numpy(info["final_obs"])
            for row in done_rows:
                infos[row]["terminal_observation"] = {key: value[row] for key, value in final.items()}
                infos[row]["TimeLimit.truncated"] = bool(truncated[row] and not terminated[row])
        return observation, _numpy(reward).astype(np.float32), dones, infos

    def close(self) -> None:
        self.vector_env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv_unwrapped, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if indices is not None and list(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError("the users of a vector env share their attributes: set_attr applies to all envs")
        setattr(self.venv_unwrapped, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        rows = list(self._get_indices(indices))
        if method_name == "action_masks":
            masks = _numpy(self.venv_unwrapped.action_masks())
            return [masks[row] for row in rows]
        result = getattr(self.venv_unwrapped, method_name)(*method_args, **method_kwargs)
        return [result for _ in rows]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def action_masks(self) -> np.ndarray:
        """Bool [N, n_items] masks as one array (a faster path than ``env_method``)."""
        return _numpy(self.venv_unwrapped.action_masks())
