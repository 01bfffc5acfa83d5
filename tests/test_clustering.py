"""The one k-means (recarena.core.clustering) and the k-means topics built on it."""

from __future__ import annotations

import pytest
import torch

from recarena.core.clustering import kmeans, nearest
from recarena.core.seeding import torch_generator


def test_kmeans_finds_well_separated_clusters():
    generator = torch_generator(0)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    points = centres.repeat_interleave(50, dim=0) + 0.1 * torch.randn(150, 2, generator=generator)
    found = kmeans(points, 3, torch_generator(1))
    distances = torch.cdist(centres, found)
    assert float(distances.min(dim=1).values.max()) < 0.1
    labels = nearest(points, found)
    assert all(len(set(labels[i * 50 : (i + 1) * 50].tolist())) == 1 for i in range(3))


def test_kmeans_is_deterministic_and_handles_few_distinct_points():
    points = torch.randn(64, 4, generator=torch_generator(0))
    assert torch.equal(kmeans(points, 5, torch_generator(3)), kmeans(points, 5, torch_generator(3)))
    same = torch.ones(10, 3)
    centroids = kmeans(same, 4, torch_generator(0))
    assert centroids.shape == (4, 3) and torch.equal(nearest(same, centroids), torch.zeros(10, dtype=torch.int64))
    with pytest.raises(ValueError, match="non-empty"):
        kmeans(torch.zeros(0, 3), 2, torch_generator(0))
