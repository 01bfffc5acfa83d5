"""Full-ranking evaluation: HR@K, NDCG@K and MRR over every item the user has not consumed.

For each query (a held-out event, see :mod:`recarena.evaluation.histories`) the policy scores all items from
the observation of the user's real history; the target's rank is taken among the items not in the
history (no sampled negatives). Under leave-last-out there is one query per user (the standard
ML-1M protocol, comparable to SASRec's 0.2853 / 0.1603 HR@10 / NDCG@10); under the temporal split
every test event of a test user is a query, predicted from all of that user's earlier events.
Intervals are percentile bootstraps over users.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from recarena.agents.base import Agent
from recarena.evaluation import metrics
from recarena.evaluation.histories import EvalQueries, batches, query_batch


@dataclass
class RankingResult:
    """Per-metric means with bootstrap intervals (over users), plus top-K list diagnostics."""

    protocol: str
    n_queries: int
    n_users: int
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    beyond_accuracy: dict[str, float]
    seconds: float
    per_query_ranks: np.ndarray = field(repr=False)
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    """The held-out users, sorted: the units of :attr:`per_user`."""
    per_user: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    """Per metric, each user's (sum over their queries, number of queries): what the intervals resample."""

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "n_queries": self.n_queries,
            "n_users": self.n_users,
            "metrics": self.metrics,
            "intervals": {name: list(ci) for name, ci in self.intervals.items()},
            "beyond_accuracy": self.beyond_accuracy,
            "seconds": self.seconds,
        }


@torch.no_grad()
def evaluate_ranking(
    agent: Agent,
    queries: EvalQueries,
    item_embeddings: torch.Tensor,
    k_values: tuple[int, ...] = (10,),
    history_length: int = 50,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    self_information: torch.Tensor | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> RankingResult:
    """Rank every unconsumed item for each query with ``agent.scores`` and report HR/NDCG@K and MRR.

    ``self_information`` ([n_items], see :func:`metrics.item_self_information`) adds novelty of the
    top-K lists; coverage and intra-list diversity of the top-``max(k_values)`` lists are always given.
    """
    if len(queries) == 0:
        raise ValueError("no held-out queries to rank")
    if agent.n_items != queries.n_items:
        raise ValueError(f"agent scores {agent.n_items} items but the data has {queries.n_items}")
    start_time = time.perf_counter()
    top = max(k_values)
    ranks = np.empty(len(queries), dtype=np.int64)
    slates = []
    for index in batches(len(queries), batch_size):
        batch = query_batch(queries, index, history_length, item_embeddings, device)
        scores = agent.scores(batch.observation)
        if scores.shape != (len(index), queries.n_items):
            raise ValueError(f"agent.scores returned shape {tuple(scores.shape)}, expected {(len(index), queries.n_items)}")
        scores = scores.to(batch.consumed.device)
        ranks[index] = metrics.target_ranks(scores, batch.target, batch.consumed).cpu().numpy()
        slates.append(metrics.top_k_items(scores, top, batch.consumed).cpu())
    seconds = time.perf_counter() - start_time

    rank_tensor = torch.as_tensor(ranks)
    per_query: dict[str, np.ndarray] = {}
    for k in k_values:
        per_query[f"HR@{k}"] = metrics.hit_rate(rank_tensor, k).numpy()
        per_query[f"NDCG@{k}"] = metrics.ndcg(rank_tensor, k).numpy()
    per_query["MRR"] = metrics.reciprocal_rank(rank_tensor).numpy()

    # Average per query, then bootstrap over users (a user's queries are resampled together).
    results, intervals, per_user = {}, {}, {}
    for offset, (name, values) in enumerate(per_query.items()):
        results[name] = float(values.mean())
        numerator, denominator = metrics.group_sums(queries.user, values, np.ones_like(values))
        intervals[name] = metrics.bootstrap_ratio(numerator, denominator, n_bootstrap, alpha, seed + offset)
        per_user[name] = (numerator, denominator)

    all_slates = torch.cat(slates)
    beyond = {f"coverage@{top}": metrics.coverage(all_slates, queries.n_items)}
    if top >= 2:
        beyond[f"ILD@{top}"] = float(metrics.intra_list_diversity(all_slates, item_embeddings).mean())
    if self_information is not None:
        beyond[f"novelty@{top}"] = float(metrics.novelty(all_slates, self_information).mean())
    return RankingResult(
        protocol=queries.protocol,
        n_queries=len(queries),
        n_users=queries.n_users,
        metrics=results,
        intervals=intervals,
        beyond_accuracy=beyond,
        seconds=seconds,
        per_query_ranks=ranks,
        users=np.unique(queries.user),
        per_user=per_user,
    )
