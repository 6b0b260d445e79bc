"""Frozen-feature dense evaluation protocols: features and labels in, metrics out.

Shapes: ``feats`` are patch/pixel feature maps ``(N, C, h, w)``; ``labels`` are semantic maps
``(N, H, W)`` with values in ``[0, num_classes)`` or ``ignore_index``. Predictions made on the
feature grid are upsampled (nearest, or bilinear for logits) to ``(H, W)`` and scored per pixel.
"""
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from mmdense.models.utils import spherical_kmeans

from .metrics import confusion_matrix, segmentation_scores

PROTOCOLS = ('linear', 'cluster', 'knn', 'dispersion')


def flatten_features(feats: Tensor) -> Tensor:
    """``(N, C, h, w)`` → ``(N·h·w, C)`` L2-normalised rows."""
    return F.normalize(feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).float(), dim=1)


def patch_labels(labels: Tensor, size, num_classes: int, ignore_index: int = 255,
                 min_valid: float = 0.5) -> Tensor:
    """Majority label of each cell of a ``size = (h, w)`` grid over ``labels (N, H, W)``.

    A cell whose fraction of non-ignored pixels is below ``min_valid`` becomes ``ignore_index``.
    """
    valid = (labels >= 0) & (labels < num_classes)
    one_hot = F.one_hot(torch.where(valid, labels, num_classes).long(), num_classes + 1)
    votes = F.adaptive_avg_pool2d(one_hot.permute(0, 3, 1, 2).float(), size)
    majority = votes[:, :num_classes].argmax(1)
    return torch.where(votes[:, :num_classes].sum(1) >= min_valid, majority,
                       torch.full_like(majority, ignore_index))


def grid_majority_scores(labels: Tensor, size, num_classes: int,
                         ignore_index: int = 255) -> Dict[str, float]:
    """Scores of predicting each cell of a ``size = (h, w)`` feature grid as its majority label.

    The majority is the most pixel-accurate prediction constant on a cell, so this is the ceiling
    that the feature stride alone sets: exactly for the pAcc of the kNN and cluster protocols
    (one label per cell), and in practice for their mIoU; the linear probe's bilinear logits can
    pass it only by blending at cell borders. Compare backbones by how much of the gap up to this
    ceiling they close.
    """
    majority = patch_labels(labels, size, num_classes, ignore_index, min_valid=0.0)
    return segmentation_scores(upsample_labels(majority, labels.shape[-2:]), labels, num_classes,
                               ignore_index)


def upsample_labels(pred: Tensor, size) -> Tensor:
    """Nearest upsampling of an integer map ``(N, h, w)`` to ``size = (H, W)``."""
    return F.interpolate(pred[:, None].float(), size=size, mode='nearest')[:, 0].long()


