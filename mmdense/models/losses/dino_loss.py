import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdense.models.utils.centering import update_center_
from mmdense.registry import MODELS
from .precision import fp32_forward


@fp32_forward
def multicrop_cross_entropy(student_logits: Tensor,
                            teacher_probs: Tensor,
                            student_temp: float,
                            skip_same_view: bool = True) -> Tensor:
    """Cross-entropy between every teacher view and every other student view.

    ``L = 1/|P| Σ_{(t,s)∈P} mean_b [ -Σ_k q[t,b,k] · log softmax(z[s,b]/τ_s)_k ]``

    Args:
        student_logits: (V_s, B, K) student outputs z; views 0..V_t-1 are the teacher's views.
        teacher_probs: (V_t, B, K) teacher targets q (already centred, sharpened, detached).
        student_temp: τ_s.
        skip_same_view: leave out the pairs (t, t), where both sides saw the same crop.
    """
    log_probs = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    batch_size = student_logits.shape[1]
    pair_losses = -torch.einsum('tbk,sbk->ts', teacher_probs.float(), log_probs) / batch_size
    valid = torch.ones_like(pair_losses)
    if skip_same_view:
        valid[:, :teacher_probs.shape[0]].fill_diagonal_(0)
    # weighted mean, not pair_losses[valid]: boolean indexing would wait on the device
    return (pair_losses * valid).sum() / valid.sum()


@MODELS.register_module()
class DINOLoss(nn.Module):
    """DINO self-distillation loss with a centred, sharpened teacher.

    Teacher targets ``q = softmax((g_t − c) / τ_t)``; loss = :func:`multicrop_cross_entropy`.
    After each call the centre is updated with the mean teacher output over all views, samples
    and ranks: ``c ← m·c + (1 − m)·mean(g_t)``. ``skip_same_view=False`` keeps the pairs (t, t),
    for teacher outputs that are not views of the student (e.g. ADCLR's query crops). Computed
    in fp32 under autocast (:func:`fp32_forward`).
    """

    def __init__(self, out_channels: int, student_temp: float = 0.1,
                 center_momentum: float = 0.9, skip_same_view: bool = True) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.skip_same_view = skip_same_view
        self.register_buffer('center', torch.zeros(1, out_channels))

    def teacher_targets(self, teacher_logits: Tensor, teacher_temp: float) -> Tensor:
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    @fp32_forward
    def forward(self,
                student_logits: Tensor,
                teacher_logits: Tensor,
                teacher_temp: float) -> Tensor:
        """student_logits (V_s, B, K); teacher_logits (V_t, B, K) computed without gradient."""
        teacher_probs = self.teacher_targets(teacher_logits.detach(), teacher_temp)
        loss = multicrop_cross_entropy(student_logits, teacher_probs, self.student_temp,
                                       self.skip_same_view)
        self.update_center(teacher_logits)
        return loss

    def update_center(self, teacher_logits: Tensor) -> None:
        update_center_(self.center, teacher_logits.reshape(-1, teacher_logits.shape[-1]),
                       self.center_momentum)
