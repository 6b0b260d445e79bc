"""iBOT's masked-image term: the student predicts, at its masked patches, what the teacher
outputs at the same patches of the unmasked view."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdense.models.utils.centering import update_center_
from mmdense.registry import MODELS
from .precision import fp32_forward


@fp32_forward
def masked_patch_cross_entropy(student_logits: Tensor, teacher_probs: Tensor, masks: Tensor,
                               student_temp: float) -> Tensor:
    """Cross-entropy at the masked patches, averaged per image, then over images and views.

    ``L = 1/V Σ_v 1/B Σ_b [Σ_n m[v,b,n] · H(q[v,b,n], z[v,b,n]) / max(1, Σ_n m[v,b,n])]``,
    ``H(q, z) = −Σ_k q_k · log softmax(z / τ_s)_k``: an image without masked patches adds 0.

    Args:
        student_logits: (V, B, N, K) student head outputs z of the masked views' patch tokens.
        teacher_probs: (V, B, N, K) teacher targets q of the same views unmasked (centred,
            sharpened, detached).
        masks: (V, B, N) bool, True where the student's patch was masked.
        student_temp: τ_s.
    """
    log_probs = F.log_softmax(student_logits / student_temp, dim=-1)
    per_patch = -(teacher_probs * log_probs).sum(dim=-1)  # (V, B, N)
    masks = masks.to(per_patch.dtype)
    per_image = (per_patch * masks).sum(dim=-1) / masks.sum(dim=-1).clamp(min=1.0)
    return per_image.mean()


@MODELS.register_module()
class iBOTPatchLoss(nn.Module):
    """iBOT's masked-image-modelling loss (Zhou et al., ICLR 2022, ``iBOTLoss``'s patch term).

    Each of the V global views is given to the student with a block mask m and to the teacher
    unmasked; for the same view, the student's patch head output z at every masked patch
    matches the teacher's centred, sharpened output there:

    ``q[v,b,n] = softmax((t[v,b,n] − c) / τ_p)``, loss = :func:`masked_patch_cross_entropy`.

    After each call the patch centre is updated with the teacher's patch outputs, all patches
    of all views, images and ranks: ``c ← m_c·c + (1 − m_c)·mean_{v,b,n}(t[v,b,n])`` (iBOT
    averages each image's patches, then the images: equal, as every image has N patches).
    Computed in fp32 under autocast (:func:`fp32_forward`).

    Args:
        out_channels: K, the patch head's outputs.
        student_temp: τ_s.
        center_momentum: m_c.

    Shapes of :meth:`forward`: ``student_logits`` and ``teacher_logits`` (V, B, N, K),
    ``masks`` (V, B, N) or (V, B, h, w) bool with N = h·w, ``teacher_temp`` τ_p a float.
    """

    def __init__(self, out_channels: int, student_temp: float = 0.1,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer('center', torch.zeros(1, out_channels))

    @fp32_forward
    def forward(self, student_logits: Tensor, teacher_logits: Tensor, masks: Tensor,
                teacher_temp: float) -> Tensor:
        masks = masks.flatten(2)
        if student_logits.shape != teacher_logits.shape or \
                masks.shape != student_logits.shape[:3]:
            raise ValueError(f'iBOTPatchLoss: student {tuple(student_logits.shape)} and teacher '
                             f'{tuple(teacher_logits.shape)} logits must be (V, B, N, K) and the '
                             f'masks (V, B, N), got {tuple(masks.shape)}')
        teacher_logits = teacher_logits.detach()
        teacher_probs = F.softmax((teacher_logits - self.center) / teacher_temp, dim=-1)
        loss = masked_patch_cross_entropy(student_logits, teacher_probs, masks,
                                          self.student_temp)
        update_center_(self.center, teacher_logits.reshape(-1, teacher_logits.shape[-1]),
                       self.center_momentum)
        return loss
