from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdense.models.losses import similarity_lists
from mmdense.models.utils import align_to_boxes
from mmdense.registry import MODELS
from mmdense.structures import overlap_in_views
from mmdense.utils.dist import (all_reduce_sum, broadcast_from_rank0, concat_all_gather,
                                gather_with_grad, get_rank, get_world_size)
from .base import TeacherStudentSelfSupervisor, TrainingBatch, encode_by_size, view_geometry

LOSS_TERMS = ('patch', 'cls', 'cross_patch', 'cross_cls')


def random_derangement(n: int, device: torch.device, attempts: int = 32) -> Tensor:
    """A random permutation of ``range(n)`` without fixed points (n >= 2), drawn on ``device``
    without a host synchronisation: the first fixed-point-free one of ``attempts`` uniform
    permutations (so uniform over derangements), or, if none is (probability (1 − 1/e)^32 ≈
    4e-7), the cycle ``p_0 → p_1 → … → p_{n−1} → p_0`` of the first one."""
    candidates = torch.rand(attempts, n, device=device).argsort(dim=1)
    valid = (candidates != torch.arange(n, device=device)).all(dim=1)
    first = candidates.index_select(0, valid.int().argmax().view(1))[0]
    cycle = torch.empty_like(candidates[0]).scatter_(0, candidates[0], candidates[0].roll(-1))
    return torch.where(valid.any(), first, cycle)


@dataclass
class PairBatch(TrainingBatch):
    """The views of each image and (with pairs) of its neighbour stacked into batches of 2B
    images, anchors first, with their crop boxes (2B, V, 4), flips (2B, V), the loss terms the
    batch trains (name → weight) and the views of each branch (slices, not index lists, which
    would be copied to the device)."""
    boxes: Tensor
    flips: Tensor
    active: Dict[str, float]
    student_views: slice
    teacher_views: slice


