"""Streaming dense evaluation: splits of any size, on CPU, one GPU or several processes.

A split's dense features are extracted once, through a ``DataLoader`` (workers, pinned memory),
into a :class:`FeatureStore`: files on local disk that hold the features, labels (and instance
maps) of the images this process owns. With ``W`` processes (``torch.distributed``), rank ``r``
owns images ``r, r + W, r + 2W, ...`` of the split. Every protocol then reads the stores back a
few images at a time, so memory is bounded by the chunk sizes, never by the split:

* ``linear``: per-channel statistics in one pass (float64 sums), then the 1×1-conv probe trained
  on mini-batches of images read from the store in the order of one global ``randperm`` per
  epoch; each step sums the cross-entropy over the images a rank owns, all-reduces the gradient
  sums and the valid-pixel count, and divides: the gradient of the mean loss over the whole
  mini-batch, as one process computes it.
* ``knn``: the bank is the train store, streamed in chunks; a block of val queries (gathered from
  all ranks) keeps a running top-k over the chunks of each rank's bank, the ranks' top-k lists are
  merged, and each rank votes for its own queries.
* ``cluster``: k-means (:mod:`mmdense.models.utils.kmeans`: spherical, or Euclidean on
  standardised PCA rows as Leopart, the PCA from one float64 pass of the channel moments) fitted
  on the val or the train store, with k-means++ seeding on the points (all of them, or a seeded
  sample of about ``max_seed_points``), then Lloyd iterations that accumulate per-cluster sums
  over the chunks (float64, all-reduced); empty clusters are re-seeded exactly as the in-memory
  k-means does, from the lowest-similarity points kept while streaming.
* ``dispersion`` and the ``grid_mIoU`` ceiling: sums and confusion matrices, all-reduced.

Why a disk store rather than recomputing features every epoch: the backbone runs once per image
whatever the number of probe epochs and protocols, and the store costs ``N·h·w·C`` values on disk
(float16 halves it), e.g. ~15 GB for the 49,629 COCO-Stuff-27 training images at 320 px with
ViT-S/16 features in float16. Data augmentation of the probe's inputs is therefore not
supported.

Memory held at once, whatever the split size: a chunk of ``chunk_images`` feature maps, one
probe mini-batch (its logits at the label size, with gradients), a block of ``query_images``
queries from every rank plus at most :data:`SIM_BLOCK` query-bank similarities, the kNN bank's
patch labels (2 bytes per train patch), and the k-means seed sample (at most about
``max_seed_points`` rows, three copies while seeding).

With features stored in float32, every protocol returns the in-memory result of
:mod:`mmdense.evaluation.protocols` up to floating-point summation order, whatever the chunk
sizes and the number of processes.
"""
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from mmdense.models.utils.kmeans import (centroid_similarity, check_metric, kmeans,
                                         prepare_points, updated_centroids)
from mmdense.utils.dist import all_reduce_sum, get_rank, get_world_size, is_distributed
from .feature_store import FeatureStore
from .metrics import confusion_matrix, scores_from_confusion
from .protocols import (build_probe_optimizer, class_dispersion, cluster_scores,
                        flatten_features, init_probe, instance_sums, knn_vote,
                        mean_pairwise_cosine, patch_labels, standardised_pca, upsample_labels)

# Entries of one query × bank similarity block (64 MB in float32), whatever the chunk sizes.
SIM_BLOCK = 2**24


def _all_reduce_max(value: int, device) -> int:
    tensor = torch.tensor([value], device=device)
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor)


def _gather_padded(tensor: Tensor) -> List[Tensor]:
    """Every rank's ``tensor`` (rows may differ between ranks; other dims may not), in rank
    order; rows are zero-padded for the exchange and cut back afterwards."""
    if not is_distributed():
        return [tensor]
    rows = torch.tensor([len(tensor)], device=tensor.device)
    all_rows = [torch.empty_like(rows) for _ in range(get_world_size())]
    dist.all_gather(all_rows, rows)
    most = int(max(all_rows))
    padded = tensor.new_zeros((most, *tensor.shape[1:]))
    padded[:len(tensor)] = tensor
    gathered = [torch.empty_like(padded) for _ in all_rows]
    dist.all_gather(gathered, padded)
    return [part[:int(n)] for part, n in zip(gathered, all_rows)]


