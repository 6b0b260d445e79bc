import torch
import torch.distributed as dist
from torch import Tensor

from mmdense.utils.dist import all_reduce_sum, is_distributed


@torch.no_grad()
def sinkhorn_knopp(logits: Tensor, epsilon: float = 0.05, num_iters: int = 3) -> Tensor:
    """Balanced soft assignment of samples to prototypes (Sinkhorn-Knopp), across all ranks.

    With ``logits`` of shape (B, K) on each rank (B_total samples over all ranks),
    ``Q = exp(logits / epsilon)`` is alternately rescaled so that every prototype (column) holds
    ``B_total / K`` of the mass and every sample (row) holds 1. Returns Q (B, K): rows sum to 1,
    columns sum (over all ranks) to ``B_total / K`` after the last iteration.
    The result for a sample does not depend on how the batch is split over ranks.
    """
    scores = logits.detach().float() / epsilon
    global_max = scores.max()
    if is_distributed():
        dist.all_reduce(global_max, op=dist.ReduceOp.MAX)
    q = torch.exp(scores - global_max)
    num_samples = all_reduce_sum(torch.tensor(float(q.shape[0]), device=q.device))
    num_prototypes = q.shape[1]
    q = q / all_reduce_sum(q.sum())
    for _ in range(num_iters):
        q = q / (all_reduce_sum(q.sum(dim=0, keepdim=True)) * num_prototypes)
        q = q / (q.sum(dim=1, keepdim=True) * num_samples)
    return q * num_samples
