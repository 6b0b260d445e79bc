from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdense.models.losses import kept_slots
from mmdense.models.utils import align_to_boxes
from mmdense.registry import MODELS
from mmdense.structures import overlap_in_views
from mmdense.utils.dist import all_reduce_sum
from .base import TeacherStudentSelfSupervisor, TrainingBatch, view_geometry


@MODELS.register_module()
class SlotCon(TeacherStudentSelfSupervisor):
    """SlotCon: self-supervised learning with semantic grouping (Wen et al., NeurIPS 2022).

    Backbone → dense projector (``neck``) → :class:`SemanticGrouping` (``head``) turns each of two
    overlapping views into prototype score maps and one slot per prototype, for the student and
    its EMA teacher. Two losses, each symmetrised over the views:

    * group loss (:class:`SlotConGroupLoss`): the student's scores follow the teacher's centred,
      sharpened scores of the other view at every pixel of the region both views show (maps
      RoI-aligned to the overlap and un-flipped);
    * slot loss (:class:`SlotContrastLoss`): predicted student slots contrast against the
      teacher's slots of the other view.

    ``L = λ_g (L_group(s1, t2) + L_group(s2, t1)) + (1 − λ_g)(L_slot(s1, t2) + L_slot(s2, t1))``

    Each term is a mean over this rank's pixels or queries (the slot keys come from all ranks);
    DDP averages the gradients over ranks, as in the official code.

    Args:
        neck: :class:`ConvMLPProjector` config.
        head: :class:`SemanticGrouping` config.
        predictor: :class:`SlotPredictor` config.
        loss_group: :class:`SlotConGroupLoss` config (τ_s, τ_t and the momentum of the centre of
            the teacher scores); ``num_prototypes`` defaults to the head's.
        loss_slot: :class:`SlotContrastLoss` config (τ).
        group_loss_weight: λ_g.
        **kwargs: the shared arguments of :class:`TeacherStudentSelfSupervisor`: ``backbone``
            (e.g. mmpretrain ``ResNet`` with ``out_indices=(3,)``), the teacher momentum
            (0.99 → 1 by default), ``teacher_buffers`` (default ``'own'``, the official code:
            the teacher runs in train mode and keeps its own BatchNorm running statistics; only
            parameters are averaged; or ``'average'``, ``'copy'``: the student's),
            ``feat_branch``, ``backbone_checkpoint``, ...
    """

    default_teacher_momentum = 0.99
    default_teacher_buffers = 'own'
    view_hint = 'use MultiCropWithGeometry with 2 global and 0 local crops'

    def __init__(self,
                 neck: dict,
                 head: dict,
                 predictor: dict,
                 loss_group: dict = dict(type='SlotConGroupLoss', student_temp=0.1,
                                         teacher_temp=0.07, center_momentum=0.9),
                 loss_slot: dict = dict(type='SlotContrastLoss', temp=0.2),
                 group_loss_weight: float = 0.5,
                 **kwargs) -> None:
        super().__init__(neck=neck, head=head, **kwargs)
        self.predictor = MODELS.build(predictor)
        self.check_backbone_width('neck in_channels', self.neck.in_channels)
        dims = dict(projector_out=self.neck.out_channels, grouping_dim=self.head.dim,
                    predictor_in=self.predictor.in_channels,
                    predictor_out=self.predictor.out_channels)
        if len(set(dims.values())) != 1:
            raise ValueError(f'SlotCon needs one slot dimension throughout, got {dims}')
        if not 0.0 <= group_loss_weight <= 1.0:
            raise ValueError(f'group_loss_weight must lie in [0, 1], got {group_loss_weight}')
        self.group_loss_weight = group_loss_weight
        self.loss_group = self.build_group_loss(loss_group)
        self.loss_slot = MODELS.build(loss_slot)
        self._register_load_state_dict_pre_hook(self._load_old_center)

    def build_group_loss(self, cfg: dict) -> nn.Module:
        """The group loss, its centre sized by the head's prototypes unless ``cfg`` says."""
        cfg = {'num_prototypes': self.head.num_prototypes, **cfg}
        self.check_channels('loss_group num_prototypes', cfg['num_prototypes'],
                            'the head num_prototypes', self.head.num_prototypes)
        return MODELS.build(cfg)

    @staticmethod
    def _load_old_center(state_dict: dict, prefix: str, *args) -> None:
        """Checkpoints written before the group loss was a module hold its centre as
        ``center``: load it as ``loss_group.center``, in place."""
        if prefix + 'center' in state_dict:
            state_dict[prefix + 'loss_group.center'] = state_dict.pop(prefix + 'center')

    def student_modules(self) -> dict:
        """The modules the teacher tracks, by name (the predictor is student-only)."""
        return dict(backbone=self.backbone, neck=self.neck, head=self.head)

    @staticmethod
    def encode_view(modules: dict, view: Tensor) -> Tuple[Tensor, Tensor]:
        """One view (B, 3, H, W) → slots (B, K, D) and prototype scores (B, K, h, w)."""
        return modules['head'](modules['neck'](modules['backbone'](view)[-1]))

    @staticmethod
    def view_overlaps(data_samples: List[DataSample],
                      device: torch.device) -> Tuple[List[Tensor], Tensor, Tensor]:
        """Where the two views of each image overlap, from their ``crop_boxes`` and ``flips``.

        Returns the (B, 4) overlap box of each view in its normalised displayed frame, the
        (B, 2) flips and the (B,) bool mask of images whose views do overlap.
        """
        boxes, flips = view_geometry(data_samples, device)
        overlap_1, overlap_2, valid = overlap_in_views(boxes[:, 0], flips[:, 0], boxes[:, 1],
                                                       flips[:, 1])
        return [overlap_1, overlap_2], flips, valid

    @staticmethod
    def align_to_overlap(maps: Sequence[Tensor], overlaps: List[Tensor],
                         flips: Tensor) -> List[Tensor]:
        """Inverse augmentation: each view's (B, C, h, w) map resampled to the overlap region at
        (h, w) and un-flipped, so the two views' maps match pixel for pixel."""
        return [align_to_boxes(view_maps, overlaps[v], flips[:, v], view_maps.shape[-2:])
                for v, view_maps in enumerate(maps)]

    def view_bounds(self) -> Tuple[int, Optional[int]]:
        return 2, 2

    def encode_teacher(self, batch: TrainingBatch) -> List[Tuple[Tensor, Tensor]]:
        """Per view: slots (B, K, D) and prototype scores (B, K, h, w)."""
        return [self.encode_view(self.teacher, view) for view in batch.views]

    def encode_student(self, batch: TrainingBatch) -> List[Tuple[Tensor, Tensor]]:
        return [self.encode_view(self.student_modules(), view) for view in batch.views]

    def compute_losses(self, student: List[Tuple[Tensor, Tensor]],
                       teacher: List[Tuple[Tensor, Tensor]], batch: TrainingBatch) -> dict:
        overlaps, flips, valid = self.view_overlaps(batch.data_samples, batch.views[0].device)
        student_slots, student_dots = zip(*student)
        teacher_slots, teacher_dots = zip(*teacher)
        teacher_aligned = self.align_to_overlap(teacher_dots, overlaps, flips)
        student_aligned = self.align_to_overlap(student_dots, overlaps, flips)

        loss_group = loss_slot = 0
        for s, t in ((0, 1), (1, 0)):
            loss_group = loss_group + self.loss_group(student_aligned[s], teacher_aligned[t],
                                                      valid)
            loss_slot = loss_slot + self.loss_slot(student_slots[s], teacher_slots[t],
                                                   student_dots[s], teacher_dots[t],
                                                   self.predictor)
        self.loss_group.update_center(teacher_dots)
        return dict(loss_group=self.group_loss_weight * loss_group,
                    loss_slot=(1 - self.group_loss_weight) * loss_slot,
                    num_active_prototypes=self.count_active_prototypes(teacher_dots))

    @torch.no_grad()
    def count_active_prototypes(self, dots: Sequence[Tensor]) -> Tensor:
        """Number of prototypes that win at least one pixel of the batch (all ranks)."""
        used = sum(kept_slots(d).sum(dim=0) for d in dots)
        return (all_reduce_sum(used) > 0).sum().float()
