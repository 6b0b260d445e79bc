"""SlotCon's group loss: pixel-wise self-distillation of prototype scores."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdense.models.utils.centering import update_center_
from mmdense.registry import MODELS
from .precision import fp32_forward
from .reductions import rank_mean


@fp32_forward
def group_loss(student_dots: Tensor,
               teacher_dots: Tensor,
               center: Tensor,
               student_temp: float,
               teacher_temp: float,
               valid: Optional[Tensor] = None) -> Tensor:
    """Per-pixel cross-entropy between centred teacher and student prototype scores.

    ``L = mean_{b valid, h, w} [ -Σ_k softmax_k((t[b,:,h,w] - c) / τ_t) ·
    log_softmax_k(s[b,:,h,w] / τ_s) ]``

    Args:
        student_dots, teacher_dots: (B, K, h, w) score maps of the same image region (aligned).
        center: (1, K) centre c subtracted from the teacher scores.
        student_temp, teacher_temp: τ_s, τ_t.
        valid: optional (B,) bool; samples marked False are left out. The mean is taken over the
            valid pixels of this rank (see :func:`rank_mean`).
    """
    targets = F.softmax((teacher_dots.detach().float() - center[..., None, None]) / teacher_temp,
                        dim=1)
    log_probs = F.log_softmax(student_dots.float() / student_temp, dim=1)
    pixel_losses = -(targets * log_probs).sum(dim=1)  # (B, h, w)
    if valid is None:
        valid = torch.ones(pixel_losses.shape[0], dtype=torch.bool, device=pixel_losses.device)
    weights = valid.to(pixel_losses.dtype)[:, None, None].expand_as(pixel_losses)
    return rank_mean((pixel_losses * weights).sum(), weights.sum())


@MODELS.register_module()
class SlotConGroupLoss(nn.Module):
    """SlotCon's group loss: the student's prototype scores of one view follow the teacher's
    centred, sharpened scores of another view at every pixel of the region both views show.

    With student scores ``s`` and teacher scores ``t`` (B, K, h, w) aligned to that region, and
    the centre ``c`` (1, K) of the teacher scores:

    ``L = mean_{b valid, h, w} [ -Σ_k softmax_k((t[b,:,h,w] − c) / τ_t) ·
    log_softmax_k(s[b,:,h,w] / τ_s) ]`` (:func:`group_loss`, a mean over this rank's pixels).

    :meth:`update_center` moves the centre towards the mean teacher score over all pixels of
    all views on all ranks: ``c ← m·c + (1 − m)·mean(t)``.

    Args:
        num_prototypes: K, the size of the centre: the grouping head's number of prototypes
            (``SlotCon`` fills it in from its head).
        student_temp: τ_s.
        teacher_temp: τ_t.
        center_momentum: m.
    """

    def __init__(self, num_prototypes: int, student_temp: float = 0.1,
                 teacher_temp: float = 0.07, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.center_momentum = center_momentum
        self.register_buffer('center', torch.zeros(1, num_prototypes))

    def forward(self, student_dots: Tensor, teacher_dots: Tensor,
                valid: Optional[Tensor] = None) -> Tensor:
        """student_dots, teacher_dots (B, K, h, w) aligned score maps; valid (B,) bool."""
        return group_loss(student_dots, teacher_dots, self.center, self.student_temp,
                          self.teacher_temp, valid)

    def extra_repr(self) -> str:
        return (f'num_prototypes={self.center.shape[-1]}, student_temp={self.student_temp}, '
                f'teacher_temp={self.teacher_temp}, center_momentum={self.center_momentum}')

    @fp32_forward
    def update_center(self, teacher_dots: Sequence[Tensor]) -> None:
        """``c ← m·c + (1 − m)·mean(t)`` over every pixel of the (B, K, h, w) teacher score
        maps of all views (not only the aligned regions) on all ranks."""
        scores = torch.cat([dots.movedim(1, -1).flatten(0, -2) for dots in teacher_dots])
        update_center_(self.center, scores, self.center_momentum)
