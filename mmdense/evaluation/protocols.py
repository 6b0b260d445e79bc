"""Frozen-feature dense evaluation protocols: features and labels in, metrics out.

Shapes: ``feats`` are patch/pixel feature maps ``(N, C, h, w)``; ``labels`` are semantic maps
``(N, H, W)`` with values in ``[0, num_classes)`` or ``ignore_index``. Predictions made on the
feature grid are upsampled (nearest, or bilinear for logits) to ``(H, W)`` and scored per pixel.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from mmdense.models.utils.kmeans import kmeans as fit_kmeans

from .metrics import confusion_matrix, scores_from_confusion, segmentation_scores

PROTOCOLS = ('linear', 'cluster', 'knn', 'dispersion')
MATCHINGS = ('hungarian', 'hungarian_iou', 'majority')


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
    """The assignment ``(M,)`` of the best of ``num_init`` runs of spherical k-means
    (:func:`mmdense.models.utils.kmeans.kmeans`, ``metric='cosine'``) on the rows of
    ``x (M, C)``, all runs drawing their seeds from one generator seeded with ``seed``."""
    _, assign = fit_kmeans(x, num_clusters, num_iters, torch.Generator().manual_seed(seed),
                           'cosine', num_init)
    return assign


def standardised_pca(count: Tensor, sums: Tensor, outer: Tensor,
                     dim: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Standardise-then-PCA from the moments of ``N = count`` rows ``x``: ``sums = Σ x (C,)``,
    ``outer = Σ x xᵀ (C, C)`` (float64).

    Returns ``(mean (C,), scale (C,), components (C, dim))`` such that the reduced rows are
    ``((x − mean) / scale) @ components``: ``scale`` the population std (ddof 0; 1 for a
    constant channel, as scikit-learn's ``StandardScaler``), ``components`` the ``dim``
    eigenvectors of the standardised rows' covariance with the largest eigenvalues, in
    descending order (no whitening, as faiss's ``PCAMatrix``). Each component's sign is
    arbitrary; Euclidean distances between reduced rows do not depend on it.
    """
    channels = sums.shape[0]
    if not 1 <= dim <= channels:
        raise ValueError(f'PCA to {dim} dimensions needs 1 <= dim <= {channels} (the feature '
                         'channels)')
    mean = sums / count
    covariance = outer / count - torch.outer(mean, mean)
    variance = covariance.diagonal().clamp(min=0)
    scale = torch.where(variance > 0, variance.sqrt(), torch.ones_like(variance))
    correlation = covariance / torch.outer(scale, scale)
    _, vectors = torch.linalg.eigh(correlation)  # ascending eigenvalues
    return mean, scale, vectors.flip(1)[:, :dim]