@MODELS.register_module()
class CoTAP(TeacherStudentSelfSupervisor):
    """CoTAP: semantic concentration for dense self-supervised learning (Wen et al., TPAMI 2025).

    A ViT with an object-aware filter (:class:`ObjectAwareViT`) and an EMA teacher, trained on
    pairs (image, nearest-neighbour image) from :class:`NeighbourPairDataset`. Each image gives
    the student its jittered global + local crops and the teacher clean copies of the globals.
    With ``P`` the patch head and ``C`` the CLS head, four losses:

    1. ``patch``: the student's ``log_softmax(P/τ_s)`` of every crop follows the teacher's
       Sinkhorn-balanced patch codes of each global crop on the region both crops show
       (RoI-aligned, un-flipped; optionally weighted by the teacher's CLS attention);
    2. ``cls``: swapped prediction between crops, ``CE(sinkhorn(C_t(g)), log_softmax(C_s(v)/τ_s))``;
    3. ``cross_patch``: patch maps of an image and its neighbour, average-pooled to ks×ks, keep
       the cells the teacher's CLS attends to most; every kept cell ranks the neighbour's cells
       (and those of images from random derangements of the pairs of all ranks, weight × α)
       by student cosine similarity, with teacher similarities as continuous targets;
    4. ``cross_cls``: the student's CLS prediction of an image follows the teacher's Sinkhorn
       code of its neighbour, both directions.

    Terms 1, 2 and 4 are the cross-entropy of ``loss_distill`` (τ_s, Sinkhorn ε and
    iterations), term 3 the ranking loss ``loss_rank`` (margin τ, threshold θ).

    Args:
        patch_head / cls_head: :class:`DINOHead` configs (512 / 4096 outputs in the paper).
        loss_distill: :class:`SinkhornCrossEntropyLoss` config of the ``patch``, ``cls`` and
            ``cross_cls`` terms (student_temp, sinkhorn_epsilon, sinkhorn_iters).
        loss_rank: :class:`ContinuousAPLoss` config of the ``cross_patch`` term (margin,
            threshold, chunk_size, eps).
        loss_weights: weight per term of ``LOSS_TERMS``; a term with weight 0 is not computed.
        num_global_views: G, global crops per image, first among its views.
        clean_teacher_views: the pipeline appended clean copies of the G globals
            (``MultiCropWithGeometry(clean_global_copies=True)``) for the teacher.
        patch_attention_weighting: weight the patch loss by the teacher's CLS attention.
        cross_pool_sizes: ks values of the cross-image patch loss (averaged over them).
        kept_cell_ratio: fraction of the ks² cells kept by teacher attention.
        num_negatives / negative_weight: derangements of the (global) batch used as negatives,
            and α, the multiplier of their anchor weights in the ranking loss.
        **kwargs: the shared arguments of :class:`TeacherStudentSelfSupervisor`: ``backbone``
            (:class:`ObjectAwareViT`, outputs 2·D channels), the teacher momentum (cosine
            0.9997 → 0.9999 by default), ``feat_branch``, ``backbone_checkpoint`` (e.g. a DINO
            checkpoint with ``prefix='teacher.module.backbone.'``: every backbone parameter
            outside the object-aware filter's own must load, or an error names them), ...
    """

    default_teacher_momentum = 0.9997
    default_end_teacher_momentum = 0.9999
    view_hint = ('G global crops for the student, then (clean_teacher_views) their G clean '
                 'copies for the teacher: check the MultiCropWithGeometry pipeline')

    def __init__(self,
                 patch_head: dict,
                 cls_head: dict,
                 loss_distill: dict = dict(type='SinkhornCrossEntropyLoss'),
                 loss_rank: dict = dict(type='ContinuousAPLoss'),
                 loss_weights: Optional[Dict[str, float]] = None,
                 num_global_views: int = 2,
                 clean_teacher_views: bool = True,
                 patch_attention_weighting: bool = False,
                 cross_pool_sizes: Sequence[int] = (7, ),
                 kept_cell_ratio: float = 0.5,
                 num_negatives: int = 5,
                 negative_weight: float = 0.1,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.patch_head = MODELS.build(patch_head)
        self.cls_head = MODELS.build(cls_head)
        self.loss_distill = MODELS.build(loss_distill)
        self.loss_rank = MODELS.build(loss_rank)
        if not hasattr(self.backbone, 'forward_dense'):
            raise TypeError(f'CoTAP needs an ObjectAwareViT backbone (with forward_dense), got '
                            f'{type(self.backbone).__name__}')
        for name in ('patch_head', 'cls_head'):
            self.check_backbone_width(f'{name} in_channels', getattr(self, name).in_channels)
        self.loss_weights = dict.fromkeys(LOSS_TERMS, 1.0)
        unknown = set(loss_weights or {}) - set(LOSS_TERMS)
        if unknown:
            raise KeyError(f'CoTAP: unknown loss_weights {sorted(unknown)}; terms are '
                           f'{LOSS_TERMS}')
        self.loss_weights.update(loss_weights or {})
        threshold = getattr(self.loss_rank, 'threshold', None)
        if threshold is not None and threshold >= 1:
            raise ValueError(f'CoTAP: loss_rank.threshold={threshold} leaves no anchor: the '
                             'ranking targets are cosine similarities, at most 1')
        if not 0 < kept_cell_ratio <= 1:
            raise ValueError(f'CoTAP: kept_cell_ratio must lie in (0, 1], got {kept_cell_ratio}')
        self.num_global_views = num_global_views
        self.clean_teacher_views = clean_teacher_views
        self.patch_attention_weighting = patch_attention_weighting
        self.cross_pool_sizes = tuple(cross_pool_sizes)
        self.kept_cell_ratio = kept_cell_ratio
        self.num_negatives = num_negatives
        self.negative_weight = negative_weight

    def student_modules(self) -> dict:
        return dict(backbone=self.backbone, patch_head=self.patch_head, cls_head=self.cls_head)

    def backbone_keys_new_to_the_method(self) -> set:
        """The object-aware filter of the last block, which a plain ViT checkpoint lacks."""
        last = f'layers.{len(self.backbone.layers) - 1}'
        return {f'{last}.{name}' for name in ('prototypes', 'prototypes_initialised',
                                              'out_norm.weight', 'out_norm.bias')}

    # -- encoders ---------------------------------------------------------------------------
    @staticmethod
    def encode(modules: dict, views: List[Tensor], with_attention: bool = False) -> List[dict]:
        """Per view: ``cls`` (B, K_c) and ``patch`` (B, K_p, h, w) head logits, plus the last
        block's ``cls_attention`` (B, h, w) if asked. Equal-size views share one pass."""

        def encode_batch(batch: Tensor) -> dict:
            dense = modules['backbone'].forward_dense(batch, with_attention)
            patches = dense['patches']
            patch_logits = modules['patch_head'](patches.flatten(2).transpose(1, 2))
            patch_logits = patch_logits.transpose(1, 2).unflatten(2, patches.shape[-2:])
            outputs = dict(cls=modules['cls_head'](dense['cls']), patch=patch_logits)
            if with_attention:
                outputs['cls_attention'] = dense['cls_attention']
            return outputs

        return encode_by_size(views, encode_batch)

    # -- losses -----------------------------------------------------------------------------
    def patch_loss(self, student: List[dict], teacher: List[dict], boxes: Tensor,
                   flips: Tensor, teacher_boxes: Tensor, teacher_flips: Tensor) -> Tensor:
        """Within-image patch loss, averaged over the (teacher global g, student crop v) pairs
        whose crops overlap in some image of some rank; each pair's weighted mean is taken over
        the pixels of all ranks."""
        pairs = [(g, v) for g in range(len(teacher)) for v in range(len(student))
                 if v != g or self.clean_teacher_views]
        teacher_of, student_of = zip(*pairs)

        def pair_rows(per_view: Tensor, views: Sequence[int]) -> Tensor:
            """(B, V, ...) → (pairs·B, ...): the rows of each pair's view, pair-major (slices
            and one concatenation on the device, no index tensor to copy there)."""
            return torch.cat([per_view[:, v] for v in views])

        # the overlaps of all pairs in one call
        overlap_t, overlap_s, valid = overlap_in_views(
            pair_rows(teacher_boxes, teacher_of), pair_rows(teacher_flips, teacher_of),
            pair_rows(boxes, student_of), pair_rows(flips, student_of))
        batch = boxes.shape[0]
        overlaps = {pair: (overlap_t[i * batch:(i + 1) * batch],
                           overlap_s[i * batch:(i + 1) * batch], valid[i * batch:(i + 1) * batch])
                    for i, pair in enumerate(pairs)}
        # which pairs overlap in some image of some rank, on the device (no host read): every
        # pair is computed, in the order of ``pairs``, and the mean is over those that overlap
        overlapping = all_reduce_sum(valid.view(len(pairs), batch).sum(1)) > 0
        totals, weight_sums = [], []
        for g, teacher_view in enumerate(teacher):
            codes = self.loss_distill.codes(teacher_view['patch'], dim=1)
            for pair_g, v in pairs:
                if pair_g != g:
                    continue
                overlap_t, overlap_s, valid = overlaps[g, v]
                student_view = student[v]
                size = student_view['patch'].shape[-2:]
                targets = align_to_boxes(codes, overlap_t, teacher_flips[:, g], size)
                log_probs = self.loss_distill.log_probs(student_view['patch'], dim=1)
                log_probs = align_to_boxes(log_probs, overlap_s, flips[:, v], size)
                pixel_loss = -(targets * log_probs).sum(1)  # (B, h, w)
                weight = valid[:, None, None].float().expand_as(pixel_loss)
                if self.patch_attention_weighting:
                    attention = align_to_boxes(teacher_view['cls_attention'][:, None],
                                               overlap_t, teacher_flips[:, g], size)[:, 0]
                    weight = weight * attention / attention.mean((1, 2), keepdim=True)
                totals.append((pixel_loss * weight).sum())
                weight_sums.append(weight.sum())
        # mean over ranks of each pair's total weight: the mean of the per-rank losses (what DDP
        # averages) is the loss of the whole batch; a pair that overlaps nowhere has weight 0
        # everywhere, and the loss is 0 when no pair overlaps
        mean_weights = all_reduce_sum(torch.stack(weight_sums)) / get_world_size()
        pair_losses = torch.stack(totals) / mean_weights.clamp(min=1e-6)
        return (pair_losses * overlapping).sum() / overlapping.sum().clamp(min=1)

    def cls_loss(self, student: List[dict], teacher: List[dict]) -> Tensor:
        """Swapped prediction between crops against Sinkhorn teacher codes."""
        return self.loss_distill(torch.stack([view['cls'] for view in student]),
                                 torch.stack([view['cls'] for view in teacher]),
                                 skip_same_view=not self.clean_teacher_views)

    @staticmethod
    def pooled_cells(patch_logits: Tensor, kept: Tensor, pool_size: int) -> Tensor:
        """Unit (B, n, K) head vectors of the ks×ks average-pooled cells ``kept`` (B, n)."""
        cells = F.adaptive_avg_pool2d(patch_logits.float(), pool_size).flatten(2).transpose(1, 2)
        return F.normalize(cells.gather(1, kept[..., None].expand(-1, -1, cells.shape[2])), dim=-1)

    def negative_partners(self, batch: int, device: torch.device) -> List[Tensor]:
        """Per derangement σ of the pairs of all ranks: for each of the ``batch`` local images
        (pair p), the member of pair σ(p) on its partner's side, so a negative is never the
        image itself nor its neighbour. Indices into the batches of all ranks concatenated in
        rank order (the local batch in one process); σ is drawn on rank 0 and shared."""
        half = batch // 2
        num_pairs = half * get_world_size()
        if num_pairs < 2 or self.num_negatives == 0:
            return []
        local = torch.arange(batch, device=device)
        pair = get_rank() * half + local % half
        partner_side = 1 - local // half
        derangements = broadcast_from_rank0(torch.stack(
            [random_derangement(num_pairs, device) for _ in range(self.num_negatives)]))
        return [(sigma[pair] // half) * batch + partner_side * half + sigma[pair] % half
                for sigma in derangements]

    def cross_patch_loss(self, student: dict, teacher: dict, partner: Tensor) -> Tensor:
        """CoTAP ranking of the partner's (and negatives') cells for every kept anchor cell;
        negatives come from the images of all ranks."""
        negatives = self.negative_partners(partner.shape[0], partner.device)
        losses = []
        for pool_size in self.cross_pool_sizes:
            attention = F.adaptive_avg_pool2d(teacher['cls_attention'][:, None], pool_size)
            num_kept = max(1, round(self.kept_cell_ratio * pool_size**2))
            kept = attention.flatten(1).topk(num_kept, dim=1).indices
            teacher_cells = self.pooled_cells(teacher['patch'], kept, pool_size)
            student_cells = self.pooled_cells(student['patch'], kept, pool_size)
            teacher_others = [teacher_cells[partner]]
            student_others = [student_cells[partner]]
            if negatives:
                all_teacher_cells = concat_all_gather(teacher_cells)
                all_student_cells = gather_with_grad(student_cells)
                teacher_others += [all_teacher_cells[n] for n in negatives]
                student_others += [all_student_cells[n] for n in negatives]
            targets = similarity_lists(teacher_cells, teacher_others)
            preds = similarity_lists(student_cells, student_others)
            scale = torch.ones_like(targets)
            scale[..., num_kept:] = self.negative_weight
            losses.append(self.loss_rank(preds, targets, item_scale=scale))
        return torch.stack(losses).mean()

    def cross_cls_loss(self, student: List[dict], teacher: List[dict], partner: Tensor) -> Tensor:
        """The student's CLS predictions of an image follow its partner's teacher codes."""
        return self.loss_distill(
            torch.stack([view['cls'] for view in student[:self.num_global_views]]),
            torch.stack([view['cls'] for view in teacher]),
            skip_same_view=False, target_index=partner)

    # -- training step ----------------------------------------------------------------------
    def unpack(self, inputs: List[Tensor], data_samples: List[DataSample]) -> PairBatch:
        """Stack an image's views and its neighbour's into one batch of 2B images (anchors
        first), with their crop boxes (2B, V, 4) and flips (2B, V), the loss terms the batch
        trains and which views each branch sees: the student all but the trailing G clean
        copies, the teacher those copies (or, without them, the student's G globals)."""
        views, boxes, flips = inputs, *view_geometry(data_samples, inputs[0].device)
        active = self.active_terms(data_samples)
        num_views = data_samples[0].metainfo.get('num_pair_views')
        crossing = [t for t in ('cross_patch', 'cross_cls') if t in active]
        if num_views is None and crossing:
            raise ValueError(f'CoTAP: loss terms {crossing} need (image, neighbour) pairs: '
                             'wrap the dataset in NeighbourPairDataset or set their weights to 0')
        if num_views is not None:
            if 2 * num_views != len(inputs):
                raise ValueError(f'CoTAP: {len(inputs)} views for pairs of {num_views} views')
            views = [torch.cat([inputs[v], inputs[num_views + v]]) for v in range(num_views)]
            boxes = torch.cat([boxes[:, :num_views], boxes[:, num_views:]])
            flips = torch.cat([flips[:, :num_views], flips[:, num_views:]])
        num_global = self.num_global_views
        num_student = len(views) - (num_global if self.clean_teacher_views else 0)
        first_teacher = num_student if self.clean_teacher_views else 0
        return PairBatch(views, data_samples, boxes, flips, active, slice(0, num_student),
                         slice(first_teacher, first_teacher + num_global))

    def active_terms(self, data_samples: List[DataSample]) -> Dict[str, float]:
        """Terms with a positive weight, restricted to the batch's ``loss_terms`` (set by
        ``NeighbourPairDataset(loss_terms=...)`` per source) when the samples carry them."""
        sources = {s.metainfo.get('loss_terms') for s in data_samples}
        if len(sources) > 1:
            raise ValueError(f'CoTAP: one batch mixes samples for loss terms {sources}: draw '
                             'batches with SourceGroupedBatchSampler')
        allowed = sources.pop()
        return {name: weight for name, weight in self.loss_weights.items()
                if weight > 0 and (allowed is None or name in allowed)}

    def view_bounds(self) -> Tuple[int, Optional[int]]:
        """G global crops for the student, and their G clean copies for the teacher."""
        return self.num_global_views * (2 if self.clean_teacher_views else 1), None

    def encode_teacher(self, batch: PairBatch) -> List[dict]:
        return self.encode(self.teacher, batch.views[batch.teacher_views], with_attention=True)

    def encode_student(self, batch: PairBatch) -> List[dict]:
        return self.encode(self.student_modules(), batch.views[batch.student_views])

    def compute_losses(self, student: List[dict], teacher: List[dict], batch: PairBatch) -> dict:
        teacher_views = batch.teacher_views
        size = batch.views[0].shape[0]
        partner = torch.arange(size, device=batch.views[0].device).roll(size // 2)
        terms = dict(
            patch=lambda: self.patch_loss(student, teacher, batch.boxes, batch.flips,
                                          batch.boxes[:, teacher_views],
                                          batch.flips[:, teacher_views]),
            cls=lambda: self.cls_loss(student, teacher),
            cross_patch=lambda: self.cross_patch_loss(student[0], teacher[0], partner),
            cross_cls=lambda: self.cross_cls_loss(student, teacher, partner))
        return {f'loss_{name}': weight * terms[name]() for name, weight in batch.active.items()}
