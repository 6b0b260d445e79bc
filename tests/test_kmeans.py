import pytest
import torch
import torch.nn.functional as F

from mmdense.models.utils import spherical_kmeans
from mmdense.models.utils import kmeans as kmeans_module


def separable_embeddings(num_clusters=4, per_cluster=25, dim=16, seed=0):
    """Points scattered tightly (cos > 0.95) around orthogonal directions, with their labels."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.eye(dim)[:num_clusters] * 5
    labels = torch.arange(num_clusters).repeat_interleave(per_cluster)
    points = directions[labels] + 0.3 * torch.randn(len(labels), dim, generator=g)
    permutation = torch.randperm(len(labels), generator=g)
    return points[permutation], labels[permutation]


def same_partition(a, b):
    """Whether two labelings define the same clusters (equal up to renaming)."""
    return torch.equal(a[:, None] == a[None], b[:, None] == b[None])


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_recovers_separable_clusters(seed):
    points, labels = separable_embeddings(seed=seed)
    g = torch.Generator().manual_seed(seed)
    centroids, assignments = spherical_kmeans(points * 3.0, 4, generator=g)  # scale-free
    assert assignments.dtype == torch.long and assignments.shape == labels.shape
    assert same_partition(assignments, labels)
    assert torch.allclose(centroids.norm(dim=1), torch.ones(4), atol=1e-6)
    # each centroid points at its cluster's direction
    assert (centroids.abs().max(dim=1).values > 0.95).all()


def test_deterministic_given_generator():
    points = torch.randn(200, 8, generator=torch.Generator().manual_seed(3))
    first = spherical_kmeans(points, 7, generator=torch.Generator().manual_seed(11))
    second = spherical_kmeans(points, 7, generator=torch.Generator().manual_seed(11))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_chunked_assignment_matches_full(monkeypatch):
    points = torch.randn(300, 8, generator=torch.Generator().manual_seed(4))
    full = spherical_kmeans(points, 5, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(kmeans_module, 'CHUNK_ROWS', 64)
    chunked = spherical_kmeans(points, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(full[1], chunked[1])
    assert torch.allclose(full[0], chunked[0], atol=1e-6)


def test_every_centroid_stays_a_unit_vector_with_duplicates():
    # 3 distinct points, 5 copies each, 6 clusters: seeding and re-seeding must cope with ties
    points = torch.eye(3).repeat_interleave(5, dim=0)
    centroids, assignments = spherical_kmeans(points, 6, num_iters=5,
                                              generator=torch.Generator().manual_seed(0))
    assert torch.allclose(centroids.norm(dim=1), torch.ones(6), atol=1e-6)
    assert torch.allclose(centroids[assignments], F.normalize(points, dim=1))


def test_k_equals_n_gives_one_point_per_cluster():
    points = torch.randn(6, 4, generator=torch.Generator().manual_seed(5))
    centroids, assignments = spherical_kmeans(points, 6, generator=torch.Generator())
    assert sorted(assignments.tolist()) == list(range(6))
    assert torch.allclose(centroids[assignments], F.normalize(points, dim=1), atol=1e-6)


def test_no_gradient():
    points = torch.randn(20, 4, requires_grad=True)
    centroids, _ = spherical_kmeans(points, 3, generator=torch.Generator().manual_seed(0))
    assert not centroids.requires_grad


def test_fewer_points_than_clusters_is_an_error():
    with pytest.raises(ValueError, match='num_clusters=5 for 3 points'):
        spherical_kmeans(torch.randn(3, 4), 5)
