"""The dense-evaluation engine: every frozen-feature protocol, one class each, on feature stores.

A split's dense features ``(N, C, h, w)``, labels ``(N, H, W)`` (values in ``[0, num_classes)``
or ``ignore_index``) and optional instance maps are held by a store (:mod:`.feature_store`):
on local disk (:class:`~.feature_store.FeatureStore`, any size) or in RAM
(:class:`~.feature_store.MemoryFeatureStore`); the protocols read either the same way, a few
images at a time, so one code path computes every number whatever the backend, and memory is
bounded by the chunk sizes, never by the split. With ``W`` processes (``torch.distributed``),
rank ``r`` owns images ``r, r + W, ...``; sums are all-reduced and every rank gets the metrics
of one process holding the whole split. Predictions made on the feature grid are upsampled
(nearest, or bilinear for logits) to ``(H, W)`` and scored per pixel.

* :class:`LinearProbe`: per-channel statistics in one float64 pass, then the 1×1-conv probe
  trained on mini-batches of images read in the order of one global ``randperm`` per epoch.
* :class:`KNNRetrieval`: the train store is the bank, streamed in chunks against blocks of val
  queries with a running top-k.
* :class:`Clustering`: the one k-means (:mod:`mmdense.models.utils.kmeans`,
  :func:`~mmdense.models.utils.kmeans.chunked_kmeans`: spherical, or Euclidean on standardised
  PCA rows as Leopart) seeded by k-means++ on the points (all of them, or a seeded sample of
  about ``max_seed_points``), then Lloyd passes over the chunks.
* :class:`Dispersion` and the ``grid_mIoU`` ceiling: sums and confusion matrices.
* :class:`PrototypeAssignment`: a method's own prototype segmentation, matched one-to-one or
  many-to-one.

Memory held at once, whatever the split size: a chunk of ``chunk_images`` feature maps, one
probe mini-batch, a block of ``query_points`` val patches from every rank plus at most
:data:`SIM_BLOCK` query-bank similarities, the kNN bank's patch labels (2 bytes per train
patch), and the k-means seed sample (at most about ``max_seed_points`` rows).
"""
import inspect
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from mmdense.models.utils.kmeans import (centroid_similarity, check_metric, chunked_kmeans,
                                         prepare_points)
from mmdense.utils.dist import all_reduce_sum, get_rank, get_world_size, is_distributed
from .feature_store import StoreBase
from .metrics import confusion_matrix, scores_from_confusion, segmentation_scores

MATCHINGS = ('hungarian', 'hungarian_iou', 'majority')
PROTOTYPE_MATCHINGS = ('hungarian', 'majority')


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


