"""k-means: spherical (cosine) for pseudo-classes, prototype initialisation and dense evaluation,
Euclidean for dense evaluation protocols that cluster in a Euclidean space (e.g. Leopart's, on
standardised PCA features).

Both metrics share one formulation: a point's *similarity* to a centroid is ``x·c`` (cosine, unit
rows and centroids) or ``-‖x - c‖²`` (Euclidean); a point goes to its most similar centroid,
k-means++ draws seeds with probability ∝ the *distance* ``1 - x·c`` or ``‖x - c‖²`` to the
nearest seed so far, and a run's objective is the sum of the points' similarities to their
centroids (the negated inertia for Euclidean), higher being better.

Two drivers share that formulation, the seeding, the update and the empty-cluster rule:
:func:`kmeans` on rows held in one tensor (training, prototype initialisation; no host
synchronisation), and :func:`chunked_kmeans` on rows that arrive in chunks of any number, on
one or several processes (the dense evaluation protocols, whatever the split size).
"""
from typing import Callable, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdense.utils.dist import all_reduce_sum, concat_all_gather, get_rank, is_distributed

# Rows scored against the centroids at once: memory stays O(CHUNK_ROWS × K), never O(N²).
CHUNK_ROWS = 8192
METRICS = ('cosine', 'euclidean')


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f'k-means metric must be one of {METRICS}, got {metric!r}')
    return metric


def prepare_points(features: Tensor, metric: str) -> Tensor:
    """The rows k-means clusters: L2-normalised for ``'cosine'``, as given (float32) for
    ``'euclidean'``."""
    features = features.detach().float()
    return F.normalize(features, dim=1) if check_metric(metric) == 'cosine' else features


def centroid_similarity(points: Tensor, centroids: Tensor, metric: str = 'cosine') -> Tensor:
    """``(N, K)`` similarities of rows to centroids: ``x·c`` (cosine) or ``-‖x - c‖²``
    (Euclidean, ``= 2 x·c - ‖c‖² - ‖x‖²``, clamped at 0)."""
    dots = points @ centroids.T
    if metric == 'cosine':
        return dots
    squared = (points.pow(2).sum(1, keepdim=True) - 2 * dots + centroids.pow(2).sum(1))
    return -squared.clamp(min=0)


def updated_centroids(sums: Tensor, counts: Tensor, centroids: Tensor,
                      metric: str = 'cosine') -> Tensor:
    """New centroids from the per-cluster sums ``(K, D)`` and member counts ``(K,)`` of their
    points: ``Σ x / ‖Σ x‖`` (cosine; members that cancel out, ``‖Σ x‖ ≈ 0``, leave the centroid
    where it was) or ``Σ x / n`` (Euclidean; an empty cluster keeps its centroid)."""
    if metric == 'cosine':
        norms = sums.norm(dim=1, keepdim=True)
        return torch.where(norms > 1e-6, sums / norms.clamp(min=1e-6), centroids)
    counts = counts.to(sums.dtype)[:, None]
    return torch.where(counts > 0, sums / counts.clamp(min=1), centroids)