def kmeans(x: Tensor, num_clusters: int, num_iters: int = 50, num_init: int = 3,
           seed: int = 0) -> Tensor:
    """The best of ``num_init`` runs of :func:`~mmdense.models.utils.spherical_kmeans` on the rows
    of ``x (M, C)`` (highest ``Σ_i <x_i, μ_assign_i>``), as the assignment ``(M,)``. All runs draw
    their seeds from one generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    best_assign, best_score = None, -float('inf')
    for _ in range(num_init):
        centres, assign = spherical_kmeans(x, num_clusters, num_iters, generator)
        score = float((F.normalize(x.float(), dim=1) @ centres.T).max(1).values.sum())
        if score > best_score:
            best_assign, best_score = assign, score
    return best_assign


def match_clusters(matrix: Tensor, matching: str) -> Tensor:
    """Class of each cluster from the class×cluster pixel count matrix ``matrix (C, K)``.

    * ``'hungarian'``: one-to-one assignment maximising matched pixels (scipy
      ``linear_sum_assignment``); with ``K > C`` the unmatched clusters get -1 (always wrong).
    * ``'majority'``: many-to-one, each cluster takes its most frequent class.
    """
    num_classes, num_clusters = matrix.shape
    if matching == 'majority':
        return matrix.argmax(0)
    if matching != 'hungarian':
        raise ValueError(f"matching must be 'hungarian' or 'majority', got {matching!r}")
    rows, cols = linear_sum_assignment(matrix.numpy(), maximize=True)
    mapping = torch.full((num_clusters, ), -1, dtype=torch.long)
    mapping[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return mapping


def cluster_segmentation(feats: Tensor, labels: Tensor, num_classes: int,
                         num_clusters: Optional[int] = None, matching: str = 'hungarian',
                         ignore_index: int = 255, seed: int = 0) -> Dict[str, float]:
    """Unsupervised segmentation: k-means on all patch features, clusters matched to classes.

    ``K = num_clusters`` (default ``num_classes``; over-clustering uses e.g. K=100, 300 with
    majority matching). Cluster maps are upsampled to the label size, clusters are mapped to
    classes with :func:`match_clusters` using all labelled pixels, and the mapped maps are scored
    with :func:`segmentation_scores`.
    """
    num_clusters = num_clusters or num_classes
    n, _, h, w = feats.shape
    assign = kmeans(flatten_features(feats), num_clusters, seed=seed).reshape(n, h, w)
    cluster_map = upsample_labels(assign, labels.shape[-2:])
    matrix, _ = confusion_matrix(cluster_map, labels, num_clusters, num_classes, ignore_index)
    mapping = match_clusters(matrix, matching)
    return segmentation_scores(mapping[cluster_map], labels, num_classes, ignore_index)


def knn_segmentation(train_feats: Tensor, train_labels: Tensor, val_feats: Tensor,
                     val_labels: Tensor, num_classes: int, k: int = 10,
                     temperature: float = 0.07, chunk_size: int = 4096,
                     ignore_index: int = 255) -> Dict[str, float]:
    """Dense kNN retrieval: a memory bank of labelled training patches votes for val patches.

    Memory: L2-normalised train patch features with their majority labels
    (:func:`patch_labels`, ignored patches dropped). A val patch ``q`` takes
    ``argmax_c Σ_{i ∈ topk(q)} exp(<q, m_i> / T)·[y_i = c]``. Queries run in chunks of
    ``chunk_size`` so the similarity matrix stays ``chunk × bank``.
    """
    bank = flatten_features(train_feats)
    bank_labels = patch_labels(train_labels, train_feats.shape[-2:], num_classes,
                               ignore_index).reshape(-1)
    keep = bank_labels != ignore_index
    if not keep.any():
        raise ValueError('kNN memory bank is empty: no training patch has a valid label')
    bank, bank_labels = bank[keep], bank_labels[keep]
    queries = flatten_features(val_feats)
    k = min(k, len(bank))
    preds = []
    for chunk in queries.split(chunk_size):
        sims, idx = (chunk @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(chunk), num_classes).scatter_add_(
            1, bank_labels[idx], (sims / temperature).exp())
        preds.append(votes.argmax(1))
    n, _, h, w = val_feats.shape
    pred = upsample_labels(torch.cat(preds).reshape(n, h, w), val_labels.shape[-2:])
    return segmentation_scores(pred, val_labels, num_classes, ignore_index)


def linear_probe(train_feats: Tensor, train_labels: Tensor, val_feats: Tensor,
                 val_labels: Tensor, num_classes: int, epochs: int = 30, lr: float = 1e-2,
                 batch_size: int = 16, ignore_index: int = 255,
                 seed: int = 0) -> Dict[str, float]:
    """Linear segmentation probe: a 1×1 conv on frozen features, logits upsampled bilinearly.

    Features are standardised per channel with the training mean/std; the probe is trained with
    Adam on pixel-wise cross-entropy (``ignore_index`` excluded) at the label resolution and
    scored on the validation maps.
    """
    generator = torch.Generator().manual_seed(seed)
    mean = train_feats.mean((0, 2, 3), keepdim=True)
    std = train_feats.std((0, 2, 3), keepdim=True) + 1e-6
    train_feats, val_feats = (train_feats - mean) / std, (val_feats - mean) / std
    probe = nn.Conv2d(train_feats.shape[1], num_classes, 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe.reset_parameters()
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    labels_size = train_labels.shape[-2:]
    for _ in range(epochs):
        for idx in torch.randperm(len(train_feats), generator=generator).split(batch_size):
            logits = F.interpolate(probe(train_feats[idx]), size=labels_size, mode='bilinear',
                                   align_corners=False)
            loss = F.cross_entropy(logits, train_labels[idx].long(), ignore_index=ignore_index)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        preds = [
            F.interpolate(probe(chunk), size=val_labels.shape[-2:], mode='bilinear',
                          align_corners=False).argmax(1) for chunk in val_feats.split(batch_size)
        ]
    return segmentation_scores(torch.cat(preds), val_labels, num_classes, ignore_index)


def _mean_pairwise(sums: Tensor, counts: Tensor) -> Tensor:
    """Mean cosine over distinct pairs inside each group: ``(‖Σx‖² − n) / (n(n − 1))``."""
    usable = counts > 1
    return (sums[usable].pow(2).sum(1) - counts[usable]) / (counts[usable] * (counts[usable] - 1))


def dispersion_stats(feats: Tensor, labels: Tensor, num_classes: int,
                     instances: Optional[Tensor] = None,
                     ignore_index: int = 255) -> Dict[str, float]:
    """Over-dispersion statistics of L2-normalised patch features (labels by patch majority).

    * ``intra_class``: mean over classes of the mean cosine between distinct patches of a class.
    * ``inter_class``: mean over class pairs ``a ≠ b`` of the mean cosine between their patches,
      ``<Σ_a x, Σ_b x> / (n_a n_b)``.
    * ``intra_instance``: the same as intra-class within each instance (``instances (N, H, W)``,
      ids > 0 per image, 0 = none), averaged over instances.
    * ``class_gap = intra_class − inter_class``: higher means better separated classes.
    """
    x = flatten_features(feats)
    grid = feats.shape[-2:]
    y = patch_labels(labels, grid, num_classes, ignore_index).reshape(-1)
    keep = y != ignore_index
    sums = torch.zeros(num_classes, x.shape[1]).index_add_(0, y[keep], x[keep])
    counts = torch.bincount(y[keep], minlength=num_classes).double()
    intra = _mean_pairwise(sums.double(), counts).mean()
    present = torch.nonzero(counts > 0).flatten()
    means = sums.double()[present] / counts[present, None]
    cross = means @ means.T
    off_diagonal = ~torch.eye(len(present), dtype=torch.bool)
    inter = cross[off_diagonal].mean() if len(present) > 1 else torch.tensor(float('nan'))
    stats = dict(intra_class=float(intra), inter_class=float(inter),
                 class_gap=float(intra - inter))
    if instances is not None:
        max_id = int(instances.max()) + 1
        inst = torch.cat([
            patch_labels(image[None], grid, max_id, -1).reshape(-1) + i * max_id
            for i, image in enumerate(instances.long())
        ])
        keep = inst % max_id != 0  # id 0 = no instance
        ids, inst = torch.unique(inst[keep], return_inverse=True)
        inst_sums = torch.zeros(len(ids), x.shape[1]).index_add_(0, inst, x[keep])
        inst_counts = torch.bincount(inst, minlength=len(ids)).double()
        stats['intra_instance'] = float(_mean_pairwise(inst_sums.double(), inst_counts).mean())
    return stats