def _gather_cat(tensor: Tensor) -> Tensor:
    return torch.cat(_gather_padded(tensor))


def _total_images(store: FeatureStore, device) -> int:
    return int(all_reduce_sum(torch.tensor([len(store)], device=device)))


def _confusion_scores(matrix: Tensor, missed: Tensor) -> Dict[str, float]:
    """Scores of confusion counts summed over ranks."""
    return scores_from_confusion(all_reduce_sum(matrix).cpu(), all_reduce_sum(missed).cpu())


def _accumulate(totals: Optional[Tuple[Tensor, Tensor]], pred: Tensor, labels: Tensor,
                num_pred: int, num_classes: int, ignore_index: int):
    matrix, missed = confusion_matrix(pred, labels, num_pred, num_classes, ignore_index)
    return (matrix, missed) if totals is None else (totals[0] + matrix, totals[1] + missed)


def _zero_confusion(num_pred: int, num_classes: int, device) -> Tuple[Tensor, Tensor]:
    return (torch.zeros(num_classes, num_pred, dtype=torch.long, device=device),
            torch.zeros(num_classes, dtype=torch.long, device=device))


def stream_feature_stats(store: FeatureStore, chunk_images: int = 16,
                         device='cpu') -> Tuple[Tensor, Tensor]:
    """Per-channel mean and unbiased std (+1e-6) of all stored features, over all ranks:
    ``(1, C, 1, 1)`` each, from float64 sums of ``x`` and ``x²``."""
    channels = store.feat_shape[0]
    sums = torch.zeros(2, channels, dtype=torch.float64, device=device)
    count = torch.zeros(1, dtype=torch.float64, device=device)
    for chunk in store.chunks(chunk_images, fields=('feats', )):
        feats = chunk['feats'].to(device).double()
        sums[0] += feats.sum((0, 2, 3))
        sums[1] += feats.pow(2).sum((0, 2, 3))
        count += feats.numel() // channels
    sums, count = all_reduce_sum(sums), all_reduce_sum(count)
    mean = sums[0] / count
    var = (sums[1] - count * mean.pow(2)) / (count - 1)
    std = var.clamp(min=0).sqrt() + 1e-6
    return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)