def grid_majority_map(labels: Tensor, size, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Each pixel of ``labels (N, H, W)`` predicted as the majority label of its cell of a
    ``size = (h, w)`` grid (:func:`grid_majority_scores`)."""
    majority = patch_labels(labels, size, num_classes, ignore_index, min_valid=0.0)
    return upsample_labels(majority, labels.shape[-2:])


def grid_majority_scores(labels: Tensor, size, num_classes: int,
                         ignore_index: int = 255) -> Dict[str, float]:
    """Scores of predicting each cell of a ``size = (h, w)`` feature grid as its majority label.

    The majority is the most pixel-accurate prediction constant on a cell, so this is the ceiling
    that the feature stride alone sets: exactly for the pAcc of the kNN and cluster protocols
    (one label per cell), and in practice for their mIoU; the linear probe's bilinear logits can
    pass it only by blending at cell borders. Compare backbones by how much of the gap up to this
    ceiling they close.
    """
    return segmentation_scores(grid_majority_map(labels, size, num_classes, ignore_index),
                               labels, num_classes, ignore_index)


def upsample_labels(pred: Tensor, size) -> Tensor:
    """Nearest upsampling of an integer map ``(N, h, w)`` to ``size = (H, W)``."""
    return F.interpolate(pred[:, None].float(), size=size, mode='nearest')[:, 0].long()


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


def mapped_scores(matrix: Tensor, mapping: Tensor) -> Dict[str, float]:
    """Scores of assignments (clusters, prototypes) mapped to classes: ``matrix (C, K)`` the
    class×assignment pixel counts, ``mapping (K,)`` each assignment's class or -1. The
    class×class confusion sums the columns mapped to each class; the pixels of unmapped
    assignments count as missed (false negatives), as :func:`segmentation_scores` would count
    them on the mapped maps."""
    num_classes = matrix.shape[0]
    matched = mapping >= 0
    mapped = torch.zeros(num_classes, num_classes, dtype=matrix.dtype).index_add_(
        1, mapping[matched], matrix[:, matched])
    return scores_from_confusion(mapped, matrix[:, ~matched].sum(1))


def majority_mapping(counts: Tensor) -> Tensor:
    """Class of each assignment from class×assignment counts ``(C, K)``: its most frequent
    class, ``-1`` for one with no pixel."""
    return torch.where(counts.sum(0) > 0, counts.argmax(0), -1)


def cluster_scores(matrix: Tensor, matching: str) -> Dict[str, float]:
    """Scores of a clustering from its class×cluster pixel counts ``matrix (C, K)``, clusters
    mapped to classes by :func:`match_clusters` (:func:`mapped_scores`)."""
    return mapped_scores(matrix, match_clusters(matrix, matching))

def knn_vote(sims: Tensor, neighbour_labels: Tensor, num_classes: int,
             temperature: float) -> Tensor:
    """Class of each query from its neighbours' similarities and labels ``(Q, k)``:
    ``argmax_c Σ_j exp(s_j / T)·[y_j = c]`` (a neighbour with ``s = -inf`` has no weight)."""
    votes = torch.zeros(len(sims), num_classes, device=sims.device).scatter_add_(
        1, neighbour_labels, (sims / temperature).exp())
    return votes.argmax(1)



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




def mean_pairwise_cosine(sums: Tensor, counts: Tensor) -> Tensor:
    """Mean cosine over distinct pairs inside each group: ``(‖Σx‖² − n) / (n(n − 1))``."""
    usable = counts > 1
    return (sums[usable].pow(2).sum(1) - counts[usable]) / (counts[usable] * (counts[usable] - 1))


def class_dispersion(sums: Tensor, counts: Tensor) -> Dict[str, float]:
    """``intra_class``, ``inter_class`` and ``class_gap`` of :class:`Dispersion` from the
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


# --- the engine: every protocol reads feature stores (:mod:`.feature_store`) ----------------

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


def _total_images(store: StoreBase, device) -> int:
    return int(all_reduce_sum(torch.tensor([len(store)], device=device)))


class ConfusionTotals:
    """Class×prediction pixel counts ``(C, P)`` and the missed pixels per class ``(C,)`` of
    the prediction maps added chunk by chunk, scored over all ranks."""

    def __init__(self, num_pred: int, num_classes: int, ignore_index: int, device) -> None:
        self.num_pred, self.num_classes, self.ignore_index = num_pred, num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_pred, dtype=torch.long, device=device)
        self.missed = torch.zeros(num_classes, dtype=torch.long, device=device)

    def add(self, pred: Tensor, labels: Tensor) -> None:
        matrix, missed = confusion_matrix(pred, labels, self.num_pred, self.num_classes,
                                          self.ignore_index)
        self.matrix += matrix
        self.missed += missed

    def reduced(self) -> Tuple[Tensor, Tensor]:
        return all_reduce_sum(self.matrix).cpu(), all_reduce_sum(self.missed).cpu()

    def scores(self) -> Dict[str, float]:
        return scores_from_confusion(*self.reduced())


@torch.no_grad()
def stored_grid_ceiling(val: StoreBase, num_classes: int, ignore_index: int = 255,
                        device='cpu', chunk_images: int = 16) -> Dict[str, float]:
    """:func:`grid_majority_scores` of the stored val labels on the stored feature grid."""
    totals = ConfusionTotals(num_classes, num_classes, ignore_index, device)
    for chunk in val.chunks(chunk_images, fields=('labels', )):
        labels = chunk['labels'].to(device)
        totals.add(grid_majority_map(labels, val.feat_shape[-2:], num_classes, ignore_index),
                   labels)
    return totals.scores()


class DenseProtocol:
    """A frozen-feature protocol: its options in the constructor, its stores in the call.

    ``protocol(train, val, num_classes, ignore_index, device)`` returns the metrics over all
    ranks; segmentation protocols add ``grid_mIoU``, the ceiling the feature grid sets
    (:func:`grid_majority_scores`). ``train`` may be None when :attr:`needs_train` is False.
    Every store is read ``chunk_images`` images at a time.
    """
    name = ''
    segmentation = True

    def __init__(self, chunk_images: int = 16) -> None:
        if chunk_images < 1:
            raise ValueError(f'{self.name}: chunk_images must be >= 1, got {chunk_images}')
        self.chunk_images = chunk_images

    @property
    def needs_train(self) -> bool:
        return True

    def evaluate(self, train: Optional[StoreBase], val: StoreBase, num_classes: int,
                 ignore_index: int, device) -> Dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, train: Optional[StoreBase], val: StoreBase, num_classes: int,
                 ignore_index: int = 255, device='cpu') -> Dict[str, float]:
        if self.needs_train and train is None:
            raise ValueError(f'protocol {self.name!r} needs a training split')
        metrics = self.evaluate(train, val, num_classes, ignore_index, device)
        if not self.segmentation:
            return metrics
        ceiling = stored_grid_ceiling(val, num_classes, ignore_index, device, self.chunk_images)
        return dict(metrics, grid_mIoU=ceiling['mIoU'])


