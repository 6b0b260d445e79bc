"""MoCo's InfoNCE against a queue of negatives (DSC's instance contrast)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdense.registry import MODELS
from .precision import fp32_forward


@fp32_forward
def info_nce_with_queue(queries: Tensor, keys: Tensor, queue: Tensor, temp: float) -> Tensor:
    """MoCo InfoNCE: each query's positive is its own key, the negatives are the queue.

    With unit vectors ``q_b``, ``k_b`` and queue entries ``n_m``:
    ``L = mean_b −log( exp(q_b·k_b/τ) / (exp(q_b·k_b/τ) + Σ_m exp(q_b·n_m/τ)) )``.

    Args:
        queries: (B, D) embeddings (normalised here).
        keys: (B, D) embeddings of the other view, without gradient (normalised here).
        queue: (L, D) unit negatives.
        temp: τ.
    """
    queries = F.normalize(queries.float(), dim=1)
    keys = F.normalize(keys.detach().float(), dim=1)
    positive = (queries * keys).sum(dim=1, keepdim=True)
    negatives = queries @ queue.detach().float().t()
    logits = torch.cat([positive, negatives], dim=1) / temp
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long,
                                               device=logits.device))


@MODELS.register_module()
class InfoNCEWithQueueLoss(nn.Module):
    """MoCo's InfoNCE: a query's positive is the key of the same image from the other view, its
    negatives the entries of a queue of earlier keys (which the algorithm owns and fills).

    With unit queries ``q_b`` (B, D), keys ``k_b`` (B, D) and queue entries ``n_m`` (L, D):
    ``L = mean_b −log( exp(q_b·k_b/τ) / (exp(q_b·k_b/τ) + Σ_m exp(q_b·n_m/τ)) )``
    (:func:`info_nce_with_queue`).

    Args:
        temp: τ.
    """

    def __init__(self, temp: float = 0.2) -> None:
        super().__init__()
        self.temp = temp

    def forward(self, queries: Tensor, keys: Tensor, queue: Tensor) -> Tensor:
        """queries (B, D), keys (B, D) without gradient, queue (L, D) unit negatives."""
        return info_nce_with_queue(queries, keys, queue, self.temp)

    def extra_repr(self) -> str:
        return f'temp={self.temp}'
