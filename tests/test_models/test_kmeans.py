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


def sequential_reseed(assignments, similarity, num_clusters):
    """The reseeding rule one empty cluster at a time: each takes the point least similar to its
    centroid (lowest index on ties) among clusters that keep another member."""
    assignments, similarity = assignments.clone(), similarity.clone()
    counts = torch.bincount(assignments, minlength=num_clusters)
    for cluster in (counts == 0).nonzero().flatten().tolist():
        candidate = torch.where(counts[assignments] > 1, similarity,
                                torch.full_like(similarity, float('inf')))
        point = int(candidate.argmin())
        counts[assignments[point]] -= 1
        counts[cluster] += 1
        assignments[point] = cluster
        similarity[point] = float('inf')
    return assignments


@pytest.mark.parametrize('seed', range(20))
def test_vectorised_reseeding_matches_the_one_at_a_time_rule(seed):
    g = torch.Generator().manual_seed(seed)
    num_points = int(torch.randint(8, 40, (1, ), generator=g))
    num_clusters = int(torch.randint(2, num_points + 1, (1, ), generator=g))
    # few occupied clusters, so that several are empty; coarse similarities, so that ties occur
    occupied = torch.randint(1, num_clusters + 1, (1, ), generator=g)
    assignments = torch.randint(0, int(occupied), (num_points, ), generator=g)
    similarity = torch.randint(0, 5, (num_points, ), generator=g).float() / 5
    expected = sequential_reseed(assignments, similarity, num_clusters)
    reseeded = kmeans_module._reseed_empty_clusters(assignments, similarity, num_clusters)
    assert torch.equal(reseeded, expected)
    assert (torch.bincount(reseeded, minlength=num_clusters) > 0).all()


def test_seed_draws_follow_the_weights():
    weights = torch.tensor([0.0, 1.0, 3.0, 0.0, 4.0])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([kmeans_module._sample_index(weights, g) for _ in range(8000)])
    frequencies = torch.bincount(draws, minlength=5).float() / len(draws)
    assert frequencies[0] == 0 and frequencies[3] == 0
    assert torch.allclose(frequencies, weights / weights.sum(), atol=0.02)


def test_clustering_never_reads_a_tensor_back_to_python(monkeypatch):
    """Every host read-back (``.item()``, ``.tolist()``, ``bool``/``int`` of a tensor,
    ``nonzero``) would be a device synchronisation inside a DSC training step."""

    def forbidden(*args, **kwargs):
        raise AssertionError('host read-back inside spherical_kmeans')

    points = torch.eye(3).repeat_interleave(5, dim=0)  # duplicates: exercises every branch
    for name in ('item', 'tolist', '__bool__', '__int__', '__float__', '__index__', 'nonzero'):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    spherical_kmeans(points, 6, num_iters=3, generator=torch.Generator().manual_seed(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA (sync debug mode)')
def test_no_device_synchronisation_on_cuda():
    points = torch.randn(4096, 64, device='cuda')
    generator = torch.Generator(device='cuda').manual_seed(0)
    spherical_kmeans(points, 32, num_iters=2, generator=generator)  # warm-up (lazy init)
    torch.cuda.set_sync_debug_mode('error')
    try:
        spherical_kmeans(points, 32, num_iters=10, generator=generator)
    finally:
        torch.cuda.set_sync_debug_mode('default')


def boolean_mask_kmeans_plus_plus(points, num_clusters, generator):
    """k-means++ seeding as it was written before it was cut to fewer operators per draw: a
    boolean mask of the drawn rows and the indices written into a preallocated tensor."""
    chosen = torch.empty(num_clusters, dtype=torch.long)
    taken = torch.zeros(points.shape[0], dtype=torch.bool)
    distance = torch.ones(points.shape[0])
    for k in range(num_clusters):
        weights = distance.masked_fill(taken, 0)
        weights = torch.where(weights.sum() > 0, weights, (~taken).float())
        index = kmeans_module._sample_index(weights, generator).view(1)
        chosen[k:k + 1] = index
        taken.index_fill_(0, index, True)
        distance = torch.minimum(distance, (1 - points @ points.index_select(0, index)[0])
                                 .clamp(min=0))
    return points.index_select(0, chosen)


@pytest.mark.parametrize('num_clusters', [1, 7, 40])
def test_seeding_draws_the_seeds_of_the_boolean_mask_form(num_clusters):
    torch.manual_seed(0)
    points = F.normalize(torch.randn(30, 8), dim=1).repeat(2, 1)  # duplicates: the fallback
    seeds = kmeans_module._kmeans_plus_plus(points, num_clusters,
                                            torch.Generator().manual_seed(num_clusters))
    expected = boolean_mask_kmeans_plus_plus(points, num_clusters,
                                             torch.Generator().manual_seed(num_clusters))
    assert torch.equal(seeds, expected)


def test_seeding_dispatches_at_most_15_operators_per_seed():
    """Each of the K sequential draws is a few GPU kernel launches (it was 18 per seed)."""
    from mmdense.utils.op_counter import compute_ops, count_aten_ops
    points = F.normalize(torch.randn(64, 8), dim=1)
    with count_aten_ops() as counts:
        kmeans_module._kmeans_plus_plus(points, 32, torch.Generator().manual_seed(0))
    assert sum(compute_ops(counts).values()) <= 15 * 32 + 4
