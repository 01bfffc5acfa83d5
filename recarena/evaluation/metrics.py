"""Ranking and beyond-accuracy metrics on batched tensors, plus the bootstrap used for intervals.

Ranks are 0-based positions of the target among the items a user has not consumed, in the order
(score descending, item index ascending): ties are broken deterministically in favour of the lower
item index, which is the order a stable descending sort (and :func:`top_k_items`) produces.
NaN scores are refused (a NaN target would otherwise rank first).

* HR@K = 1[rank < K]
* NDCG@K = 1[rank < K] / log2(rank + 2)   (one relevant item, so the ideal DCG is 1)
* MRR = 1 / (rank + 1)   (untruncated reciprocal rank)
* coverage = |union of recommended items| / n_items
* intra-list diversity (ILD) of a slate = mean over item pairs i < j of 1 - cos(e_i, e_j)
* novelty of a slate = mean over its items of -log2(p_i), p_i = share of training users who consumed i
"""

from __future__ import annotations

import numpy as np
import torch


def _check_scores(scores: torch.Tensor) -> torch.Tensor:
    if scores.ndim != 2:
        raise ValueError(f"scores must be [B, n_items], got shape {tuple(scores.shape)}")
    scores = scores.to(torch.float32)
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; a policy must score every item")
    return scores


