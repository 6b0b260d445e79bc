"""A throwaway sixth method, built only from the teacher–student base and registered modules.

Pixel-level BYOL: each view goes through the backbone, a dense projector and (student only) a
dense predictor; on the region both views show (RoI-aligned, un-flipped) the student's predicted
map of one view regresses the teacher's projected map of the other,
``L = Σ_{(s,t)∈{(1,2),(2,1)}} mean_{b,h,w} (2 − 2·cos(pred_s[b,:,h,w], proj_t[b,:,h,w]))``.

It lives in the tests to prove that a new method needs only its own file, its configs and one
row of ``tests/algorithm_table.py`` to be covered by every shared per-algorithm test.
"""
from typing import List

import torch
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdense.models.algorithms.base import TeacherStudentSelfSupervisor, view_geometry
from mmdense.models.utils import align_to_boxes
from mmdense.registry import MODELS
from mmdense.structures import overlap_in_views


@MODELS.register_module(force=True)
class DenseBYOL(TeacherStudentSelfSupervisor):
    """Pixel-level BYOL on the overlap of two views (see the module docstring).

    Args:
        backbone / neck / predictor: configs of the backbone, the dense projector (e.g.
            ``ConvMLPProjector``) and the student's dense predictor (another one).
        loss: a regression loss on (N, C) vectors, e.g. mmpretrain's ``CosineSimilarityLoss``
            with ``shift_factor=2, scale_factor=2``.
        teacher_momentum / end_teacher_momentum: the EMA schedule.
    """

    def __init__(self, backbone: dict, neck: dict, predictor: dict, loss: dict,
                 teacher_momentum: float = 0.99, end_teacher_momentum: float = 1.0,
                 **kwargs) -> None:
        super().__init__(backbone=backbone, neck=neck, **kwargs)
        self.predictor = MODELS.build(predictor)
        self.loss_module = MODELS.build(loss)
        self.build_teacher(teacher_momentum, end_teacher_momentum)

    def student_modules(self) -> dict:
        return dict(backbone=self.backbone, neck=self.neck)

    @staticmethod
    def project(modules: dict, view: Tensor) -> Tensor:
        return modules['neck'](modules['backbone'](view))

    def loss(self, inputs: List[Tensor], data_samples: List[DataSample]) -> dict:
        boxes, flips = view_geometry(data_samples, inputs[0].device)
        overlap_1, overlap_2, valid = overlap_in_views(boxes[:, 0], flips[:, 0], boxes[:, 1],
                                                       flips[:, 1])
        overlaps = (overlap_1, overlap_2)

        def aligned(maps: Tensor, view: int) -> Tensor:  # (B, C, h, w) → (B·h·w, C)
            maps = align_to_boxes(maps, overlaps[view], flips[:, view], maps.shape[-2:])
            return maps.movedim(1, -1).flatten(0, -2)

        self.teacher.update(self.student_modules())
        predictions = [aligned(self.predictor(self.project(self.student_modules(), view)), v)
                       for v, view in enumerate(inputs)]
        with torch.no_grad():
            targets = [aligned(self.project(self.teacher, view), v)
                       for v, view in enumerate(inputs)]
        pixels = predictions[0].shape[0] // len(valid)
        mask = valid.repeat_interleave(pixels).float()
        loss = sum(self.loss_module(predictions[s], targets[t], mask)
                   for s, t in ((0, 1), (1, 0)))
        return dict(loss=loss)