def _reduce_mean_gradient(probe: nn.Module, valid: Tensor) -> None:
    """Turn every rank's gradient of its summed loss into the gradient of the mean loss over
    the valid pixels of all ranks (one all-reduce of the gradients and the count)."""
    params = list(probe.parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = all_reduce_sum(
        torch.cat([g.reshape(-1).double() for g in grads] + [valid.reshape(1).double()]))
    flat = flat[:-1] / flat[-1].clamp(min=1)
    for param, grad in zip(params, flat.split([p.numel() for p in params])):
        param.grad = grad.view_as(param).to(param.dtype)


def stream_fit_linear_probe(train_store: FeatureStore, num_classes: int, epochs: int = 30,
                            batch_size: int = 16, ignore_index: int = 255, seed: int = 0,
                            device='cpu', chunk_images: int = 16, progress: bool = False,
                            standardize: bool = True, drop_last: bool = False,
                            train_label_size: Optional[int] = None,
                            **optim_cfg) -> Tuple[nn.Conv2d, Tensor, Tensor]:
    """:func:`~.protocols.fit_linear_probe` on stored features; returns ``(probe, mean, std)``.

    The images of a step are the same as in the in-memory version (the same seeded permutation
    of the whole split, ``batch_size`` images per step over all ranks); each rank reads the ones
    it owns. ``standardize=False`` feeds the probe the features as stored (Leopart; then
    ``mean = 0``, ``std = 1``); ``drop_last`` skips each epoch's last, incomplete batch;
    ``train_label_size``: the loss is taken on label maps brought (nearest) to that size
    (Leopart trains at 100 px, scores at 448).
    """
    if standardize:
        mean, std = stream_feature_stats(train_store, chunk_images, device)
    else:
        mean = torch.zeros(1, train_store.feat_shape[0], 1, 1, device=device)
        std = torch.ones_like(mean)
    probe = init_probe(train_store.feat_shape[0], num_classes, seed).to(device)
    optimizer, scheduler = build_probe_optimizer(probe, **optim_cfg)
    position_of = {index: position for position, index in enumerate(train_store.indices)}
    total = _total_images(train_store, device)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        for batch in torch.randperm(total, generator=generator).split(batch_size):
            if drop_last and len(batch) < batch_size:
                continue
            positions = sorted(position_of[i] for i in batch.tolist() if i in position_of)
            optimizer.zero_grad()
            valid = torch.zeros((), device=device)
            if positions:
                chunk = train_store.read(positions, fields=('feats', 'labels'))
                labels = chunk['labels'].to(device)
                if train_label_size is not None:
                    labels = upsample_labels(labels, (train_label_size, train_label_size))
                logits = F.interpolate(probe((chunk['feats'].to(device) - mean) / std),
                                       size=labels.shape[-2:], mode='bilinear',
                                       align_corners=False)
                F.cross_entropy(logits, labels, ignore_index=ignore_index,
                                reduction='sum').backward()
                valid = (labels != ignore_index).sum()
            _reduce_mean_gradient(probe, valid)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if progress and get_rank() == 0:
            print(f'linear probe: epoch {epoch + 1}/{epochs}', flush=True)
    return probe, mean, std


def stream_linear_probe(train_store: FeatureStore, val_store: FeatureStore, num_classes: int,
                        epochs: int = 30, lr: float = 1e-2, batch_size: int = 16,
                        ignore_index: int = 255, seed: int = 0, device='cpu',
                        chunk_images: int = 16, progress: bool = False,
                        **options) -> Dict[str, float]:
    """:func:`~.protocols.linear_probe` on stored features (see the module docstring), scored
    on the val label maps as stored; ``options`` go to :func:`stream_fit_linear_probe`."""
    probe, mean, std = stream_fit_linear_probe(train_store, num_classes, epochs, batch_size,
                                               ignore_index, seed, device, chunk_images,
                                               progress, lr=lr, **options)
    totals = _zero_confusion(num_classes, num_classes, device)
    with torch.no_grad():
        for chunk in val_store.chunks(chunk_images, fields=('feats', 'labels')):
            labels = chunk['labels'].to(device)
            logits = F.interpolate(probe((chunk['feats'].to(device) - mean) / std),
                                   size=labels.shape[-2:], mode='bilinear', align_corners=False)
            totals = _accumulate(totals, logits.argmax(1), labels, num_classes, num_classes,
                                 ignore_index)
    return _confusion_scores(*totals)


def _bank_patch_labels(train_store: FeatureStore, num_classes: int, ignore_index: int,
                       chunk_images: int, device) -> List[Tensor]:
    """Patch labels (:func:`~.protocols.patch_labels`) of every chunk of the bank, flattened,
    as int16 on CPU: computed once per kNN evaluation (2 bytes per train patch), not once per
    block of queries."""
    grid = train_store.feat_shape[-2:]
    return [
        patch_labels(chunk['labels'].to(device), grid, num_classes,
                     ignore_index).reshape(-1).to(torch.int16).cpu()
        for chunk in train_store.chunks(chunk_images, fields=('labels', ))
    ]


def _bank_chunks(train_store: FeatureStore, bank_labels: List[Tensor], ignore_index: int,
                 chunk_images: int, device) -> Iterator[Tuple[Tensor, Tensor]]:
    """``(unit features (M, C), patch labels (M,))`` of the labelled train patches, by chunk."""
    for chunk, labels in zip(train_store.chunks(chunk_images, fields=('feats', )),
                             bank_labels):
        labels = labels.to(device).long()
        keep = labels != ignore_index
        yield flatten_features(chunk['feats'].to(device))[keep], labels[keep]


def _merge_topk(sims: Tensor, labels: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The ``k`` highest of each row of ``sims (Q, M)`` with their ``labels (Q, M)``."""
    top, where = sims.topk(min(k, sims.shape[1]), dim=1)
    return top, labels.gather(1, where)


def _local_topk(queries: Tensor, train_store: FeatureStore, bank_labels: List[Tensor],
                k: int, ignore_index: int, chunk_images: int) -> Tuple[Tensor, Tensor]:
    """Top-k similarities ``(Q, k)`` of ``queries`` over this rank's bank, with the neighbours'
    labels; missing neighbours (a bank smaller than ``k``) have similarity ``-inf``."""
    best = torch.full((len(queries), k), -float('inf'), device=queries.device)
    best_labels = torch.zeros((len(queries), k), dtype=torch.long, device=queries.device)
    for bank, labels in _bank_chunks(train_store, bank_labels, ignore_index, chunk_images,
                                     queries.device):
        if not len(bank):
            continue
        rows = max(1, SIM_BLOCK // len(bank))
        for start in range(0, len(queries), rows):
            part = slice(start, start + rows)
            top, where = (queries[part] @ bank.T).topk(min(k, len(bank)), dim=1)
            best[part], best_labels[part] = _merge_topk(
                torch.cat([best[part], top], 1),
                torch.cat([best_labels[part], labels[where]], 1), k)
    return best, best_labels


@torch.no_grad()
def stream_knn(train_store: FeatureStore, val_store: FeatureStore, num_classes: int,
               k: int = 10, temperature: float = 0.07, ignore_index: int = 255, device='cpu',
               chunk_images: int = 16, query_images: int = 32) -> Dict[str, float]:
    """:func:`~.protocols.knn_segmentation` on stored features.

    Val images are taken ``query_images`` at a time per rank; the block of all ranks' queries
    is scored against each rank's bank (``chunk_images`` train images at a time, similarity
    blocks of at most :data:`SIM_BLOCK` entries), and the per-rank top-k lists are merged.
    The bank is read once per block of queries.
    """
    bank_labels = _bank_patch_labels(train_store, num_classes, ignore_index, chunk_images,
                                     device)
    bank_size = sum(int((labels != ignore_index).sum()) for labels in bank_labels)
    if int(all_reduce_sum(torch.tensor([bank_size], device=device))) == 0:
        raise ValueError('kNN memory bank is empty: no training patch has a valid label')
    _, h, w = val_store.feat_shape
    rounds = _all_reduce_max(-(-len(val_store) // query_images), device)
    totals = _zero_confusion(num_classes, num_classes, device)
    for block in range(rounds):
        chunk = val_store.read(range(min(block * query_images, len(val_store)),
                                     min((block + 1) * query_images, len(val_store))))
        queries = flatten_features(chunk['feats'].to(device))
        per_rank = _gather_padded(queries)
        sims, labels = _local_topk(torch.cat(per_rank), train_store, bank_labels, k,
                                   ignore_index, chunk_images)
        start = sum(len(q) for q in per_rank[:get_rank()])
        mine = slice(start, start + len(queries))
        sims = torch.cat([part[mine] for part in _gather_padded(sims)], 1)
        labels = torch.cat([part[mine] for part in _gather_padded(labels)], 1)
        sims, labels = _merge_topk(sims, labels, k)
        if not len(queries):
            continue
        pred = knn_vote(sims, labels, num_classes, temperature).reshape(-1, h, w)
        val_labels = chunk['labels'].to(device)
        totals = _accumulate(totals, upsample_labels(pred, val_labels.shape[-2:]), val_labels,
                             num_classes, num_classes, ignore_index)
    return _confusion_scores(*totals)


def _points(store: FeatureStore, chunk_images: int, device,
            transform: Optional['PointTransform'] = None, fields=('feats', 'labels', 'instances')
            ) -> Iterator[Tuple[Tensor, Tensor, Dict[str, Tensor]]]:
    """``(rows (n·h·w, D), global point indices (n·h·w,), chunk)`` by chunk, the rows
    ``transform(feats)`` (default: unit rows); point ``p`` of image ``i`` (row-major on the
    grid) has index ``i·h·w + p``, as in the in-memory flattening of the whole split."""
    _, h, w = store.feat_shape
    transform = transform or PointTransform(store)
    for chunk in store.chunks(chunk_images, fields):
        index = (chunk['indices'][:, None] * (h * w) + torch.arange(h * w)).reshape(-1)
        yield transform(chunk['feats'].to(device)), index.to(device), chunk


class PointTransform:
    """The rows k-means clusters, from feature maps ``(n, C, h, w)``.

    ``metric='cosine'`` (the default): L2-normalised rows (:func:`~.protocols.flatten_features`).
    With ``pca_dim`` (Leopart): rows standardised per channel over the fitting split and
    projected on its ``pca_dim`` principal components (:func:`~.protocols.standardised_pca`,
    from float64 moments streamed over every point of every rank), for Euclidean k-means.
    """

    def __init__(self, store: FeatureStore, metric: str = 'cosine',
                 pca_dim: Optional[int] = None, chunk_images: int = 16, device='cpu') -> None:
        check_metric(metric)
        if pca_dim is not None and metric != 'euclidean':
            raise ValueError("standardise + PCA (pca_dim) goes with metric='euclidean' "
                             f'(Leopart), got metric={metric!r}')
        self.metric, self.pca_dim = metric, pca_dim
        if pca_dim is None:
            return
        channels = store.feat_shape[0]
        count = torch.zeros((), dtype=torch.float64, device=device)
        sums = torch.zeros(channels, dtype=torch.float64, device=device)
        outer = torch.zeros(channels, channels, dtype=torch.float64, device=device)
        for chunk in store.chunks(chunk_images, fields=('feats', )):
            rows = _rows(chunk['feats'].to(device)).double()
            count += len(rows)
            sums += rows.sum(0)
            outer += rows.T @ rows
        self.mean, self.scale, self.components = (part.float() for part in standardised_pca(
            all_reduce_sum(count), all_reduce_sum(sums), all_reduce_sum(outer), pca_dim))

    def __call__(self, feats: Tensor) -> Tensor:
        if self.pca_dim is None:
            return prepare_points(_rows(feats), self.metric)
        return ((_rows(feats) - self.mean) / self.scale) @ self.components


def _rows(feats: Tensor) -> Tensor:
    """``(n, C, h, w)`` → ``(n·h·w, C)`` float32, row-major over the grid."""
    return feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).float()


def _seed_points(store: FeatureStore, max_points: int, seed: int, chunk_images: int, device,
                 transform: PointTransform) -> Tensor:
    """The points k-means++ draws its seeds from, from all ranks in global order: every point
    when there are at most ``max_points``, else a sample of about ``max_points`` (each point
    kept with probability ``max_points / #points``, drawn per image from a generator seeded by
    ``(seed, image index)``, so the sample does not depend on the sharding)."""
    _, h, w = store.feat_shape
    num_points = _total_images(store, device) * h * w
    rows, keys = [], []
    for x, index, chunk in _points(store, chunk_images, device, transform, fields=('feats', )):
        if num_points > max_points:
            keep = torch.cat([
                torch.rand(h * w, generator=torch.Generator().manual_seed(seed * 7919 + int(i)))
                < max_points / num_points for i in chunk['indices']
            ]).to(device)
            x, index = x[keep], index[keep]
        rows.append(x)
        keys.append(index)
    dim = transform.pca_dim or store.feat_shape[0]
    rows = _gather_cat(torch.cat(rows) if rows else torch.zeros(0, dim, device=device))
    keys = _gather_cat(torch.cat(keys) if keys else torch.zeros(0, dtype=torch.long,
                                                                device=device))
    return rows[keys.argsort()]


def _lexsort(sims: Tensor, index: Tensor) -> Tensor:
    """Order by ascending similarity, ties by ascending point index."""
    order = index.argsort()
    return order[sims[order].argsort(stable=True)]


class _LloydPass:
    """One assignment pass of streaming k-means: per-cluster float64 sums and counts, each
    cluster's most similar member (its similarity and point index; ties → highest index), and
    the ``2K`` least similar points (similarity, index, cluster, row): the donors that
    :func:`_LloydPass.reseed_empty` may need. Similarities as
    :func:`~mmdense.models.utils.kmeans.centroid_similarity` of ``metric``."""

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
        by :func:`_lexsort`."""
        sims, index, assign, x = (torch.cat(column) for column in zip(*parts))
        keep = _lexsort(sims, index)[:2 * len(self.counts)]
        return sims[keep], index[keep], assign[keep], x[keep]

    def reduce(self) -> None:
        """Combine the passes of all ranks (identical result on every rank)."""
        if not is_distributed():
            return
        self.sums, self.counts = all_reduce_sum(self.sums), all_reduce_sum(self.counts)
        self.far = self._least_similar(tuple(_gather_cat(part) for part in self.far))
        sims = torch.stack(_gather_padded(self.best_sim[None]))[:, 0]
        index = torch.stack(_gather_padded(self.best_index[None]))[:, 0]
        self.best_sim = sims.max(0).values
        self.best_index = torch.where(sims == self.best_sim, index, -1).max(0).values

    def reseed_empty(self) -> None:
        """Move donors into the empty clusters as :func:`spherical_kmeans` does: the j-th empty
        cluster (by index) takes the j-th least similar point (ties by index) among those that
        are not the most similar member of their cluster."""
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
        """:func:`~mmdense.models.utils.kmeans.updated_centroids` of the pass's sums."""
        return updated_centroids(self.sums, self.counts, self.centroids.double(),
                                 self.metric).float()


@torch.no_grad()
def stream_kmeans(store: FeatureStore, num_clusters: int, num_iters: int = 10,
                  generator: Optional[torch.Generator] = None, max_seed_points: int = 50_000,
                  sample_seed: int = 0, chunk_images: int = 16, device='cpu',
                  transform: Optional[PointTransform] = None) -> Tensor:
    """One run of :func:`mmdense.models.utils.kmeans.kmeans` on the rows ``transform(feats)``
    of all stored patch features (default: unit rows, cosine), streamed; returns the ``(K, D)``
    centroids.

    Seeds: k-means++ with ``generator`` on :func:`_seed_points` (all points when there are at
    most ``max_seed_points``: then the seeds, and so the result, are those of the in-memory
    function given the same generator state). Then ``num_iters`` Lloyd passes over the chunks.
    """
    transform = transform or PointTransform(store)
    _, h, w = store.feat_shape
    num_points = _total_images(store, device) * h * w
    if num_clusters < 1 or num_points < num_clusters:
        raise ValueError(f'kmeans needs 1 <= num_clusters <= number of points, got '
                         f'num_clusters={num_clusters} for {num_points} points')
    seeds = _seed_points(store, max_seed_points, sample_seed, chunk_images, device, transform)
    centroids, _ = kmeans(seeds, num_clusters, 0, generator, transform.metric)  # k-means++ only
    for _ in range(num_iters):
        lloyd = _LloydPass(centroids, transform.metric)
        for x, index, _ in _points(store, chunk_images, device, transform, fields=('feats', )):
            lloyd.add(x, index)
        lloyd.reduce()
        lloyd.reseed_empty()
        centroids = lloyd.centroids_update()
    return centroids


def stream_spherical_kmeans(store: FeatureStore, num_clusters: int, num_iters: int = 10,
                            generator: Optional[torch.Generator] = None,
                            max_seed_points: int = 50_000, sample_seed: int = 0,
                            chunk_images: int = 16, device='cpu') -> Tensor:
    """:func:`stream_kmeans` of the unit rows (cosine):
    :func:`~mmdense.models.utils.spherical_kmeans` of all stored patch features."""
    return stream_kmeans(store, num_clusters, num_iters, generator, max_seed_points, sample_seed,
                         chunk_images, device)


def _objective(store: FeatureStore, centroids: Tensor, transform: PointTransform,
               chunk_images: int) -> float:
    """``Σ_i max_k sim(x_i, c_k)`` over the points of all ranks (the k-means objective of the
    module docstring of :mod:`mmdense.models.utils.kmeans`)."""
    score = torch.zeros((), dtype=torch.float64, device=centroids.device)
    for x, _, _ in _points(store, chunk_images, centroids.device, transform, fields=('feats', )):
        score += centroid_similarity(x, centroids, transform.metric).max(1).values.double().sum()
    return float(all_reduce_sum(score))


def _cluster_counts(store: FeatureStore, centroids: Tensor, transform: PointTransform,
                    num_classes: int, ignore_index: int, chunk_images: int,
                    upsample: str = 'nearest', score_size: Optional[int] = None) -> Tensor:
    """Class×cluster pixel counts ``(C, K)`` over all ranks of the val maps of ``store``.

    Each point goes to its most similar centroid; ``upsample='nearest'`` upsamples that cluster
    map (nearest) to the label size, ``'bilinear'`` upsamples the ``(K, h, w)`` similarity maps
    bilinearly and takes the per-pixel argmax (PiCIE's evaluation). ``score_size``: the labels
    are first brought to ``score_size²`` (nearest; Leopart scores clusters at 100 px).
    """
    device = centroids.device
    matrix = torch.zeros(num_classes, len(centroids), dtype=torch.long, device=device)
    _, h, w = store.feat_shape
    for x, _, chunk in _points(store, chunk_images, device, transform,
                               fields=('feats', 'labels')):
        labels = chunk['labels'].to(device)
        if score_size is not None:
            labels = upsample_labels(labels, (score_size, score_size))
        sims = centroid_similarity(x, centroids, transform.metric)
        if upsample == 'bilinear':
            maps = sims.reshape(-1, h, w, len(centroids)).permute(0, 3, 1, 2)
            cluster_map = F.interpolate(maps, size=labels.shape[-2:], mode='bilinear',
                                        align_corners=False).argmax(1)
        elif upsample == 'nearest':
            cluster_map = upsample_labels(sims.argmax(1).reshape(-1, h, w), labels.shape[-2:])
        else:
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
        matrix += confusion_matrix(cluster_map, labels, len(centroids), num_classes,
                                   ignore_index)[0]
    return all_reduce_sum(matrix).cpu()


@torch.no_grad()
def stream_cluster_segmentation(val_store: FeatureStore, num_classes: int,
                                num_clusters: Optional[int] = None,
                                matching: str = 'hungarian', ignore_index: int = 255,
                                seed: int = 0, num_iters: int = 50, num_init: int = 3,
                                max_seed_points: int = 50_000, device='cpu',
                                chunk_images: int = 16, fit: str = 'val',
                                train_store: Optional[FeatureStore] = None,
                                metric: str = 'cosine', pca_dim: Optional[int] = None,
                                num_seeds: int = 1, upsample: str = 'nearest',
                                score_size: Optional[int] = None) -> Dict[str, float]:
    """Unsupervised segmentation by k-means on stored features, clusters matched to classes.

    The k-means is fitted on the ``fit`` split's patch features (``'val'``: the scored features
    themselves, :func:`~.protocols.cluster_segmentation`; ``'train'``: ``train_store``, PiCIE)
    as rows of a :class:`PointTransform` (``metric``, ``pca_dim``): the best (highest
    objective on the fitted split) of ``num_init`` runs of :func:`stream_kmeans`, all seeded
    from one generator seeded with ``seed``. Each val point takes its most similar centroid
    (``upsample``, ``score_size``: :func:`_cluster_counts`) and
    :func:`~.protocols.cluster_scores` matches clusters to classes (``matching``).

    ``num_seeds > 1`` repeats all of it with seeds ``seed, seed + 1, ...`` and returns the mean
    of each metric and its population std (``mIoU_std``, ``pAcc_std``), as Leopart reports.
    """
    if fit not in ('val', 'train'):
        raise ValueError(f"cluster fit must be 'val' or 'train', got {fit!r}")
    if fit == 'train' and train_store is None:
        raise ValueError("cluster fit='train' needs a training split")
    fit_store = train_store if fit == 'train' else val_store
    num_clusters = num_clusters or num_classes
    transform = PointTransform(fit_store, metric, pca_dim, chunk_images, device)
    runs = []
    for run_seed in range(seed, seed + num_seeds):
        generator = torch.Generator().manual_seed(run_seed)
        best_score, best = -float('inf'), None
        for _ in range(num_init):
            centroids = stream_kmeans(fit_store, num_clusters, num_iters, generator,
                                      max_seed_points, run_seed, chunk_images, device, transform)
            score = _objective(fit_store, centroids, transform, chunk_images)
            if score > best_score:
                best_score, best = score, centroids
        matrix = _cluster_counts(val_store, best, transform, num_classes, ignore_index,
                                 chunk_images, upsample, score_size)
        runs.append(cluster_scores(matrix, matching))
    if num_seeds == 1:
        return runs[0]
    values = {name: torch.tensor([run[name] for run in runs], dtype=torch.float64)
              for name in runs[0]}
    return {key: value for name, column in values.items()
            for key, value in ((name, float(column.mean())),
                               (f'{name}_std', float(column.std(unbiased=False))))}


@torch.no_grad()
def stream_dispersion(val_store: FeatureStore, num_classes: int, ignore_index: int = 255,
                      device='cpu', chunk_images: int = 16) -> Dict[str, float]:
    """:func:`~.protocols.dispersion_stats` on stored features (with ``intra_instance`` when
    the store holds instance maps)."""
    channels, h, w = val_store.feat_shape
    sums = torch.zeros(num_classes, channels, dtype=torch.float64, device=device)
    counts = torch.zeros(num_classes, dtype=torch.long, device=device)
    instance = torch.zeros(2, dtype=torch.float64, device=device)  # Σ mean cosine, #instances
    for x, _, chunk in _points(val_store, chunk_images, device):
        labels = patch_labels(chunk['labels'].to(device), (h, w), num_classes,
                              ignore_index).reshape(-1)
        keep = labels != ignore_index
        sums.index_add_(0, labels[keep], x[keep].double())
        counts += torch.bincount(labels[keep], minlength=num_classes)
        if chunk['instances'] is not None:
            inst_sums, inst_counts = instance_sums(x.double(), chunk['instances'].to(device),
                                                   (h, w))
            pairwise = mean_pairwise_cosine(inst_sums, inst_counts.double())
            instance += torch.stack([pairwise.sum(), torch.tensor(len(pairwise), device=device,
                                                                  dtype=torch.float64)])
    stats = class_dispersion(all_reduce_sum(sums).cpu(), all_reduce_sum(counts).cpu())
    if val_store.has_instances:
        total, number = all_reduce_sum(instance).tolist()
        stats['intra_instance'] = total / number if number else float('nan')
    return stats


@torch.no_grad()
def stream_grid_ceiling(val_store: FeatureStore, num_classes: int, ignore_index: int = 255,
                        device='cpu', chunk_images: int = 16) -> Dict[str, float]:
    """:func:`~.protocols.grid_majority_scores` of the stored labels on the feature grid."""
    grid = val_store.feat_shape[-2:]
    totals = _zero_confusion(num_classes, num_classes, device)
    for chunk in val_store.chunks(chunk_images, fields=('labels', )):
        labels = chunk['labels'].to(device)
        majority = patch_labels(labels, grid, num_classes, ignore_index, min_valid=0.0)
        totals = _accumulate(totals, upsample_labels(majority, labels.shape[-2:]), labels,
                             num_classes, num_classes, ignore_index)
    return _confusion_scores(*totals)


STREAM_PROTOCOLS = ('linear', 'knn', 'cluster', 'dispersion')


def run_stream_protocol(protocol: str, train_store: Optional[FeatureStore],
                        val_store: FeatureStore, num_classes: int, ignore_index: int = 255,
                        device='cpu', **options) -> Dict[str, float]:
    """Metrics of ``protocol`` on stored features, as :func:`~.runner.run_protocol` returns
    them: the segmentation protocols add ``grid_mIoU``, the ceiling the feature grid sets.

    ``options`` go to :func:`stream_linear_probe`, :func:`stream_knn`,
    :func:`stream_cluster_segmentation` or :func:`stream_dispersion`.
    """
    common = dict(num_classes=num_classes, ignore_index=ignore_index, device=device)
    if protocol == 'dispersion':
        return stream_dispersion(val_store, **common, **options)
    if protocol == 'cluster':
        metrics = stream_cluster_segmentation(val_store, **common, train_store=train_store,
                                              **options)
    elif protocol not in ('linear', 'knn'):
        raise ValueError(f'unknown dense protocol {protocol!r}; choose from {STREAM_PROTOCOLS}')
    elif train_store is None:
        raise ValueError(f'protocol {protocol!r} needs a training split')
    elif protocol == 'knn':
        metrics = stream_knn(train_store, val_store, **common, **options)
    else:
        metrics = stream_linear_probe(train_store, val_store, **common, **options)
    ceiling = stream_grid_ceiling(val_store, **common)
    return dict(metrics, grid_mIoU=ceiling['mIoU'])