def target_ranks(scores: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Int64 [B]: 0-based rank of ``target[b]`` among items not in ``exclude[b]`` (ties: lower index first).

    ``exclude`` (bool [B, n_items]) marks consumed items; the target itself is never excluded.
    """
    scores = _check_scores(scores)
    batch, n_items = scores.shape
    target = target.to(device=scores.device, dtype=torch.int64)
    if target.shape != (batch,):
        raise ValueError(f"target must have shape ({batch},), got {tuple(target.shape)}")
    if bool(((target < 0) | (target >= n_items)).any()):
        raise ValueError(f"target items must lie in [0, {n_items})")
    target_score = scores.gather(1, target[:, None])
    index = torch.arange(n_items, device=scores.device)[None, :]
    ahead = (scores > target_score) | ((scores == target_score) & (index < target[:, None]))
    if exclude is not None:
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude must have shape {tuple(scores.shape)}, got {tuple(exclude.shape)}")
        ahead &= ~exclude.to(scores.device)
    return ahead.sum(dim=1)


def hit_rate(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Float [B]: 1 where the target is in the top ``k``."""
    _check_k(k)
    return (ranks < k).to(torch.float64)


def ndcg(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Float [B]: 1 / log2(rank + 2) where rank < ``k``, else 0 (a single relevant item).

    The single-relevant-item case of :func:`graded_ndcg` (its ideal DCG is 1).
    """
    _check_k(k)
    gain = 1.0 / torch.log2(ranks.to(torch.float64) + 2.0)
    return torch.where(ranks < k, gain, torch.zeros_like(gain))


def dcg(gains: torch.Tensor, k: int) -> torch.Tensor:
    """Float64 [B]: discounted cumulative gain of the first ``k`` of ``gains`` [B, L] (in ranked order)."""
    _check_k(k)
    top = gains[..., :k].to(torch.float64)
    discounts = 1.0 / torch.log2(torch.arange(top.shape[-1], dtype=torch.float64, device=top.device) + 2.0)
    return (top * discounts).sum(dim=-1)


def graded_ndcg(ranked_gains: torch.Tensor, ideal_gains: torch.Tensor, k: int) -> torch.Tensor:
    """Float64 [B]: DCG@k of ``ranked_gains`` over DCG@k of ``ideal_gains`` (the gains best-first).

    ``ranked_gains`` [B, L] are the gains of the items in the order a policy ranked them, e.g.
    ``2^rating - 1`` of held-out items, or 1 for a relevant item of a full ranking; rows whose ideal
    DCG is 0 (nothing relevant) give NaN.
    """
    return dcg(ranked_gains, k) / dcg(ideal_gains, k)


def reciprocal_rank(ranks: torch.Tensor) -> torch.Tensor:
    """Float [B]: 1 / (rank + 1); its mean is MRR."""
    return 1.0 / (ranks.to(torch.float64) + 1.0)


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"K must be a positive integer, got {k!r}")


def top_k_items(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Int64 [B, k]: the ``k`` best non-excluded items per row, ties broken by lower item index."""
    scores = _check_scores(scores)
    _check_k(k)
    if k > scores.shape[1]:
        raise ValueError(f"k={k} exceeds the catalogue of {scores.shape[1]} items")
    if exclude is not None:
        scores = scores.masked_fill(exclude.to(scores.device), float("-inf"))
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def coverage(slates: torch.Tensor, n_items: int) -> float:
    """Share of the catalogue that appears in at least one slate (``slates`` int [N, k], -1 ignored)."""
    items = slates.reshape(-1)
    items = items[items >= 0]
    return float(torch.unique(items).numel()) / float(n_items)


def intra_list_diversity(slates: torch.Tensor, item_embeddings: torch.Tensor) -> torch.Tensor:
    """Float [N]: mean pairwise cosine distance 1 - cos(e_i, e_j) within each slate (needs k >= 2)."""
    if slates.ndim != 2 or slates.shape[1] < 2:
        raise ValueError(f"intra-list diversity needs slates [N, k >= 2], got shape {tuple(slates.shape)}")
    emb = torch.nn.functional.normalize(item_embeddings.to(torch.float64), dim=-1)
    vectors = emb[slates.to(emb.device)]  # [N, k, d]
    cos = vectors @ vectors.transpose(1, 2)  # [N, k, k]
    k = slates.shape[1]
    pairs = torch.triu(torch.ones(k, k, dtype=torch.bool, device=cos.device), diagonal=1)
    return (1.0 - cos[:, pairs]).mean(dim=1)


def item_self_information(log_item: np.ndarray, log_user: np.ndarray, n_items: int, n_users: int) -> torch.Tensor:
    """Float64 [n_items]: -log2(share of users who consumed the item); unseen items count as one user."""
    pairs = np.unique(np.stack([log_user, log_item]), axis=1)
    users_per_item = np.bincount(pairs[1], minlength=n_items).astype(np.float64)
    share = np.maximum(users_per_item, 1.0) / max(n_users, 1)
    return torch.as_tensor(-np.log2(share))


def novelty(slates: torch.Tensor, self_information: torch.Tensor) -> torch.Tensor:
    """Float [N]: mean self-information of the items of each slate."""
    return self_information.to(slates.device)[slates].mean(dim=1)


def bootstrap_ratio(
    numerator: np.ndarray,
    denominator: np.ndarray,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of sum(numerator) / sum(denominator), resampling the rows.

    Rows are the independent units (users, or logged events); pass per-unit sums so events of one
    user are resampled together. Returns (nan, nan) when the statistic is undefined.
    """
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    if numerator.shape != denominator.shape or numerator.ndim != 1:
        raise ValueError("numerator and denominator must be 1-D arrays of the same length")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    n = len(numerator)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.empty(n_bootstrap)
    chunk = max(1, min(n_bootstrap, 2_000_000 // n))
    for begin in range(0, n_bootstrap, chunk):
        end = min(begin + chunk, n_bootstrap)
        index = rng.integers(0, n, size=(end - begin, n))
        den = denominator[index].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            values[begin:end] = numerator[index].sum(axis=1) / den
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_mean(values: np.ndarray, n_bootstrap: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    return bootstrap_ratio(values, np.ones_like(values), n_bootstrap, alpha, seed)


def group_sums(group: np.ndarray, *columns: np.ndarray) -> list[np.ndarray]:
    """Per-group sums of each column (groups relabelled 0..G-1), for clustered bootstraps."""
    _, label = np.unique(group, return_inverse=True)
    return [np.bincount(label, weights=np.asarray(c, dtype=np.float64)) for c in columns]
