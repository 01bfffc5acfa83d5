"""The models evaluate.py scores a split with, fitted on that split's training part only, each once.

Held out means held out: a baseline (most-popular counts, SASRec, GRU4Rec, greedy's preference
model) that scores a split's test events must not have seen them. The leave-last-out training log
holds most of the temporal split's test events (96.8% on ML-100K, docs/evaluation.md), so one fit on it cannot score
both splits. :class:`SplitFits` fits per split, lazily (only what the requested protocols ask for)
and once per training part: leave-last-out and its validation split share their training part, so
they share most-popular, SASRec and GRU4Rec. The preference model also early-stops on the split's
validation part, which is the validation split's test part, so it is keyed by both parts (the
validation split has no validation part: its preference model is fitted without early stopping).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from recarena.agents.base import Agent
from recarena.data.interactions import LogSplit
from recarena.evaluation.sources import BASELINES, build_baseline


class SplitFits:
    """Baselines and preference models per split (name -> :class:`LogSplit`), fitted on first use.

    ``preference_for(name, split)`` returns the preference model of a split (fitted on
    ``split.train`` only; evaluate.py decides between the runs' cached simulator model and a fresh fit).
    """

    def __init__(
        self,
        splits: dict[str, LogSplit],
        item_embeddings: torch.Tensor,
        preference_for: Callable[[str, LogSplit], Any],
        seed: int = 0,
        options: dict[str, dict[str, Any]] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.splits = splits
        self.item_embeddings = item_embeddings
        self.preference_for = preference_for
        self.seed = seed
        self.options = options or {}
        self.log = log or (lambda message: None)
        self._models: dict[tuple[str, ...], Any] = {}
        self._fingerprints: dict[str, tuple[str, str]] = {}

    def _parts(self, split_name: str, with_valid: bool) -> tuple[str, ...]:
        """The fingerprints that key a fit: the training part's (and the validation part's), hashed once per split."""
        if split_name not in self._fingerprints:
            split = self.splits[split_name]
            self._fingerprints[split_name] = (split.train.fingerprint(), split.valid.fingerprint())
        train, valid = self._fingerprints[split_name]
        return (train, valid) if with_valid else (train,)

    def preference(self, split_name: str) -> Any:
        """The preference model fitted on ``split_name``'s training part (early-stopped on its validation part)."""
        key = ("preference", *self._parts(split_name, with_valid=True))
        if key not in self._models:
            self.log(f"preference model for the {split_name} split (its training part only)")
            self._models[key] = self.preference_for(split_name, self.splits[split_name])
        return self._models[key]

    def baseline(self, name: str, split_name: str) -> Agent:
        """Baseline ``name`` (a ``--baseline`` name) fitted on ``split_name``'s training part."""
        greedy = BASELINES[name] == "greedy"
        key = ("baseline", name, *self._parts(split_name, with_valid=greedy))
        if key not in self._models:
            preference = self.preference(split_name) if greedy else None
            if BASELINES[name] != "random":
                self.log(f"fitting baseline {name} on the {split_name} split's training part")
            self._models[key] = build_baseline(name, self.splits[split_name], self.item_embeddings, self.seed,
                                               self.options.get(name), preference)
        return self._models[key]
