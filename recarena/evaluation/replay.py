"""Replay evaluation (Li, Chu, Langford & Wang, WSDM 2011) on held-out logged events.

For each held-out user the logged test events are walked in time order. At each event the policy
sees the user's real history up to that event and proposes a slate of ``k`` unconsumed items
(``agent.act``); the event is *matched* when the logged item is in the slate, and only matched
events count: the replay reward is the mean logged reward over matched events.

Li et al. prove this unbiased when the logging policy chose items uniformly at random. MovieLens
ratings were not logged that way (users chose what to rate), so on MovieLens replay is a biased
estimate: it favours policies that resemble the users' own choices. The policies here are
stateless functions of the observation, so the events can be scored in batches without changing
the result of a sequential walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from recarena.agents.base import Agent
from recarena.evaluation import metrics
from recarena.evaluation.histories import EvalQueries, batches, query_batch

BIAS_NOTE = (
    "Replay is unbiased only when the logged items were chosen uniformly at random (Li et al. 2011). "
    "MovieLens users chose what to rate, so on MovieLens the replay reward is a biased estimate that "
    "favours policies resembling the users' own choices."
)


@dataclass
class ReplayResult:
    """Replay figures; ``reward`` is the mean logged reward over matched events (None when none matched)."""

    k: int
    reward_kind: str
    n_events: int
    n_users: int
    n_matched: int
    match_rate: float
    reward: float | None
    interval: tuple[float, float] | None
    note: str = BIAS_NOTE
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    """The held-out users, sorted: the units of :attr:`per_user`."""
    per_user: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    """Per user, (matched events, events) for ``match_rate`` and (reward of matched events, matched events) for ``reward``."""

    def to_dict(self) -> dict:
        return {
            "k": self.k,
            "reward_kind": self.reward_kind,
            "n_events": self.n_events,
            "n_users": self.n_users,
            "n_matched": self.n_matched,
            "match_rate": self.match_rate,
            "reward": self.reward,
            "interval": list(self.interval) if self.interval is not None else None,
            "note": self.note,
        }


@torch.no_grad()
def evaluate_replay(
    agent: Agent,
    queries: EvalQueries,
    item_embeddings: torch.Tensor,
    k: int = 10,
    reward: str = "like",
    history_length: int = 50,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> ReplayResult:
    """Replay ``agent`` over ``queries`` with slates of ``k``; ``reward`` is ``like`` or ``rating``."""
    if len(queries) == 0:
        raise ValueError("no held-out events to replay")
    if not isinstance(k, int) or not 1 <= k <= queries.n_items:
        raise ValueError(f"k must be an integer in [1, {queries.n_items}], got {k!r}")
    logged_reward = queries.reward(reward)
    matched = np.zeros(len(queries), dtype=bool)
    for index in batches(len(queries), batch_size):
        batch = query_batch(queries, index, history_length, item_embeddings, device)
        slate = agent.act(batch.observation, k, action_mask=~batch.consumed)
        if slate.shape != (len(index), k):
            raise ValueError(f"agent.act returned shape {tuple(slate.shape)}, expected {(len(index), k)}")
        matched[index] = (slate.to(batch.target.device) == batch.target[:, None]).any(dim=1).cpu().numpy()

    n_matched = int(matched.sum())
    events, hits, reward_sum = metrics.group_sums(queries.user, np.ones(len(queries)), matched, logged_reward * matched)
    value, interval = None, None
    if n_matched > 0:
        value = float(logged_reward[matched].mean())
        numerator, denominator = metrics.group_sums(queries.user, logged_reward * matched, matched)
        interval = metrics.bootstrap_ratio(numerator, denominator, n_bootstrap, alpha, seed)
    return ReplayResult(
        k=k,
        reward_kind=reward,
        n_events=len(queries),
        n_users=queries.n_users,
        n_matched=n_matched,
        match_rate=n_matched / len(queries),
        reward=value,
        interval=interval,
        users=np.unique(queries.user),
        per_user={"match_rate": (hits, events), "reward": (reward_sum, hits)},
    )
