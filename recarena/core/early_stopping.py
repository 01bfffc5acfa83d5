"""Early stopping on a validation loss: keep the best weights, stop after ``patience`` worse epochs."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch


class EarlyStopping:
    """Tracks the lowest validation loss of a fit (shared by the preference and next-item models)."""

    def __init__(self, patience: int, min_delta: float = 1e-5) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.best_epoch = 0
        self.stale = 0
        self.best_state: dict[str, Any] | None = None

    def update(self, loss: float, epoch: int, module: torch.nn.Module) -> bool:
        """Record one epoch's ``loss``; True when ``patience`` epochs in a row failed to improve it."""
        if loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.stale = loss, epoch, 0
            self.best_state = copy.deepcopy(module.state_dict())
        else:
            self.stale += 1
        return self.stale >= self.patience

    def restore_best(self, module: torch.nn.Module) -> None:
        """Load the best epoch's weights into ``module`` (nothing to do when no epoch was validated)."""
        if self.best_state is not None:
            module.load_state_dict(self.best_state)
