from typing import List, Optional

import torch
import torch.nn as nn
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdense.registry import MODELS
from .base import TeacherStudentSelfSupervisor, encode_by_size


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
        backbone: e.g. mmpretrain ``VisionTransformer`` with ``out_type='cls_token'``.
        head: :class:`DINOHead` config.
        loss: :class:`DINOLoss` config.
        num_global_views: number of leading views the teacher sees.
        teacher_momentum / end_teacher_momentum: EMA momentum schedule (0.996 → 1).
        teacher_temp: τ_t; :class:`TeacherTempWarmupHook` anneals it during warm-up.
        feat_branch / backbone_checkpoint: see :class:`TeacherStudentSelfSupervisor`.
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 loss: dict,
                 num_global_views: int = 2,
                 teacher_momentum: float = 0.996,
                 end_teacher_momentum: float = 1.0,
                 teacher_temp: float = 0.07,
                 feat_branch: Optional[str] = None,
                 backbone_checkpoint: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(backbone=backbone, head=head, pretrained=pretrained,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg,
                         feat_branch=feat_branch, backbone_checkpoint=backbone_checkpoint)
        backbone_dims = getattr(self.backbone, 'embed_dims', None)
        if backbone_dims is not None and backbone_dims != self.head.in_channels:
            raise ValueError(f'{type(self).__name__}: head in_channels={self.head.in_channels} '
                             f'does not match the backbone embed_dims={backbone_dims}')
        self.loss_module = MODELS.build(loss)
        if self.loss_module.center.shape[-1] != self.head.last_layer.weight_v.shape[0]:
            raise ValueError(f'{type(self).__name__}: loss out_channels='
                             f'{self.loss_module.center.shape[-1]} does not match the head '
                             f'out_channels={self.head.last_layer.weight_v.shape[0]}')
        self.num_global_views = num_global_views
        self.teacher_temp = teacher_temp
        self.build_teacher(teacher_momentum, end_teacher_momentum)

    def student_modules(self) -> dict:
        return dict(backbone=self.backbone, head=self.head)

    def loss(self, inputs: List[Tensor], data_samples: List[DataSample]) -> dict:
        needed = max(2, self.num_global_views)
        if len(inputs) < needed:
            raise ValueError(f'{type(self).__name__} needs at least {needed} views per image, '
                             f'got {len(inputs)}: check the MultiCrop pipeline')
        self.teacher.update(self.student_modules())
        with torch.no_grad():
            teacher_logits = embed_views(self.teacher['backbone'], self.teacher['head'],
                                         inputs[:self.num_global_views])
        student_logits = embed_views(self.backbone, self.head, inputs)
        loss = self.loss_module(student_logits, teacher_logits, self.teacher_temp)
        return dict(loss=loss)