def _sample_index(weights: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """One index drawn with probability ∝ ``weights`` (not all zero), as a 0-d tensor on the
    weights' device: ``argmax_i w_i / E_i`` with ``E_i ~ Exp(1)`` (exponential-race sampling),
    which needs no host synchronisation. The noise comes from ``generator`` on its own device, so
    the draw depends only on the generator's state."""
    device = generator.device if generator is not None else weights.device
    noise = torch.empty(weights.shape, device=device).exponential_(generator=generator)
    noise = noise.clamp_(min=torch.finfo(noise.dtype).tiny)  # a zero weight must never win
    return (weights / noise.to(weights.device)).argmax()


def _nearest_centroid(points: Tensor, centroids: Tensor,
                      metric: str = 'cosine') -> Tuple[Tensor, Tensor]:
    """For each row of ``points`` (N, D): the similarity to its nearest centroid
    (:func:`centroid_similarity`) and that centroid's index, computed CHUNK_ROWS rows at a
    time."""
    similarities, indices = [], []
    for chunk in points.split(CHUNK_ROWS):
        best = centroid_similarity(chunk, centroids, metric).max(dim=1)
        similarities.append(best.values)
        indices.append(best.indices)
    return torch.cat(similarities), torch.cat(indices)


def _kmeans_plus_plus(points: Tensor, num_clusters: int, generator: Optional[torch.Generator],
                      metric: str = 'cosine') -> Tensor:
    """k-means++ seeding with the distance ``1 − cos`` (cosine, unit rows) or ``‖x − s‖²``
    (Euclidean): (K, D) distinct rows.

    Seeds stay on the device (no host synchronisation per draw). The K draws are sequential,
    so each is kept to a few operators (GPU kernel launches): rows already drawn carry weight
    ``distance · 0`` through a float mask, and the seed indices are concatenated once at the
    end."""
    untaken = torch.ones(points.shape[0], device=points.device)  # 0 for rows already seeds
    distance = torch.ones(points.shape[0], device=points.device)
    chosen = []
    for draw in range(num_clusters):
        weights = distance * untaken
        # every remaining row duplicates a seed (or k = 0): draw uniformly among the rest
        weights = torch.where(weights.sum() > 0, weights, untaken)
        index = _sample_index(weights, generator).view(1)  # indexing by 0-d tensors syncs
        chosen.append(index)
        untaken.index_fill_(0, index, 0)
        seed = points.index_select(0, index)
        if metric == 'cosine':
            distance = torch.minimum(distance, (1 - points @ seed[0]).clamp(min=0))
        else:  # the first draw is uniform; then ‖x − s‖² to the nearest seed
            to_seed = -centroid_similarity(points, seed, metric)[:, 0]
            distance = to_seed if draw == 0 else torch.minimum(distance, to_seed)
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


def _lloyd(points: Tensor, num_clusters: int, num_iters: int,
           generator: Optional[torch.Generator], metric: str) -> Tuple[Tensor, Tensor, Tensor]:
    """One k-means run on prepared rows: k-means++ seeds, ``num_iters`` Lloyd iterations.
    Returns ``(centroids, assignments, objective)`` (objective: a 0-d tensor, see the module
    docstring)."""
    centroids = _kmeans_plus_plus(points, num_clusters, generator, metric)
    for _ in range(num_iters):
        similarity, assignments = _nearest_centroid(points, centroids, metric)
        assignments = _reseed_empty_clusters(assignments, similarity, num_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, points)
        counts = torch.zeros(num_clusters, dtype=torch.long, device=points.device).index_add_(
            0, assignments, torch.ones_like(assignments))
        centroids = updated_centroids(sums, counts, centroids, metric)
    similarity, assignments = _nearest_centroid(points, centroids, metric)
    return centroids, assignments, similarity.double().sum()


@torch.no_grad()
def kmeans(features: Tensor, num_clusters: int, num_iters: int = 10,
           generator: Optional[torch.Generator] = None, metric: str = 'cosine',
           num_restarts: int = 1) -> Tuple[Tensor, Tensor]:
    """k-means of the rows of ``features`` (N, D), the best of ``num_restarts`` runs.

    ``metric='cosine'``: rows ``x_i = f_i / ‖f_i‖``, centroids ``c_k = Σ_{i∈k} x_i / ‖Σ_{i∈k}
    x_i‖`` (unit vectors), each row assigned to ``argmax_k x_i·c_k``. ``metric='euclidean'``:
    rows as given, ``c_k`` the mean of its members, each row assigned to ``argmin_k ‖x_i −
    c_k‖²``. Each run: k-means++ seeds (draws from ``generator``), then ``num_iters`` Lloyd
    iterations; a cluster left empty takes the point farthest from its own centroid. The runs
    draw their seeds one after the other from ``generator``; the one with the highest objective
    (``Σ_i x_i·c_{a_i}``, or the lowest inertia ``Σ_i ‖x_i − c_{a_i}‖²``) is returned (the first
    on ties). Deterministic given the generator's state; no gradient.

    Args:
        features: (N, D) embeddings.
        num_clusters: K, at most N.
        num_iters: Lloyd iterations after seeding.
        generator: source of the seeding draws (on any device).
        metric: ``'cosine'`` or ``'euclidean'``.
        num_restarts: runs to keep the best of.

    Returns:
        ``(centroids, assignments)``: (K, D) centroids and the (N,) long index of the nearest
        centroid of each row.
    """
    if features.dim() != 2:
        raise ValueError(f'kmeans needs (N, D) features, got shape {tuple(features.shape)}')
    num_points = features.shape[0]
    if num_clusters < 1 or num_points < num_clusters:
        raise ValueError(f'kmeans needs 1 <= num_clusters <= number of points, got '
                         f'num_clusters={num_clusters} for {num_points} points')
    if num_restarts < 1:
        raise ValueError(f'kmeans needs num_restarts >= 1, got {num_restarts}')
    points = prepare_points(features, metric)
    best = None
    for _ in range(num_restarts):
        run = _lloyd(points, num_clusters, num_iters, generator, metric)
        if best is None or run[2] > best[2]:  # one host read per restart, none with one run
            best = run
    centroids, assignments, _ = best
    return centroids.to(features.dtype), assignments


def spherical_kmeans(features: Tensor, num_clusters: int, num_iters: int = 10,
                     generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """Cosine k-means on the L2-normalised rows of ``features``: one run of :func:`kmeans` with
    ``metric='cosine'``; every centroid is a unit vector.

    Returns:
        ``(centroids, assignments)``: (K, D) unit centroids and the (N,) long index of the
        nearest centroid of each row.
    """
    return kmeans(features, num_clusters, num_iters, generator, 'cosine')


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


def _lexsort(similarity: Tensor, index: Tensor) -> Tensor:
    """Order by ascending similarity, ties by ascending point index."""
    order = index.argsort()
    return order[similarity[order].argsort(stable=True)]


class ChunkedLloydPass:
    """One assignment pass of :func:`chunked_kmeans` over rows given in chunks (:meth:`add`):
    per-cluster float64 sums and counts, each cluster's most similar member (similarity and
    global point index; ties → highest index), and the ``2K`` least similar points (similarity,
    index, cluster, row), the donors :meth:`reseed_empty` may need. Memory is ``O(K·D)``,
    whatever the number of points.

    With the global point indices of the rows as :func:`kmeans` would see them stacked, the
    pass followed by :meth:`reseed_empty` and :meth:`centroids_update` is one Lloyd iteration of
    :func:`kmeans`, empty clusters included (``_reseed_empty_clusters``).
    """

    def __init__(self, centroids: Tensor, metric: str = 'cosine') -> None:
        num_clusters, channels = centroids.shape
        device = centroids.device
        self.centroids, self.metric = centroids, metric
        self.sums = torch.zeros(num_clusters, channels, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_clusters, dtype=torch.long, device=device)
        self.best_sim = torch.full((num_clusters, ), -float('inf'), device=device)
        self.best_index = torch.full((num_clusters, ), -1, dtype=torch.long, device=device)
        self.far = (torch.zeros(0, device=device), torch.zeros(0, dtype=torch.long, device=device),
                    torch.zeros(0, dtype=torch.long, device=device),
                    torch.zeros(0, channels, device=device))

    def add(self, x: Tensor, index: Tensor) -> None:
        """Assign the rows ``x (M, D)`` of global point indices ``index (M,)``."""
        sims, assign = centroid_similarity(x, self.centroids, self.metric).max(1)
        num_clusters = len(self.counts)
        self.sums.index_add_(0, assign, x.double())
        self.counts += torch.bincount(assign, minlength=num_clusters)
        self._update_best(sims, index, assign)
        self.far = self._least_similar(self.far, (sims, index, assign, x))

    def _update_best(self, sims: Tensor, index: Tensor, assign: Tensor) -> None:
        best = torch.maximum(self.best_sim, torch.full_like(self.best_sim, -float('inf'))
                             .scatter_reduce(0, assign, sims, 'amax'))
        at_best = sims == best[assign]
        index_at_best = torch.full_like(self.best_index, -1).scatter_reduce(
            0, assign[at_best], index[at_best], 'amax')
        self.best_index = torch.where(self.best_sim == best,
                                      torch.maximum(self.best_index, index_at_best),
                                      index_at_best)
        self.best_sim = best

    def _least_similar(self, *parts: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        """The ``2K`` least similar points of the ``(sims, index, assign, x)`` tuples, sorted
        by similarity, ties by index."""
        sims, index, assign, x = (torch.cat(column) for column in zip(*parts))
        keep = _lexsort(sims, index)[:2 * len(self.counts)]
        return sims[keep], index[keep], assign[keep], x[keep]

    def reduce(self) -> None:
        """Combine the passes of all ranks (identical result on every rank); the donor lists
        are padded to ``2K`` rows of similarity ``+inf`` for the exchange (never donors while a
        real point is left)."""
        if not is_distributed():
            return
        self.sums, self.counts = all_reduce_sum(self.sums), all_reduce_sum(self.counts)
        rows = 2 * len(self.counts)
        padded = []
        for part, fill in zip(self.far, (float('inf'), -1, 0, 0)):
            pad = part.new_full((rows - len(part), *part.shape[1:]), fill)
            padded.append(concat_all_gather(torch.cat([part, pad])))
        self.far = self._least_similar(tuple(padded))
        sims = concat_all_gather(self.best_sim[None])
        index = concat_all_gather(self.best_index[None])
        self.best_sim = sims.max(0).values
        self.best_index = torch.where(sims == self.best_sim, index, -1).max(0).values

    def reseed_empty(self) -> None:
        """Move donors into the empty clusters as :func:`kmeans` does: the j-th empty cluster
        (by index) takes the j-th least similar point (ties by index) among those that are not
        the most similar member of their cluster."""
        empty = torch.nonzero(self.counts == 0).flatten()
        if not len(empty):
            return
        sims, index, assign, x = self.far
        donors = torch.nonzero(index != self.best_index[assign]).flatten()[:len(empty)]
        x = x[donors].double()
        self.sums.index_add_(0, assign[donors], -x).index_add_(0, empty, x)
        self.counts.index_add_(0, assign[donors], -torch.ones_like(donors))
        self.counts.index_add_(0, empty, torch.ones_like(donors))

    def centroids_update(self) -> Tensor:
        """:func:`updated_centroids` of the pass's sums."""
        return updated_centroids(self.sums, self.counts, self.centroids.double(),
                                 self.metric).float()


@torch.no_grad()
def chunked_kmeans(chunks: Callable[[], Iterable[Tuple[Tensor, Tensor]]], seed_points: Tensor,
                   num_clusters: int, num_iters: int = 10,
                   generator: Optional[torch.Generator] = None,
                   metric: str = 'cosine') -> Tuple[Tensor, float]:
    """One k-means run on prepared rows (:func:`prepare_points`) that arrive in chunks.

    ``chunks()`` yields ``(rows (M, D), global point indices (M,))`` over this process's points
    (each call a new pass); under ``torch.distributed`` every rank passes its own points and
    gets the same result. Seeds: k-means++ with ``generator`` on ``seed_points (S, D)`` (all
    points in global order, or a sample of them: the seeding :func:`kmeans` would do on those
    rows); then ``num_iters`` Lloyd passes (:class:`ChunkedLloydPass`), the same iterations as
    :func:`kmeans` when ``seed_points`` are all the points. Returns the ``(K, D)`` centroids and
    the run's objective over all points of all ranks (float64 sum, higher is better).
    """
    check_metric(metric)
    centroids = _kmeans_plus_plus(seed_points, num_clusters, generator, metric)
    for _ in range(num_iters):
        lloyd = ChunkedLloydPass(centroids, metric)
        for x, index in chunks():
            lloyd.add(x, index)
        lloyd.reduce()
        lloyd.reseed_empty()
        centroids = lloyd.centroids_update()
    score = torch.zeros((), dtype=torch.float64, device=centroids.device)
    for x, _ in chunks():
        score += centroid_similarity(x, centroids, metric).max(1).values.double().sum()
    return centroids, float(all_reduce_sum(score))