def match_clusters(matrix: Tensor, matching: str) -> Tensor:
    """Class of each cluster from the class×cluster pixel count matrix ``matrix (C, K)``.

    * ``'hungarian'``: one-to-one assignment maximising matched pixels (scipy
      ``linear_sum_assignment``; PiCIE, STEGO); with ``K > C`` the unmatched clusters get -1
      (always wrong).
    * ``'hungarian_iou'``: one-to-one assignment maximising the summed IoU of the matched pairs,
      ``IoU(c, k) = M[c, k] / (Σ_j M[c, j] + Σ_i M[i, k] − M[c, k])`` (Leopart).
    * ``'majority'``: many-to-one, each cluster takes its most frequent class.
    """
    num_classes, num_clusters = matrix.shape
    if matching == 'majority':
        return matrix.argmax(0)
    if matching not in MATCHINGS:
        raise ValueError(f'matching must be one of {MATCHINGS}, got {matching!r}')
    score = matrix.double()
    if matching == 'hungarian_iou':
        union = score.sum(1, keepdim=True) + score.sum(0, keepdim=True) - score
        score = score / union.clamp(min=1)
    rows, cols = linear_sum_assignment(score.numpy(), maximize=True)
    mapping = torch.full((num_clusters, ), -1, dtype=torch.long)
    mapping[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return mapping


def cluster_scores(matrix: Tensor, matching: str) -> Dict[str, float]:
    """Scores of a clustering from its class×cluster pixel counts ``matrix (C, K)``.

    Clusters become classes by :func:`match_clusters`; the class×class confusion of the mapped
    prediction sums the columns of the clusters mapped to each class, and the pixels of unmatched
    clusters (-1) count as missed (false negatives), as :func:`segmentation_scores` would count
    them on the mapped maps.
    """
    num_classes = matrix.shape[0]
    mapping = match_clusters(matrix, matching)
    matched = mapping >= 0
    mapped = torch.zeros(num_classes, num_classes, dtype=matrix.dtype).index_add_(
        1, mapping[matched], matrix[:, matched])
    return scores_from_confusion(mapped, matrix[:, ~matched].sum(1))


def cluster_segmentation(feats: Tensor, labels: Tensor, num_classes: int,
                         num_clusters: Optional[int] = None, matching: str = 'hungarian',
                         ignore_index: int = 255, seed: int = 0, num_iters: int = 50,
                         num_init: int = 3) -> Dict[str, float]:
    """Unsupervised segmentation: k-means on all patch features, clusters matched to classes.

    ``K = num_clusters`` (default ``num_classes``; over-clustering uses e.g. K=100, 300 with
    majority matching); :func:`kmeans` with ``num_iters`` and ``num_init``. Cluster maps are
    upsampled to the label size, their class×cluster pixel counts over all labelled pixels map
    clusters to classes (:func:`cluster_scores`).
    """
    num_clusters = num_clusters or num_classes
    n, _, h, w = feats.shape
    assign = kmeans(flatten_features(feats), num_clusters, num_iters, num_init,
                    seed).reshape(n, h, w)
    cluster_map = upsample_labels(assign, labels.shape[-2:])
    matrix, _ = confusion_matrix(cluster_map, labels, num_clusters, num_classes, ignore_index)
    return cluster_scores(matrix, matching)


def knn_vote(sims: Tensor, neighbour_labels: Tensor, num_classes: int,
             temperature: float) -> Tensor:
    """Class of each query from its neighbours' similarities and labels ``(Q, k)``:
    ``argmax_c Σ_j exp(s_j / T)·[y_j = c]`` (a neighbour with ``s = -inf`` has no weight)."""
    votes = torch.zeros(len(sims), num_classes, device=sims.device).scatter_add_(
        1, neighbour_labels, (sims / temperature).exp())
    return votes.argmax(1)


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
        preds.append(knn_vote(sims, bank_labels[idx], num_classes, temperature))
    n, _, h, w = val_feats.shape
    pred = upsample_labels(torch.cat(preds).reshape(n, h, w), val_labels.shape[-2:])
    return segmentation_scores(pred, val_labels, num_classes, ignore_index)


def init_probe(channels: int, num_classes: int, seed: int) -> nn.Conv2d:
    """The linear probe, a 1×1 conv ``channels → num_classes``, initialised from ``seed`` without
    touching the global random state."""
    probe = nn.Conv2d(channels, num_classes, 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe.reset_parameters()
    return probe


def build_probe_optimizer(probe: nn.Module, optimizer: str = 'adam', lr: float = 1e-2,
                          momentum: float = 0.9, weight_decay: float = 0.0,
                          lr_step: Optional[int] = None, lr_gamma: float = 0.1):
    """``(optimizer, scheduler)`` of the linear probe.

    ``optimizer``: ``'adam'`` (this project's default) or ``'sgd'`` (with ``momentum``, e.g.
    Leopart's linear recipe: lr 0.01, momentum 0.9, weight decay 1e-4). ``scheduler``
    multiplies the learning rate by ``lr_gamma`` every ``lr_step`` epochs (stepped once per
    epoch), or is None when ``lr_step`` is None.
    """
    if optimizer == 'adam':
        optim = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    elif optimizer == 'sgd':
        optim = torch.optim.SGD(probe.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    else:
        raise ValueError(f"linear probe optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    scheduler = None if lr_step is None else torch.optim.lr_scheduler.StepLR(
        optim, step_size=lr_step, gamma=lr_gamma)
    return optim, scheduler


def fit_linear_probe(train_feats: Tensor, train_labels: Tensor, num_classes: int,
                     epochs: int = 30, batch_size: int = 16, ignore_index: int = 255,
                     seed: int = 0, **optim_cfg) -> Tuple[nn.Conv2d, Tensor, Tensor]:
    """Train the linear probe of :func:`linear_probe` on in-memory features.

    Returns ``(probe, mean, std)``: the trained 1×1 conv and the per-channel training statistics
    ``(1, C, 1, 1)`` that standardise its input. Each epoch visits the images in the order of a
    ``torch.randperm`` drawn from a generator seeded with ``seed``, ``batch_size`` images per
    step; ``optim_cfg`` goes to :func:`build_probe_optimizer`.
    """
    generator = torch.Generator().manual_seed(seed)
    mean = train_feats.mean((0, 2, 3), keepdim=True)
    std = train_feats.std((0, 2, 3), keepdim=True) + 1e-6
    train_feats = (train_feats - mean) / std
    probe = init_probe(train_feats.shape[1], num_classes, seed)
    optimizer, scheduler = build_probe_optimizer(probe, **optim_cfg)
    labels_size = train_labels.shape[-2:]
    for _ in range(epochs):
        for idx in torch.randperm(len(train_feats), generator=generator).split(batch_size):
            logits = F.interpolate(probe(train_feats[idx]), size=labels_size, mode='bilinear',
                                   align_corners=False)
            loss = F.cross_entropy(logits, train_labels[idx].long(), ignore_index=ignore_index)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return probe, mean, std


def linear_probe(train_feats: Tensor, train_labels: Tensor, val_feats: Tensor,
                 val_labels: Tensor, num_classes: int, epochs: int = 30, lr: float = 1e-2,
                 batch_size: int = 16, ignore_index: int = 255, seed: int = 0,
                 **optim_cfg) -> Dict[str, float]:
    """Linear segmentation probe: a 1×1 conv on frozen features, logits upsampled bilinearly.

    Features are standardised per channel with the training mean/std; the probe is trained
    (:func:`fit_linear_probe`; Adam unless ``optim_cfg`` says otherwise) on pixel-wise
    cross-entropy (``ignore_index`` excluded) at the label resolution and scored on the
    validation maps.
    """
    probe, mean, std = fit_linear_probe(train_feats, train_labels, num_classes, epochs,
                                        batch_size, ignore_index, seed, lr=lr, **optim_cfg)
    val_feats = (val_feats - mean) / std
    with torch.no_grad():
        preds = [
            F.interpolate(probe(chunk), size=val_labels.shape[-2:], mode='bilinear',
                          align_corners=False).argmax(1) for chunk in val_feats.split(batch_size)
        ]
    return segmentation_scores(torch.cat(preds), val_labels, num_classes, ignore_index)


def mean_pairwise_cosine(sums: Tensor, counts: Tensor) -> Tensor:
    """Mean cosine over distinct pairs inside each group: ``(‖Σx‖² − n) / (n(n − 1))``."""
    usable = counts > 1
    return (sums[usable].pow(2).sum(1) - counts[usable]) / (counts[usable] * (counts[usable] - 1))


def class_dispersion(sums: Tensor, counts: Tensor) -> Dict[str, float]:
    """``intra_class``, ``inter_class`` and ``class_gap`` of :func:`dispersion_stats` from the
    per-class sums of unit patch features ``sums (K, C)`` and patch counts ``counts (K,)``."""
    sums, counts = sums.double(), counts.double()
    intra = mean_pairwise_cosine(sums, counts).mean()
    present = torch.nonzero(counts > 0).flatten()
    means = sums[present] / counts[present, None]
    cross = means @ means.T
    off_diagonal = ~torch.eye(len(present), dtype=torch.bool, device=cross.device)
    inter = cross[off_diagonal].mean() if len(present) > 1 else torch.tensor(float('nan'))
    return dict(intra_class=float(intra), inter_class=float(inter),
                class_gap=float(intra - inter))


def instance_sums(x: Tensor, instances: Tensor, grid) -> Tuple[Tensor, Tensor]:
    """Per-instance sums of the unit patch features ``x (N·h·w, C)`` and patch counts.

    A patch belongs to the majority instance of its cell of ``instances (N, H, W)`` (ids > 0 per
    image, 0 = none); instances are told apart per image. Returns ``(sums (I, C), counts (I,))``
    over the ``I`` instances that own at least one patch, in (image, id) order.
    """
    max_id = int(instances.max()) + 1
    inst = torch.cat([
        patch_labels(image[None], grid, max_id, -1).reshape(-1) + i * max_id
        for i, image in enumerate(instances.long())
    ])
    keep = inst % max_id != 0  # id 0 = no instance
    ids, inst = torch.unique(inst[keep], return_inverse=True)
    sums = torch.zeros(len(ids), x.shape[1], dtype=x.dtype,
                       device=x.device).index_add_(0, inst, x[keep])
    return sums, torch.bincount(inst, minlength=len(ids))


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
    stats = class_dispersion(sums, torch.bincount(y[keep], minlength=num_classes))
    if instances is not None:
        inst_sums, inst_counts = instance_sums(x, instances, grid)
        stats['intra_instance'] = float(
            mean_pairwise_cosine(inst_sums.double(), inst_counts.double()).mean())
    return stats
