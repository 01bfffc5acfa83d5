"""The one k-means of recarena: k-means++ seeding and Lloyd iterations on torch tensors.

Used for the tabular Q-learner's codebook of LLM states (:mod:`recarena.agents.qlearning`) and for
k-means topics of item encodings (:func:`recarena.simulators.behaviour.kmeans_topics`).
"""

from __future__ import annotations

import torch


def kmeans(
    points: torch.Tensor, n_clusters: int, generator: torch.Generator, iterations: int = 25
) -> torch.Tensor:
    """Centroids [n_clusters, d] of ``points`` [n, d] by k-means++ seeding and Lloyd iterations.

    With fewer distinct points than clusters, the extra centroids duplicate existing ones (harmless:
    :func:`nearest` picks the first). Empty clusters are re-seeded at the point farthest from its
    centroid. Deterministic given the generator (a CPU generator; draws are made on the CPU).
    """
    if points.dim() != 2 or len(points) == 0:
        raise ValueError(f"k-means needs a non-empty [n, d] tensor, got shape {tuple(points.shape)}")
    points = points.to(torch.float32)
    n = len(points)
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [points[first]]
    closest = ((points - points[first]) ** 2).sum(dim=1)
    for _ in range(1, n_clusters):
        total = float(closest.sum())
        if total <= 0.0:
            index = int(torch.randint(n, (1,), generator=generator))
        else:
            index = int(torch.multinomial(closest.cpu() / total, 1, generator=generator))
        centroids.append(points[index])
        closest = torch.minimum(closest, ((points - points[index]) ** 2).sum(dim=1))
    centres = torch.stack(centroids)
    for _ in range(iterations):
        distances = torch.cdist(points, centres)
        labels = distances.argmin(dim=1)
        counts = torch.bincount(labels, minlength=n_clusters)
        sums = torch.zeros_like(centres).index_add_(0, labels, points)
        updated = sums / counts.clamp(min=1).unsqueeze(1).to(points.dtype)
        empty = counts == 0
        if bool(empty.any()):
            farthest = distances.gather(1, labels.unsqueeze(1)).squeeze(1)
            order = torch.argsort(farthest, descending=True, stable=True)
            updated[empty] = points[order[: int(empty.sum())]]
        if torch.equal(updated, centres):
            break
        centres = updated
    return centres


def nearest(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Int64 [B]: the index of the nearest centroid of each point [B, d]."""
    return torch.cdist(points.to(torch.float32), centroids.to(points.device)).argmin(dim=1)
