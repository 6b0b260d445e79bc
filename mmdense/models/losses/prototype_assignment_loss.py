"""Prototype prediction of balanced assignments (DSC-PM's prototype loss)."""
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdense.registry import MODELS
from .precision import fp32_forward


@fp32_forward
def prototype_assignment_loss(pixels: Tensor, prototypes: Tensor, codes: Tensor,
                              temp: float) -> Tensor:
    """Cross-entropy between balanced codes and the pixels' softmax over the prototypes.

    With unit pixels ``z_i``, unit prototypes ``c_k`` and Sinkhorn codes ``Q`` (rows sum to 1):
    ``L = mean_i −Σ_k Q_ik · log softmax_k(z_i·c_k/τ)`` (mean over the pixels of all ranks,
    which hold equally many).

    Args:
        pixels: (N, D) student embeddings.
        prototypes: (K, D) learnable prototypes (normalised here).
        codes: (N, K) targets, without gradient.
        temp: τ.
    """
    logits = F.normalize(pixels.float(), dim=1) @ F.normalize(prototypes.float(), dim=1).t()
    return -(codes.detach() * F.log_softmax(logits / temp, dim=1)).sum(dim=1).mean()


@MODELS.register_module()
class PrototypeAssignmentLoss(nn.Module):
    """Each pixel's softmax over learnable prototypes predicts a target assignment (e.g. the
    Sinkhorn-balanced codes of the same pixel from the momentum encoder); the gradient trains
    both the pixel embeddings and the prototypes.

    With unit pixels ``z_i`` (N, D), unit prototypes ``c_k`` (K, D) and codes ``Q`` (N, K),
    rows summing to 1:

    ``L = mean_i −Σ_k Q_ik · log softmax_k(z_i·c_k / τ)`` (:func:`prototype_assignment_loss`).

    Args:
        temp: τ.
    """

    def __init__(self, temp: float = 0.1) -> None:
        super().__init__()
        self.temp = temp

    def forward(self, pixels: Tensor, prototypes: Tensor, codes: Tensor) -> Tensor:
        """pixels (N, D), prototypes (K, D), codes (N, K) without gradient."""
        return prototype_assignment_loss(pixels, prototypes, codes, self.temp)

    def extra_repr(self) -> str:
        return f'temp={self.temp}'
