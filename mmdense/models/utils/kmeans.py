"""Spherical (cosine) k-means, for pseudo-classes and prototype initialisation."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdense.utils.dist import concat_all_gather, get_rank

# Rows scored against the centroids at once: memory stays O(CHUNK_ROWS × K), never O(N²).
CHUNK_ROWS = 8192


def _sample_index(weights: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """One index drawn with probability ∝ ``weights`` (not all zero), as a 0-d tensor on the
    weights' device: ``argmax_i w_i / E_i`` with ``E_i ~ Exp(1)`` (exponential-race sampling),
    which needs no host synchronisation. The noise comes from ``generator`` on its own device, so
    the draw depends only on the generator's state."""
    device = generator.device if generator is not None else weights.device
    noise = torch.empty(weights.shape, device=device).exponential_(generator=generator)
    noise = noise.clamp_(min=torch.finfo(noise.dtype).tiny)  # a zero weight must never win
    return (weights / noise.to(weights.device)).argmax()


def _nearest_centroid(points: Tensor, centroids: Tensor) -> Tuple[Tensor, Tensor]:
    """For each unit row of ``points`` (N, D): the cosine similarity to its nearest centroid and
    that centroid's index, computed CHUNK_ROWS rows at a time."""
    similarities, indices = [], []
    for chunk in points.split(CHUNK_ROWS):
        best = (chunk @ centroids.T).max(dim=1)
        similarities.append(best.values)
        indices.append(best.indices)
    return torch.cat(similarities), torch.cat(indices)


def _kmeans_plus_plus(points: Tensor, num_clusters: int,
                      generator: Optional[torch.Generator]) -> Tensor:
    """k-means++ seeding with the cosine distance ``1 − cos``: (K, D) distinct rows.

    Seeds stay on the device (no host synchronisation per draw). The K draws are sequential,
    so each is kept to a few operators (GPU kernel launches): rows already drawn carry weight
    ``distance · 0`` through a float mask, and the seed indices are concatenated once at the
    end."""
    untaken = torch.ones(points.shape[0], device=points.device)  # 0 for rows already seeds
    distance = torch.ones(points.shape[0], device=points.device)
    chosen = []
    for _ in range(num_clusters):
        weights = distance * untaken
        # every remaining row duplicates a seed (or k = 0): draw uniformly among the rest
        weights = torch.where(weights.sum() > 0, weights, untaken)
        index = _sample_index(weights, generator).view(1)  # indexing by 0-d tensors syncs
        chosen.append(index)
        untaken.index_fill_(0, index, 0)
        seed = points.index_select(0, index)[0]
        distance = torch.minimum(distance, (1 - points @ seed).clamp(min=0))
    return points.index_select(0, torch.cat(chosen))


def _reseed_empty_clusters(assignments: Tensor, similarity: Tensor,
                           num_clusters: int) -> Tensor:
    """Give every empty cluster a far point of another cluster; returns the updated assignments.

    Equivalent to taking, for each empty cluster in index order, the point least similar to its
    own centroid among clusters that still keep another member: a cluster of ``n`` members can
    donate its ``n − 1`` farthest points, and donors are taken in ascending similarity (ties by
    index). Fixed-shape tensor ops only, so no host synchronisation; N ≥ K guarantees enough
    donors.
    """
    num_points = assignments.shape[0]
    device = assignments.device
    # bincount's output size is the largest assignment + 1: a host read on a GPU
    counts = torch.zeros(num_clusters, dtype=torch.long, device=device).index_add_(
        0, assignments, torch.ones_like(assignments))
    # rank of each point within its cluster, farthest first
    by_similarity = similarity.argsort(stable=True)
    by_cluster = by_similarity[assignments[by_similarity].argsort(stable=True)]
    cluster_start = counts.cumsum(0) - counts
    rank = torch.empty_like(assignments)
    rank[by_cluster] = torch.arange(num_points, device=device) - \
        cluster_start[assignments[by_cluster]]
    can_donate = rank < counts[assignments] - 1
    donors = torch.where(can_donate, similarity,
                         torch.full_like(similarity, float('inf'))).argsort(stable=True)
    donors = donors[:num_clusters]
    clusters = torch.arange(num_clusters, device=device)
    empty_first = torch.where(counts == 0, clusters, clusters + num_clusters).argsort()
    num_empty = (counts == 0).sum()
    targets = torch.where(clusters < num_empty, empty_first, assignments[donors])
    return assignments.scatter(0, donors, targets)


@torch.no_grad()
def spherical_kmeans(features: Tensor, num_clusters: int, num_iters: int = 10,
                     generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """Cosine k-means on the L2-normalised rows of ``features``.

    Rows ``x_i = f_i / ‖f_i‖`` are seeded with k-means++ (distance ``1 − cos``, draws from
    ``generator``), then ``num_iters`` times assigned to ``argmax_k x_i·c_k`` and each centroid
    re-estimated as ``c_k = Σ_{i∈k} x_i / ‖Σ_{i∈k} x_i‖``. A cluster left empty takes the point
    farthest from its own centroid, so every centroid stays a unit vector. Deterministic given the
    generator's state; no gradient.

    Args:
        features: (N, D) embeddings.
        num_clusters: K, at most N.
        num_iters: Lloyd iterations after seeding.
        generator: source of the seeding draws (on any device).

    Returns:
        ``(centroids, assignments)``: (K, D) unit centroids and the (N,) long index of the
        nearest centroid of each row.
    """
    if features.dim() != 2:
        raise ValueError(f'spherical_kmeans needs (N, D) features, got shape '
                         f'{tuple(features.shape)}')
    num_points = features.shape[0]
    if num_clusters < 1 or num_points < num_clusters:
        raise ValueError(f'spherical_kmeans needs 1 <= num_clusters <= number of points, got '
                         f'num_clusters={num_clusters} for {num_points} points')
    points = F.normalize(features.detach().float(), dim=1)
    centroids = _kmeans_plus_plus(points, num_clusters, generator)
    for _ in range(num_iters):
        similarity, assignments = _nearest_centroid(points, centroids)
        assignments = _reseed_empty_clusters(assignments, similarity, num_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, points)
        norms = sums.norm(dim=1, keepdim=True)
        # members that cancel out (Σ x_i ≈ 0) leave their centroid where it was
        centroids = torch.where(norms > 1e-6, sums / norms.clamp(min=1e-6), centroids)
    _, assignments = _nearest_centroid(points, centroids)
    return centroids.to(features.dtype), assignments


@torch.no_grad()
def gathered_spherical_kmeans(features: Tensor, num_clusters: int, num_iters: int = 10,
                              generator: Optional[torch.Generator] = None
                              ) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`spherical_kmeans` on the rows of all ranks, identical on every rank.

    ``features`` (N, D) must have the same N on every rank; they are gathered in rank order, so
    the clustering input is exactly that of one process holding the whole batch. ``generator``
    must be in the same state on every rank (e.g. seeded from the iteration).

    Returns:
        ``(centroids, local_assignments, all_assignments)``: (K, D), this rank's (N,) and all
        ranks' (world_size · N,) cluster indices.
    """
    all_features = concat_all_gather(features)
    centroids, all_assignments = spherical_kmeans(all_features, num_clusters, num_iters,
                                                  generator)
    start = get_rank() * features.shape[0]
    return centroids, all_assignments[start:start + features.shape[0]], all_assignments
