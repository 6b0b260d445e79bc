from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from mmdense.registry import MODELS
from .base import TeacherStudentSelfSupervisor, TrainingBatch, encode_by_size


def embed_views(backbone: nn.Module, head: nn.Module, views: List[Tensor]) -> Tensor:
    """Backbone + head on a list of V view batches (B, 3, H, W); consecutive views of equal size
    share one forward pass. Returns (V, B, K)."""
    return torch.stack(encode_by_size(views, lambda batch: head(backbone(batch)[-1])))


@MODELS.register_module()
class DINO(TeacherStudentSelfSupervisor):
    """DINO: self-distillation with no labels (Caron et al., ICCV 2021).

    The student sees all crops (global first, then local); its EMA teacher sees the global
    crops. The student matches the teacher's centred, sharpened distribution over K prototypes
    for every pair of different views (:class:`DINOLoss`).

    Args:
        head: :class:`DINOHead` config.
        loss: :class:`DINOLoss` config.
        num_global_views: number of leading views the teacher sees.
        teacher_temp: τ_t; :class:`TeacherTempWarmupHook` anneals it during warm-up.
        **kwargs: the shared arguments of :class:`TeacherStudentSelfSupervisor` (``backbone``,
            e.g. mmpretrain ``VisionTransformer`` with ``out_type='cls_token'``; teacher
            momentum 0.996 → 1 by default; ``feat_branch``, ``backbone_checkpoint``, ...).
    """

    def __init__(self,
                 head: dict,
                 loss: dict,
                 num_global_views: int = 2,
                 teacher_temp: float = 0.07,
                 **kwargs) -> None:
        super().__init__(head=head, **kwargs)
        self.check_backbone_width('head in_channels', self.head.in_channels)
        self.loss_module = MODELS.build(loss)
        self.check_channels('loss out_channels', self.loss_module.center.shape[-1],
                            'the head out_channels', self.head.last_layer.weight_v.shape[0])
        self.num_global_views = num_global_views
        self.teacher_temp = teacher_temp

    def student_modules(self) -> dict:
        return dict(backbone=self.backbone, head=self.head)

    def view_bounds(self) -> Tuple[int, Optional[int]]:
        return max(2, self.num_global_views), None

    def encode_teacher(self, batch: TrainingBatch) -> Tensor:
        """(V_g, B, K) prototype logits of the global views."""
        return embed_views(self.teacher['backbone'], self.teacher['head'],
                           batch.views[:self.num_global_views])

    def encode_student(self, batch: TrainingBatch) -> Tensor:
        """(V, B, K) prototype logits of every view."""
        return embed_views(self.backbone, self.head, batch.views)

    def compute_losses(self, student: Tensor, teacher: Tensor, batch: TrainingBatch) -> dict:
        return dict(loss=self.loss_module(student, teacher, self.teacher_temp))
