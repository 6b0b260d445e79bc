"""Cross-entropy of student predictions against Sinkhorn-balanced teacher codes (SwAV-style
targets, DINO-style multi-crop pairing), as CoTAP's patch, CLS and cross-image CLS terms use it."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdense.models.utils import sinkhorn_knopp
from mmdense.registry import MODELS
from .dino_loss import multicrop_cross_entropy
from .precision import fp32_forward


@MODELS.register_module()
class SinkhornCrossEntropyLoss(nn.Module):
    """Student predictions follow the teacher's Sinkhorn-Knopp codes.

    With teacher logits ``z_t`` and student logits ``z_s`` over K prototypes::

        q = SK_{ε,n}(z_t)              codes: rows sum to 1, every prototype holds 1/K of the
                                       mass of all samples of all ranks (n iterations, no grad)
        log p = log_softmax(z_s / τ_s)
        ℓ(q, p) = −Σ_k q_k · log p_k

    :meth:`forward` is the multi-crop form: for (V_t, B, K) teacher and (V_s, B, K) student
    logits (views 0..V_t−1 of the student are the teacher's crops),
    ``L = 1/|P| Σ_{(t,s)∈P} mean_b ℓ(q[t, π(b)], p[s, b])`` over the view pairs P
    (:func:`multicrop_cross_entropy`), where π maps a sample to the sample whose code it
    follows (identity by default). Dense maps use :meth:`codes` and :meth:`log_probs` along
    their channel dim and weigh ``ℓ`` per pixel themselves.

    Args:
        student_temp: τ_s.
        sinkhorn_epsilon: ε, the sharpness of the codes (smaller: closer to one-hot).
        sinkhorn_iters: n, Sinkhorn-Knopp iterations.
    """

    def __init__(self,
                 student_temp: float = 0.1,
                 sinkhorn_epsilon: float = 0.05,
                 sinkhorn_iters: int = 3) -> None:
        super().__init__()
        for name, value in (('student_temp', student_temp),
                            ('sinkhorn_epsilon', sinkhorn_epsilon)):
            if value <= 0:
                raise ValueError(f'{type(self).__name__}: {name} must be positive, got {value}')
        if sinkhorn_iters < 1:
            raise ValueError(f'{type(self).__name__}: sinkhorn_iters must be at least 1, got '
                             f'{sinkhorn_iters}')
        self.student_temp = student_temp
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iters = sinkhorn_iters

    @fp32_forward
    def codes(self, teacher_logits: Tensor, dim: int = -1) -> Tensor:
        """Codes q of logits with the K prototypes along ``dim``, every other position a
        sample (e.g. (B, K) or (B, K, h, w) with ``dim=1``); same shape, no gradient."""
        moved = teacher_logits.movedim(dim, -1)
        codes = sinkhorn_knopp(moved.reshape(-1, moved.shape[-1]), self.sinkhorn_epsilon,
                               self.sinkhorn_iters)
        return codes.view(moved.shape).movedim(-1, dim)

    @fp32_forward
    def log_probs(self, student_logits: Tensor, dim: int = -1) -> Tensor:
        """log p = log_softmax(z_s / τ_s) along ``dim``, in float32 or wider."""
        return F.log_softmax(student_logits.float() / self.student_temp, dim)

    @fp32_forward
    def forward(self,
                student_logits: Tensor,
                teacher_logits: Tensor,
                skip_same_view: bool = True,
                target_index: Optional[Tensor] = None) -> Tensor:
        """student_logits (V_s, B, K); teacher_logits (V_t, B, K); ``target_index`` (B,): π,
        sample b follows the codes of sample π(b) of each teacher view. ``skip_same_view``
        leaves out the pairs (t, t), where both sides saw the same crop."""
        codes = torch.stack([self.codes(view) for view in teacher_logits])
        if target_index is not None:
            codes = codes[:, target_index]
        return multicrop_cross_entropy(student_logits, codes, self.student_temp, skip_same_view)

    def extra_repr(self) -> str:
        return (f'student_temp={self.student_temp}, sinkhorn_epsilon={self.sinkhorn_epsilon}, '
                f'sinkhorn_iters={self.sinkhorn_iters}')
