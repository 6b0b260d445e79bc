import math

import torch
import torch.distributed as dist
from torch import Tensor

from mmdense.utils.dist import all_reduce_sum, is_distributed


def _logsumexp_over_all_samples(log_q: Tensor) -> Tensor:
    """log Σ_b exp(log_q[b, k]) over the samples of every rank, per prototype: (1, K)."""
    column_max = log_q.max(dim=0, keepdim=True).values
    if is_distributed():
        dist.all_reduce(column_max, op=dist.ReduceOp.MAX)
    column_max = torch.where(torch.isfinite(column_max), column_max,
                             torch.zeros_like(column_max))
    return column_max + all_reduce_sum(torch.exp(log_q - column_max).sum(0, keepdim=True)).log()


@torch.no_grad()
def sinkhorn_knopp(logits: Tensor, epsilon: float = 0.05, num_iters: int = 3) -> Tensor:
    """Balanced soft assignment of samples to prototypes (Sinkhorn-Knopp), across all ranks.

    With ``logits`` of shape (B, K) on each rank (B_total samples over all ranks),
    ``Q = exp(logits / epsilon)`` is alternately rescaled so that every prototype (column) holds
    ``B_total / K`` of the mass and every sample (row) holds 1. Returns Q (B, K): rows sum to 1,
    columns sum (over all ranks) to ``B_total / K`` after enough iterations. Computed in the log
    domain (no overflow or underflow for large ``logits / epsilon``); the result for a sample
    does not depend on how the batch is split over ranks.
    """
    log_q = logits.detach().float() / epsilon
    log_prototype_share = -math.log(log_q.shape[1])
    for _ in range(num_iters):
        log_q = log_q - _logsumexp_over_all_samples(log_q) + log_prototype_share
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)
    return torch.exp(log_q)
