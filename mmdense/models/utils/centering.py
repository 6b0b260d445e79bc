import torch
from torch import Tensor

from mmdense.utils.dist import all_reduce_sum


@torch.no_grad()
def update_center_(center: Tensor, outputs: Tensor, momentum: float) -> Tensor:
    """In place ``c ← m·c + (1 − m)·mean(outputs)``: the mean of the (N, K) teacher outputs over
    their rows on all ranks (weighted by each rank's N), as used to centre DINO-style targets."""
    outputs = outputs.detach().float()
    total = all_reduce_sum(outputs.sum(dim=0, keepdim=True))
    count = all_reduce_sum(outputs.new_full((), outputs.shape[0]))  # (no host-to-device copy)
    return center.mul_(momentum).add_(total / count, alpha=1 - momentum)
