"""Off-policy estimates of a policy's value on real held-out logs (e.g. MovieLens).

Each held-out event is a bandit round: the context is the user's real history, the logged action is
the item the user rated, the reward its like (rating >= 4). The logging policy is unknown and is
estimated from logged frequencies: pi_0(a | x) = (count(a) + 1) / sum of (count + 1) over the items
the user has not consumed, with counts from the training log. The evaluated policy is the agent's
deterministic top-1 unconsumed item. DR and DM use a linear reward model on the LLM state fitted on
other events than those estimated on (evaluate.py: the temporal split's validation events, which
precede the test period): held out means held out, no test event reaches a fit. Intervals are bootstraps over users. On MovieLens this frequency model of why a
user rated a film is crude, so these figures are indicative; the estimators themselves are
validated where the truth is known (:mod:`recarena.evaluation.ope_validation`).
"""

from __future__ import annotations

import numpy as np
import torch

from recarena.agents.base import Agent
from recarena.data.interactions import InteractionLog
from recarena.evaluation.histories import EvalQueries, batches, query_batch
from recarena.evaluation.metrics import top_k_items
from recarena.evaluation.ope import ESTIMATORS, LinearRewardModel, LoggedData


@torch.no_grad()
def evaluate_ope(
    agent: Agent,
    queries: EvalQueries,
    train_log: InteractionLog,
    item_embeddings: torch.Tensor,
    history_length: int = 50,
    clip: float | None = 100.0,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    n_bootstrap: int = 1000,
    seed: int = 0,
    reward_queries: EvalQueries | None = None,
) -> dict:
    """IPS, SNIPS, DM and DR estimates (with intervals) of the agent's top-1 policy on ``queries``.

    The logging policy is counted on ``train_log``; the reward model of DM/DR is fitted on
    ``reward_queries`` (events disjoint from ``queries``; None: on ``queries`` themselves).
    """
    if len(queries) == 0:
        raise ValueError("no held-out events for off-policy estimation")
    if reward_queries is not None and len(reward_queries) == 0:
        raise ValueError("no events to fit the reward model on")
    counts = torch.as_tensor(np.bincount(train_log.item, minlength=queries.n_items) + 1.0, dtype=torch.float64)
    n = len(queries)
    chosen = np.empty(n, dtype=np.int64)
    propensity = np.empty(n, dtype=np.float64)
    features = []
    for index in batches(n, batch_size):
        batch = query_batch(queries, index, history_length, item_embeddings, device)
        allowed = ~batch.consumed.cpu()
        chosen[index] = top_k_items(agent.scores(batch.observation).cpu(), 1, ~allowed)[:, 0].numpy()
        mass = (counts[None, :] * allowed).sum(dim=1)
        propensity[index] = (counts[batch.target.cpu()] / mass).numpy()
        features.append(batch.observation["llm_state"].cpu())
    features_t = torch.cat(features)
    action = torch.as_tensor(queries.target)
    reward = queries.reward("like")
    fit_on = queries if reward_queries is None else reward_queries
    fit_features = features_t if reward_queries is None else _llm_states(
        reward_queries, history_length, item_embeddings, batch_size, device)
    model = LinearRewardModel(features_t.shape[1], queries.n_items).fit(
        fit_features, torch.as_tensor(fit_on.target), torch.as_tensor(fit_on.reward("like")), seed=seed)
    # q(x, a) is needed only at the logged and the chosen action: fill a sparse-by-construction table.
    expected = np.zeros((n, queries.n_items), dtype=np.float32)
    rows = np.arange(n)
    weight = model.weight
    x = torch.cat([features_t, torch.ones(n, 1)], dim=1)
    for column in (queries.target, chosen):
        expected[rows, column] = (x * weight[torch.as_tensor(column)]).sum(dim=1).numpy()
    data = LoggedData(action.numpy(), reward, propensity, queries.n_items, expected, group=queries.user)
    estimates = {}
    for name, cls in ESTIMATORS.items():
        estimate = cls(clip=clip, n_bootstrap=n_bootstrap, seed=seed).estimate(data, chosen)
        estimates[name] = estimate.to_dict()
    return {
        "n_events": n,
        "n_users": queries.n_users,
        "match_rate": float((chosen == queries.target).mean()),
        "clip": clip,
        "logging_policy": "estimated: training-log item frequencies over unconsumed items",
        "reward_model": ("linear on the LLM state, fitted on the events estimated on" if reward_queries is None else
                         f"linear on the LLM state, fitted on {len(reward_queries)} other events ({reward_queries.protocol})"),
        "evaluated_policy": "deterministic top-1 unconsumed item",
        "estimates": estimates,
    }


def _llm_states(queries: EvalQueries, history_length: int, item_embeddings: torch.Tensor, batch_size: int,
                device: torch.device | str) -> torch.Tensor:
    """Float32 [Q, d] LLM state of each query's history (the reward model's features)."""
    states = [query_batch(queries, index, history_length, item_embeddings, device).observation["llm_state"].cpu()
              for index in batches(len(queries), batch_size)]
    return torch.cat(states)