class LinearProbe(DenseProtocol):
    """Linear segmentation probe: a 1×1 conv on frozen features, logits upsampled bilinearly to
    the label size, trained on pixel-wise cross-entropy (``ignore_index`` excluded).

    Features are standardised per channel with the training mean and unbiased std (+1e-6, from
    float64 sums; ``standardize=False`` feeds them as stored, Leopart). Each epoch visits the
    images in the order of one ``torch.randperm`` of the whole split drawn from a generator
    seeded with ``seed``, ``batch_size`` images per step over all ranks (``drop_last`` skips the
    last, incomplete batch); each rank sums the loss over the images it owns, the gradient sums
    and the valid-pixel count are all-reduced and divided: the gradient of the mean loss over
    the mini-batch. ``optimizer`` ``'adam'`` or ``'sgd'`` (``momentum``, ``weight_decay``), the
    learning rate times ``lr_gamma`` every ``lr_step`` epochs. ``train_label_size``: the loss is
    taken on label maps brought (nearest) to that size (Leopart trains at 100 px).
    """
    name = 'linear'

    def __init__(self, epochs: int = 30, batch_size: int = 16, lr: float = 1e-2, seed: int = 0,
                 optimizer: str = 'adam', momentum: float = 0.9, weight_decay: float = 0.0,
                 lr_step: Optional[int] = None, lr_gamma: float = 0.1, standardize: bool = True,
                 drop_last: bool = False, train_label_size: Optional[int] = None,
                 progress: bool = False, chunk_images: int = 16) -> None:
        super().__init__(chunk_images)
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.optim_cfg = dict(optimizer=optimizer, lr=lr, momentum=momentum,
                              weight_decay=weight_decay, lr_step=lr_step, lr_gamma=lr_gamma)
        self.standardize, self.drop_last = standardize, drop_last
        self.train_label_size, self.progress = train_label_size, progress

    def feature_stats(self, train: StoreBase, device) -> Tuple[Tensor, Tensor]:
        """Per-channel mean and unbiased std (+1e-6) of all stored features, over all ranks:
        ``(1, C, 1, 1)`` each, from float64 sums of ``x`` and ``x²``."""
        channels = train.feat_shape[0]
        if not self.standardize:
            mean = torch.zeros(1, channels, 1, 1, device=device)
            return mean, torch.ones_like(mean)
        sums = torch.zeros(2, channels, dtype=torch.float64, device=device)
        count = torch.zeros(1, dtype=torch.float64, device=device)
        for chunk in train.chunks(self.chunk_images, fields=('feats', )):
            feats = chunk['feats'].to(device).double()
            sums[0] += feats.sum((0, 2, 3))
            sums[1] += feats.pow(2).sum((0, 2, 3))
            count += feats.numel() // channels
        sums, count = all_reduce_sum(sums), all_reduce_sum(count)
        mean = sums[0] / count
        var = (sums[1] - count * mean.pow(2)) / (count - 1)
        std = var.clamp(min=0).sqrt() + 1e-6
        return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)

    @staticmethod
    def _reduce_mean_gradient(probe: nn.Module, valid: Tensor) -> None:
        """Every rank's gradient of its summed loss → the gradient of the mean loss over the
        valid pixels of all ranks (one all-reduce of the gradients and the count)."""
        params = list(probe.parameters())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = all_reduce_sum(
            torch.cat([g.reshape(-1).double() for g in grads] + [valid.reshape(1).double()]))
        flat = flat[:-1] / flat[-1].clamp(min=1)
        for param, grad in zip(params, flat.split([p.numel() for p in params])):
            param.grad = grad.view_as(param).to(param.dtype)

    @torch.enable_grad()
    def fit(self, train: StoreBase, num_classes: int, ignore_index: int = 255,
            device='cpu') -> Tuple[nn.Conv2d, Tensor, Tensor]:
        """Train the probe; returns ``(probe, mean, std)``, the statistics ``(1, C, 1, 1)``
        that standardise its input."""
        mean, std = self.feature_stats(train, device)
        probe = init_probe(train.feat_shape[0], num_classes, self.seed).to(device)
        optimizer, scheduler = build_probe_optimizer(probe, **self.optim_cfg)
        position_of = {index: position for position, index in enumerate(train.indices)}
        total = _total_images(train, device)
        generator = torch.Generator().manual_seed(self.seed)
        for epoch in range(self.epochs):
            for batch in torch.randperm(total, generator=generator).split(self.batch_size):
                if self.drop_last and len(batch) < self.batch_size:
                    continue
                positions = sorted(position_of[i] for i in batch.tolist() if i in position_of)
                optimizer.zero_grad()
                valid = torch.zeros((), device=device)
                if positions:
                    chunk = train.read(positions, fields=('feats', 'labels'))
                    labels = chunk['labels'].to(device)
                    if self.train_label_size is not None:
                        size = self.train_label_size
                        labels = upsample_labels(labels, (size, size))
                    logits = F.interpolate(probe((chunk['feats'].to(device) - mean) / std),
                                           size=labels.shape[-2:], mode='bilinear',
                                           align_corners=False)
                    F.cross_entropy(logits, labels, ignore_index=ignore_index,
                                    reduction='sum').backward()
                    valid = (labels != ignore_index).sum()
                self._reduce_mean_gradient(probe, valid)
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if self.progress and get_rank() == 0:
                print(f'linear probe: epoch {epoch + 1}/{self.epochs}', flush=True)
        return probe, mean, std

    def evaluate(self, train, val, num_classes, ignore_index, device):
        probe, mean, std = self.fit(train, num_classes, ignore_index, device)
        totals = ConfusionTotals(num_classes, num_classes, ignore_index, device)
        for chunk in val.chunks(self.chunk_images, fields=('feats', 'labels')):
            labels = chunk['labels'].to(device)
            logits = F.interpolate(probe((chunk['feats'].to(device) - mean) / std),
                                   size=labels.shape[-2:], mode='bilinear', align_corners=False)
            totals.add(logits.argmax(1), labels)
        return totals.scores()


