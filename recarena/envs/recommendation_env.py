"""The single-user Gymnasium env: one simulated user, i.e. the batch of one of the vector env."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from recarena.envs.common import action_array
from recarena.envs.single_user import SingleUserStep
from recarena.envs.vector_env import RecommendationVectorEnv


class RecommendationEnv(gym.Env):
    """Recommend items to one simulated user built from real logged histories.

    ## Description

    A user starts a session from a (real or synthetic) logged history. Each step the agent shows
    a slate of items; the user's simulator (``simulators``: preference model, choice, boredom and
    leave models) responds, possibly consumes one item, and may leave. The env is the batch of one
    of :class:`recarena.envs.RecommendationVectorEnv`, with the same dynamics; on the CPU the stock
    simulators (synthetic users, logged users with the rating-only or the learned choice) step in
    NumPy (:mod:`recarena.envs.single_user`), reproducing the batched step (bit for bit, the learned
    choice's GRU state to float32 tolerance) at a fraction of its per-step cost.

    ## Action Space

    ``Discrete(n_items)`` (an item index) when ``slate_size == 1``, else
    ``MultiDiscrete([n_items] * slate_size)``: ``slate_size`` *distinct* item indices. Integer
    actions only; out-of-range, repeated or wrongly shaped actions raise ``ValueError``/``TypeError``.
    Already-consumed items are allowed but, with ``mask_consumed=True``, marked unavailable in
    ``info["action_mask"]`` and :meth:`action_masks` (used by sb3-contrib's MaskablePPO).

    ## Observation Space

    ``Dict`` with (by default) all of:

    | key | space | meaning |
    |---|---|---|
    | ``history`` | ``Box(-1, n_items - 1, (H,), int64)`` | last H consumed items, newest last, -1 = padding |
    | ``responses`` | ``Box(0, 5, (H,), float32)`` | the user's rating-scale response to each, 0 = padding |
    | ``llm_state`` | ``Box(-1, 1, (d,), float32)`` | response-weighted, L2-normalised mean of the cached LLM encodings of the history |

    ## Rewards

    ``reward=None`` (default): the simulator's configured reward (``"like"`` by default: 1 when the
    user consumed and liked an item). Or one of ``"click"``, ``"like"``, ``"rating"`` (the 1-5
    response, 0 without a click) and ``"dwell"`` (response / 5 on a click). Always finite.

    ## Starting State

    ``reset`` draws a logged user and a history prefix (the simulator's sampler); the observation
    shows the last H items of that prefix.

    ## Episode End

    ``terminated``: the user left (patience ran out, or the leave hazard fired).
    ``truncated``: the session reached ``max_steps`` steps.

    ## Arguments

    ``gymnasium.make("recarena/ML1M-v0", **kwargs)`` with any of:

    - ``simulator``: registry name (``"logged"``, ``"synthetic"``, a plug-in) or a ``Simulator``.
    - ``data``: what the simulator is built from (``"ml-1m"``, ``"ml-100k"``, a path, ``None``).
    - ``simulator_config``: dict of the simulator's config options.
    - ``slate_size`` (1), ``max_steps`` (50), ``reward`` (None), ``history_length`` (None =
      the simulator's, 20 by default), ``observation_keys`` (all three), ``mask_consumed`` (True),
      ``validate_actions`` (True), ``device`` ("cpu").

    ``info`` after ``reset`` and ``step``: ``action_mask`` (bool [n_items]); after ``step`` also
    ``clicked``, ``liked``, ``from_log`` (the response came from the logged rating), ``item``
    (consumed item, -1 for none) and ``response``.

    ## Version History

    - v3 (``recarena/ML100K-v3``, ``recarena/ML1M-v3``): the v2 users, except that after each chosen
      item the user ends the session with the probability the training log's sessions show at that
      position in the session and like (``leave.model: sessions``, sessions split at 1-hour gaps), in
      place of the hand-set patience costs of a dislike and bonus of a like (a no-click still costs
      patience). Simulator ``"logged"`` (its defaults).
    - v2 (``recarena/ML100K-v2``, ``recarena/ML1M-v2``): the v1 users, except that a film the log
      does not answer is rated with a fixed draw per (user, item) from the preference model's
      calibrated ordered probit (``answers: calibrated``, ``answer_seed``; fitted on validation
      ratings) instead of its mean prediction, and a like is a response that rounds to 4 or more
      (``like_rounding``: >= 3.5). Simulator ``"logged-v2"``.
    - v1 (``recarena/ML100K-v1``, ``recarena/ML1M-v1``): the user chooses from the slate with the
      learned choice model (``simulators.choice``): a multinomial logit over a next-item model's
      probability (a GRU over the history, learned from the training log's next events), the
      preference model's rating and boredom, plus a no-choice option, with weights fitted by maximum
      likelihood on validation events; an already consumed item is never chosen when the log has no
      repeats; answers with the mean prediction, likes at >= 4. Simulator ``"logged-v1"``.
    - v0: initial version: the rating-only choice (``response / temperature`` against a no-choice
      rating), simulator ``"logged-rating"``; kept for comparison.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        # incremental=False: the batch of one is the reference the NumPy step reproduces bit for bit.
        self._batch = RecommendationVectorEnv(
            num_envs=1, autoreset=False, incremental=False, render_mode=render_mode, **kwargs
        )
        self.render_mode = None
        self.options = self._batch.options
        self.simulator = self._batch.simulator
        self.n_items = self._batch.n_items
        self.observation_space = self._batch.single_observation_space
        self.action_space = self._batch.single_action_space
        # On the CPU, the stock simulators step in NumPy (same trajectories, no torch dispatch per op).
        self._fast = SingleUserStep.create(self._batch)
        self._episode_over = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start a session; ``seed`` fixes it (the torch generator is seeded from ``self.np_random``)."""
        super().reset(seed=seed)
        if options:
            raise ValueError(f"RecommendationEnv.reset takes no options, got {sorted(options)}")
        self._batch.np_random = self.np_random  # one random stream: the env's np_random
        self._episode_over = False
        if self._fast is not None:
            return self._fast.reset(), {"action_mask": self._fast.action_mask()}
        observation, _ = self._batch.reset(seed=None)
        return _row(observation), {"action_mask": self.action_masks()}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        """Show the slate ``action`` to the user; see the class docstring."""
        if self._episode_over:
            raise gym.error.ResetNeeded("the episode is over (or never started): call reset() before step()")
        k = self._batch.slate_size
        if k == 1 and type(action) is int and 0 <= action < self.n_items:
            slate = np.array([action], dtype=np.int64)  # the common cases first
        elif type(action) is np.ndarray and action.dtype == np.int64 and action.shape == (k,):
            slate = action
            if self._fast is not None:
                self._fast.check(slate)
        else:
            slate = self._as_slate(action)
            if self._fast is not None:
                self._fast.check(slate)
        if self._fast is not None:
            observation, reward, terminated, truncated, step_info = self._fast.step(slate)
            self._episode_over = terminated or truncated
            return observation, reward, terminated, truncated, step_info
        observation, reward, terminated, truncated, info = self._batch.step(torch.from_numpy(slate.reshape(1, k)))
        terminated, truncated = bool(terminated[0]), bool(truncated[0])
        self._episode_over = terminated or truncated
        step_info = {
            "action_mask": self.action_masks(),
            "clicked": bool(info["clicked"][0]),
            "liked": bool(info["liked"][0]),
            "from_log": bool(info["from_log"][0]),
            "item": int(info["item"][0]),
            "response": float(info["response"][0]),
        }
        return _row(observation), float(reward[0]), terminated, truncated, step_info

    def action_masks(self) -> np.ndarray:
        """Bool [n_items]: True where the item may be recommended (not yet consumed, if masked)."""
        if self._fast is not None and not self._batch._needs_reset:
            return self._fast.action_mask()
        return self._batch.action_masks()[0].cpu().numpy()

    def _as_slate(self, action: Any) -> np.ndarray:
        """``action`` as int64 [k]; ``TypeError``/``ValueError`` saying what was expected."""
        k = self._batch.slate_size
        if isinstance(action, (bool, np.bool_)):
            raise TypeError(f"action must be an integer item index, got the bool {action!r}")
        if isinstance(action, torch.Tensor):
            action = action.detach().cpu().numpy()
        try:
            array = action_array(action, self.n_items)
        except TypeError:
            raise TypeError(
                f"action must be integer item indices (int64), got dtype {np.asarray(action).dtype} ({action!r})"
            ) from None
        expected = [(), (1,)] if k == 1 else [(k,)]
        if array.shape not in expected:
            what = "a scalar item index" if k == 1 else f"an array of {k} distinct item indices, shape ({k},)"
            raise ValueError(f"action must be {what}, got shape {array.shape}")
        return array.reshape(k)

    def close(self) -> None:
        self._batch.close()


def _row(batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Row 0 of a batched observation as NumPy arrays (the single env's observation)."""
    return {key: value[0].cpu().numpy().copy() for key, value in batch.items()}
