"""Episode bookkeeping and simulator diagnostics for the native agents, kept on the device.

Every quantity is accumulated in device tensors each step (no host synchronisation); :meth:`log`
reads them once, writes the stable TensorBoard tags and starts a new window:

- ``charts/episodic_return``, ``charts/session_length``: means over sessions that ended in the window;
- ``charts/ctr``: clicks per user-step; ``charts/sps``: user-steps per wall-clock second;
- ``sim/leave_rate``: share of ended sessions that ended by the user leaving (not the session cap);
- ``sim/coverage``: share of the catalogue recommended in the window;
- ``sim/diversity``: mean ``1 - cos`` between consecutive recommendations to the same user.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from recarena.agents.base import ScalarLogger

SUMS = ("episodes", "return", "length", "clicks", "steps", "left", "diversity", "pairs")
"""The window's sums, in the order of :attr:`SessionStats.sums`."""


class SessionStats:
    """Per-user running episode return/length plus windowed sums, for ``num_envs`` users."""

    def __init__(self, num_envs: int, item_embeddings: torch.Tensor, device: torch.device) -> None:
        self.item_embeddings = torch.nn.functional.normalize(item_embeddings.to(device, torch.float32), dim=1)
        self.episode_return = torch.zeros(num_envs, device=device)
        self.episode_length = torch.zeros(num_envs, device=device)
        self.previous_item = torch.full((num_envs,), -1, dtype=torch.int64, device=device)
        self.sums = torch.zeros(len(SUMS), device=device)
        self.shown = torch.zeros(item_embeddings.shape[0], dtype=torch.bool, device=device)
        self._steps_per_update = torch.tensor(float(num_envs), device=device)  # made once: no per-step copy
        self._clock = time.perf_counter()

    def update(self, slate: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
               truncated: torch.Tensor, clicked: torch.Tensor) -> None:
        """Account for one vector step: ``slate`` [N, k] shown, then reward/terminated/truncated [N]."""
        first = slate[:, 0]
        has_previous = (self.previous_item >= 0).to(torch.float32)
        cosine = (self.item_embeddings[first] * self.item_embeddings[self.previous_item.clamp(min=0)]).sum(1)
        self.shown[slate.reshape(-1)] = True
        self.episode_return += reward
        self.episode_length += 1
        done = (terminated | truncated).to(torch.float32)
        self.sums += torch.stack([
            done.sum(), (self.episode_return * done).sum(), (self.episode_length * done).sum(),
            clicked.to(torch.float32).sum(), self._steps_per_update,
            terminated.to(torch.float32).sum(), ((1.0 - cosine) * has_previous).sum(), has_previous.sum(),
        ])
        self.episode_return *= 1.0 - done
        self.episode_length *= 1.0 - done
        self.previous_item = torch.where(done.bool(), torch.full_like(first, -1), first)

    def log(self, logger: ScalarLogger, step: int) -> None:
        """Write the window's scalars (one device sync) and start a new window."""
        sums = dict(zip(SUMS, self.sums.tolist(), strict=True))
        now = time.perf_counter()
        if sums["episodes"] > 0:
            logger.log_scalar("charts/episodic_return", sums["return"] / sums["episodes"], step)
            logger.log_scalar("charts/session_length", sums["length"] / sums["episodes"], step)
            logger.log_scalar("sim/leave_rate", sums["left"] / sums["episodes"], step)
        if sums["steps"] > 0:
            logger.log_scalar("charts/ctr", sums["clicks"] / sums["steps"], step)
            logger.log_scalar("charts/sps", sums["steps"] / max(now - self._clock, 1e-9), step)
            logger.log_scalar("sim/coverage", float(self.shown.float().mean()), step)
        if sums["pairs"] > 0:
            logger.log_scalar("sim/diversity", sums["diversity"] / sums["pairs"], step)
        self.sums.zero_()
        self.shown.zero_()
        self._clock = now

    def state(self) -> dict[str, Any]:
        return {"episode_return": self.episode_return, "episode_length": self.episode_length,
                "previous_item": self.previous_item, "sums": self.sums, "shown": self.shown}

    def load_state(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            getattr(self, name).copy_(value)