class KNNRetrieval(DenseProtocol):
    """Dense kNN retrieval: the labelled train patches (unit features, majority labels by
    :func:`patch_labels`, ignored patches dropped) vote for each val patch ``q``:
    ``argmax_c Σ_{i ∈ topk(q)} exp(<q, m_i> / T)·[y_i = c]``.

    Val images are taken ``query_points`` patches at a time per rank (at least one image); the
    block of all ranks' queries is scored against each rank's bank, read ``chunk_images`` train
    images at a time in similarity blocks of at most :data:`SIM_BLOCK` entries, and the ranks'
    top-k lists are merged. The bank is read once per block of queries, so the time is
    ``O(#val patches · #train patches · C)`` and the bank reads ``#val patches / query_points``.
    """
    name = 'knn'

    def __init__(self, k: int = 10, temperature: float = 0.07, query_points: int = 4096,
                 chunk_images: int = 16) -> None:
        super().__init__(chunk_images)
        if k < 1 or query_points < 1:
            raise ValueError(f'knn: k and query_points must be >= 1, got k={k}, '
                             f'query_points={query_points}')
        self.k, self.temperature, self.query_points = k, temperature, query_points

    def bank_labels(self, train: StoreBase, num_classes: int, ignore_index: int,
                    device) -> List[Tensor]:
        """Patch labels of every chunk of the bank, flattened, as int16 on CPU: computed once
        per evaluation (2 bytes per train patch), not once per block of queries."""
        grid = train.feat_shape[-2:]
        return [
            patch_labels(chunk['labels'].to(device), grid, num_classes,
                         ignore_index).reshape(-1).to(torch.int16).cpu()
            for chunk in train.chunks(self.chunk_images, fields=('labels', ))
        ]

    @staticmethod
    def _merge_topk(sims: Tensor, labels: Tensor, k: int) -> Tuple[Tensor, Tensor]:
        """The ``k`` highest of each row of ``sims (Q, M)`` with their ``labels (Q, M)``."""
        top, where = sims.topk(min(k, sims.shape[1]), dim=1)
        return top, labels.gather(1, where)

    def local_topk(self, queries: Tensor, train: StoreBase, bank_labels: List[Tensor],
                   ignore_index: int) -> Tuple[Tensor, Tensor]:
        """Top-k similarities ``(Q, k)`` of ``queries`` over this rank's bank, with the
        neighbours' labels; missing neighbours (a bank smaller than ``k``) have ``-inf``."""
        k, device = self.k, queries.device
        best = torch.full((len(queries), k), -float('inf'), device=device)
        best_labels = torch.zeros((len(queries), k), dtype=torch.long, device=device)
        chunks = train.chunks(self.chunk_images, fields=('feats', ))
        for chunk, labels in zip(chunks, bank_labels):
            labels = labels.to(device).long()
            keep = labels != ignore_index
            bank, labels = flatten_features(chunk['feats'].to(device))[keep], labels[keep]
            if not len(bank):
                continue
            rows = max(1, SIM_BLOCK // len(bank))
            for start in range(0, len(queries), rows):
                part = slice(start, start + rows)
                top, where = (queries[part] @ bank.T).topk(min(k, len(bank)), dim=1)
                best[part], best_labels[part] = self._merge_topk(
                    torch.cat([best[part], top], 1),
                    torch.cat([best_labels[part], labels[where]], 1), k)
        return best, best_labels

    def evaluate(self, train, val, num_classes, ignore_index, device):
        bank_labels = self.bank_labels(train, num_classes, ignore_index, device)
        bank_size = sum(int((labels != ignore_index).sum()) for labels in bank_labels)
        if int(all_reduce_sum(torch.tensor([bank_size], device=device))) == 0:
            raise ValueError('kNN memory bank is empty: no training patch has a valid label')
        _, h, w = val.feat_shape
        block = max(1, self.query_points // (h * w))
        rounds = _all_reduce_max(-(-len(val) // block), device)
        totals = ConfusionTotals(num_classes, num_classes, ignore_index, device)
        for round_ in range(rounds):
            chunk = val.read(range(min(round_ * block, len(val)),
                                   min((round_ + 1) * block, len(val))))
            queries = flatten_features(chunk['feats'].to(device))
            per_rank = _gather_padded(queries)
            sims, labels = self.local_topk(torch.cat(per_rank), train, bank_labels,
                                           ignore_index)
            start = sum(len(q) for q in per_rank[:get_rank()])
            mine = slice(start, start + len(queries))
            sims = torch.cat([part[mine] for part in _gather_padded(sims)], 1)
            labels = torch.cat([part[mine] for part in _gather_padded(labels)], 1)
            sims, labels = self._merge_topk(sims, labels, self.k)
            if not len(queries):
                continue
            pred = knn_vote(sims, labels, num_classes, self.temperature).reshape(-1, h, w)
            val_labels = chunk['labels'].to(device)
            totals.add(upsample_labels(pred, val_labels.shape[-2:]), val_labels)
        return totals.scores()


def _rows(feats: Tensor) -> Tensor:
    """``(n, C, h, w)`` → ``(n·h·w, C)`` float32, row-major over the grid."""
    return feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).float()


class PointTransform:
    """The rows k-means clusters, from feature maps ``(n, C, h, w)``.

    ``metric='cosine'`` (the default): L2-normalised rows (:func:`flatten_features`). With
    ``pca_dim`` (Leopart): rows standardised per channel over the fitting split and projected on
    its ``pca_dim`` principal components (:func:`standardised_pca`, from float64 moments
    streamed over every point of every rank), for Euclidean k-means.
    """

    def __init__(self, store: StoreBase, metric: str = 'cosine',
                 pca_dim: Optional[int] = None, chunk_images: int = 16, device='cpu') -> None:
        check_metric(metric)
        if pca_dim is not None and metric != 'euclidean':
            raise ValueError("standardise + PCA (pca_dim) goes with metric='euclidean' "
                             f'(Leopart), got metric={metric!r}')
        self.metric, self.pca_dim = metric, pca_dim
        self.dim = pca_dim or store.feat_shape[0]
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


def store_points(store: StoreBase, chunk_images: int, device, transform: PointTransform,
                 fields=('feats', )) -> Iterator[Tuple[Tensor, Tensor, Dict[str, Tensor]]]:
    """``(rows (n·h·w, D), global point indices (n·h·w,), chunk)`` by chunk, the rows
    ``transform(feats)``; point ``p`` of image ``i`` (row-major on the grid) has index
    ``i·h·w + p``, as in the flattening of the whole split."""
    _, h, w = store.feat_shape
    for chunk in store.chunks(chunk_images, fields):
        index = (chunk['indices'][:, None] * (h * w) + torch.arange(h * w)).reshape(-1)
        yield transform(chunk['feats'].to(device)), index.to(device), chunk


def seed_sample(store: StoreBase, max_points: int, seed: int, chunk_images: int, device,
                transform: PointTransform) -> Tensor:
    """The points k-means++ draws its seeds from, from all ranks in global order: every point
    when there are at most ``max_points``, else a sample of about ``max_points`` (each point
    kept with probability ``max_points / #points``, drawn per image from a generator seeded by
    ``(seed, image index)``, so the sample does not depend on the sharding).

    The sample is counted first (from the generators alone) and filled into one buffer, so the
    process holds it once, not as many small pieces that pin memory between the chunks.
    """
    _, h, w = store.feat_shape
    num_points = _total_images(store, device) * h * w
    sampled = num_points > max_points

    def keep(image: int) -> Tensor:
        generator = torch.Generator().manual_seed(seed * 7919 + image)
        return torch.rand(h * w, generator=generator) < max_points / num_points

    total = (sum(int(keep(image).sum()) for image in store.indices) if sampled else
             len(store) * h * w)
    rows = torch.empty(total, transform.dim, device=device)
    keys = torch.empty(total, dtype=torch.long, device=device)
    filled = 0
    for x, index, chunk in store_points(store, chunk_images, device, transform):
        if sampled:
            kept = torch.cat([keep(int(image)) for image in chunk['indices']]).to(device)
            x, index = x[kept], index[kept]
        rows[filled:filled + len(x)], keys[filled:filled + len(x)] = x, index
        filled += len(x)
    if is_distributed():
        rows, keys = torch.cat(_gather_padded(rows)), torch.cat(_gather_padded(keys))
    order = keys.argsort()
    in_order = bool((order == torch.arange(len(order), device=order.device)).all())
    return rows if in_order else rows[order]


def store_kmeans(store: StoreBase, num_clusters: int, num_iters: int = 10,
                 generator: Optional[torch.Generator] = None, max_seed_points: int = 50_000,
                 sample_seed: int = 0, chunk_images: int = 16, device='cpu',
                 transform: Optional[PointTransform] = None) -> Tuple[Tensor, float]:
    """One run of :func:`~mmdense.models.utils.kmeans.chunked_kmeans` on the rows
    ``transform(feats)`` of every stored patch (default: unit rows, cosine); returns the
    ``(K, D)`` centroids and the run's objective.

    Seeds: k-means++ with ``generator`` on :func:`seed_sample` (all points when there are at
    most ``max_seed_points``: then the run is :func:`~mmdense.models.utils.kmeans.kmeans` of
    the stacked rows given the same generator state). Memory: the sample, at most about
    ``max_seed_points`` rows, and one chunk.
    """
    transform = transform or PointTransform(store)
    _, h, w = store.feat_shape
    num_points = _total_images(store, device) * h * w
    if num_clusters < 1 or num_points < num_clusters:
        raise ValueError(f'kmeans needs 1 <= num_clusters <= number of points, got '
                         f'num_clusters={num_clusters} for {num_points} points')
    seeds = seed_sample(store, max_seed_points, sample_seed, chunk_images, device, transform)

    def chunks():
        return ((x, index) for x, index, _ in store_points(store, chunk_images, device,
                                                            transform))

    return chunked_kmeans(chunks, seeds, num_clusters, num_iters, generator, transform.metric)


def assignment_counts(store: StoreBase, scores: Callable[[Tensor], Tensor], num_classes: int,
                      ignore_index: int = 255, chunk_images: int = 16, device='cpu',
                      upsample: str = 'nearest', score_size: Optional[int] = None) -> Tensor:
    """Class×assignment pixel counts ``(C, K)`` over all ranks of the val maps of ``store``.

    ``scores(feats (n, C, h, w))`` gives each cell's ``(n·h·w, K)`` scores (similarity to each
    centroid, or a model's prototype scores); a cell goes to its highest. ``upsample='nearest'``
    upsamples that assignment map (nearest) to the label size, ``'bilinear'`` upsamples the
    ``(K, h, w)`` score maps bilinearly and takes the per-pixel argmax (PiCIE's evaluation).
    ``score_size``: the labels are first brought to ``score_size²`` (nearest; Leopart scores
    clusters at 100 px).
    """
    if upsample not in ('nearest', 'bilinear'):
        raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
    _, h, w = store.feat_shape
    totals = None
    for chunk in store.chunks(chunk_images, fields=('feats', 'labels')):
        labels = chunk['labels'].to(device)
        if score_size is not None:
            labels = upsample_labels(labels, (score_size, score_size))
        sims = scores(chunk['feats'].to(device))
        if totals is None:
            totals = ConfusionTotals(sims.shape[1], num_classes, ignore_index, device)
        if upsample == 'bilinear':
            maps = sims.reshape(-1, h, w, sims.shape[1]).permute(0, 3, 1, 2)
            assignment = F.interpolate(maps, size=labels.shape[-2:], mode='bilinear',
                                       align_corners=False).argmax(1)
        else:
            assignment = upsample_labels(sims.argmax(1).reshape(-1, h, w), labels.shape[-2:])
        totals.add(assignment, labels)
    return totals.reduced()[0]


class Clustering(DenseProtocol):
    """Unsupervised segmentation by k-means, clusters matched to classes.

    The k-means (:func:`store_kmeans`) is fitted on the ``fit`` split's patch features
    (``'val'``: the scored features themselves; ``'train'``: PiCIE) as rows of a
    :class:`PointTransform` (``metric``, ``pca_dim``): the best (highest objective on the fitted
    split) of ``num_init`` runs, all seeded from one generator seeded with ``seed``. Each val
    cell takes its most similar centroid (``upsample``, ``score_size``:
    :func:`assignment_counts`) and :func:`cluster_scores` matches ``K = num_clusters``
    (default: the class count) clusters to classes (``matching``).

    ``num_seeds > 1`` repeats all of it with seeds ``seed, seed + 1, ...`` and returns the mean
    of each metric and its population std (``mIoU_std``, ``pAcc_std``), as Leopart reports.
    """
    name = 'cluster'

    def __init__(self, num_clusters: Optional[int] = None, matching: str = 'hungarian',
                 seed: int = 0, num_iters: int = 50, num_init: int = 3,
                 max_seed_points: int = 50_000, fit: str = 'val', metric: str = 'cosine',
                 pca_dim: Optional[int] = None, num_seeds: int = 1, upsample: str = 'nearest',
                 score_size: Optional[int] = None, chunk_images: int = 16) -> None:
        super().__init__(chunk_images)
        if fit not in ('val', 'train'):
            raise ValueError(f"cluster fit must be 'val' or 'train', got {fit!r}")
        if matching not in MATCHINGS:
            raise ValueError(f'matching must be one of {MATCHINGS}, got {matching!r}')
        check_metric(metric)
        self.num_clusters, self.matching, self.seed = num_clusters, matching, seed
        self.num_iters, self.num_init, self.max_seed_points = num_iters, num_init, max_seed_points
        self.fit, self.metric, self.pca_dim = fit, metric, pca_dim
        self.num_seeds, self.upsample, self.score_size = num_seeds, upsample, score_size

    @property
    def needs_train(self) -> bool:
        return self.fit == 'train'

    def centroids(self, store: StoreBase, num_clusters: int, seed: int,
                  transform: PointTransform, device) -> Tensor:
        """The best of ``num_init`` :func:`store_kmeans` runs seeded from ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        best_score, best = -float('inf'), None
        for _ in range(self.num_init):
            centroids, score = store_kmeans(store, num_clusters, self.num_iters, generator,
                                            self.max_seed_points, seed, self.chunk_images,
                                            device, transform)
            if score > best_score:
                best_score, best = score, centroids
        return best

    def cluster_maps(self, store: StoreBase, device='cpu') -> Tensor:
        """The cluster of each stored cell ``(n, h, w)`` (this process's images): the k-means
        of ``store`` itself (:meth:`centroids` with ``seed``; ``num_clusters`` must be set),
        each cell its most similar centroid. What a visualiser draws."""
        if not self.num_clusters:
            raise ValueError('cluster maps need num_clusters')
        transform = PointTransform(store, self.metric, self.pca_dim, self.chunk_images, device)
        centroids = self.centroids(store, self.num_clusters, self.seed, transform, device)
        _, h, w = store.feat_shape
        return torch.cat([
            centroid_similarity(transform(chunk['feats'].to(device)), centroids,
                                self.metric).argmax(1).reshape(-1, h, w).cpu()
            for chunk in store.chunks(self.chunk_images, fields=('feats', ))
        ])

    def evaluate(self, train, val, num_classes, ignore_index, device):
        fit_store = train if self.fit == 'train' else val
        num_clusters = self.num_clusters or num_classes
        transform = PointTransform(fit_store, self.metric, self.pca_dim, self.chunk_images,
                                   device)
        runs = []
        for seed in range(self.seed, self.seed + self.num_seeds):
            centroids = self.centroids(fit_store, num_clusters, seed, transform, device)
            matrix = assignment_counts(
                val, lambda feats: centroid_similarity(transform(feats), centroids,
                                                       self.metric),
                num_classes, ignore_index, self.chunk_images, device, self.upsample,
                self.score_size)
            runs.append(cluster_scores(matrix, self.matching))
        if self.num_seeds == 1:
            return runs[0]
        values = {name: torch.tensor([run[name] for run in runs], dtype=torch.float64)
                  for name in runs[0]}
        return {key: value for name, column in values.items()
                for key, value in ((name, float(column.mean())),
                                   (f'{name}_std', float(column.std(unbiased=False))))}


class PrototypeAssignment(DenseProtocol):
    """A method's own segmentation: stores whose features are its per-cell prototype scores
    ``(K, h, w)`` (e.g. SlotCon's teacher, :func:`.prototypes.prototype_score_store`); each cell
    takes its best prototype, upsampled (nearest) to the label size; prototypes become classes

    * one-to-one (``'hungarian'``): the Hungarian matching on the val class×prototype pixel
      counts; with ``K > C`` the unmatched prototypes count as wrong;
    * many-to-one (``'majority'``): each prototype takes the class most of its pixels have on
      the *train* store (over-clustering's mapping, learnt on train); a prototype no train pixel
      took counts as wrong. Several prototypes may share a class.
    """
    name = 'prototypes'

    def __init__(self, matching: str = 'hungarian', chunk_images: int = 16) -> None:
        super().__init__(chunk_images)
        if matching not in PROTOTYPE_MATCHINGS:
            raise ValueError(f'prototype matching must be one of {PROTOTYPE_MATCHINGS}, got '
                             f'{matching!r}')
        self.matching = matching

    @property
    def needs_train(self) -> bool:
        return self.matching == 'majority'

    def counts(self, store: StoreBase, num_classes: int, ignore_index: int, device) -> Tensor:
        return assignment_counts(store, _rows, num_classes, ignore_index, self.chunk_images,
                                 device)

    def evaluate(self, train, val, num_classes, ignore_index, device):
        val_counts = self.counts(val, num_classes, ignore_index, device)
        if self.matching == 'hungarian':
            return cluster_scores(val_counts, 'hungarian')
        mapping = majority_mapping(self.counts(train, num_classes, ignore_index, device))
        return mapped_scores(val_counts, mapping)


class Dispersion(DenseProtocol):
    """Over-dispersion statistics of the L2-normalised val patch features (labels by patch
    majority, :func:`patch_labels`):

    * ``intra_class``: mean over classes of the mean cosine between distinct patches of a class;
    * ``inter_class``: mean over class pairs ``a ≠ b`` of ``<Σ_a x, Σ_b x> / (n_a n_b)``;
    * ``intra_instance`` (when the store holds instance maps, ids > 0 per image, 0 = none): the
      intra-class statistic within each instance, averaged over instances;
    * ``class_gap = intra_class − inter_class``: higher means better separated classes.
    """
    name = 'dispersion'
    segmentation = False

    @property
    def needs_train(self) -> bool:
        return False

    def evaluate(self, train, val, num_classes, ignore_index, device):
        channels, h, w = val.feat_shape
        sums = torch.zeros(num_classes, channels, dtype=torch.float64, device=device)
        counts = torch.zeros(num_classes, dtype=torch.long, device=device)
        instance = torch.zeros(2, dtype=torch.float64, device=device)  # Σ mean cosine, number
        for chunk in val.chunks(self.chunk_images):
            x = flatten_features(chunk['feats'].to(device))
            labels = patch_labels(chunk['labels'].to(device), (h, w), num_classes,
                                  ignore_index).reshape(-1)
            keep = labels != ignore_index
            sums.index_add_(0, labels[keep], x[keep].double())
            counts += torch.bincount(labels[keep], minlength=num_classes)
            if chunk['instances'] is not None:
                inst_sums, inst_counts = instance_sums(x.double(),
                                                       chunk['instances'].to(device), (h, w))
                pairwise = mean_pairwise_cosine(inst_sums, inst_counts.double())
                instance += torch.stack([pairwise.sum(), torch.tensor(
                    len(pairwise), device=device, dtype=torch.float64)])
        stats = class_dispersion(all_reduce_sum(sums).cpu(), all_reduce_sum(counts).cpu())
        if val.has_instances:
            total, number = all_reduce_sum(instance).tolist()
            stats['intra_instance'] = total / number if number else float('nan')
        return stats


PROTOCOLS = {protocol.name: protocol for protocol in (LinearProbe, KNNRetrieval, Clustering,
                                                      Dispersion)}


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f'unknown dense protocol {protocol!r}; choose from {tuple(PROTOCOLS)}')
    return protocol


def build_protocol(protocol: str, **options) -> DenseProtocol:
    """The :data:`PROTOCOLS` class of ``protocol`` with ``options``; an unknown name or option
    raises one ``ValueError`` naming it and the valid ones."""
    cls = PROTOCOLS[check_protocol(protocol)]
    valid = tuple(inspect.signature(cls).parameters)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f'protocol {protocol!r} has no option {unknown[0]!r}; its options are '
                         f'{valid}')
    return cls(**options)


def evaluate_protocol(protocol: str, train: Optional[StoreBase], val: StoreBase,
                      num_classes: int, ignore_index: int = 255, device='cpu',
                      **options) -> Dict[str, float]:
    """Metrics of ``build_protocol(protocol, **options)`` on the stores (either backend)."""
    return build_protocol(protocol, **options)(train, val, num_classes, ignore_index, device)
