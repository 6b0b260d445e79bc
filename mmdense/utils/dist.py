"""Distributed helpers that reduce to the identity in a single process."""
import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks (out of place, no gradient)."""
    tensor = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_rank0(tensor: Tensor) -> Tensor:
    """``tensor`` overwritten in place with rank 0's copy (same shape on every rank), e.g. to
    share a random draw; returned for chaining."""
    if is_distributed():
        dist.broadcast(tensor, src=0)
    return tensor


@torch.no_grad()
def concat_all_gather(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (same shape on every rank) from all ranks along dim 0, in rank
    order, without gradient."""
    if not is_distributed():
        return tensor.detach()
    gathered = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sends every rank the gradient of its own slice, summed over
    the ranks that used it (DDP then averages, giving the single-process gradient)."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        ctx.batch_size = tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:
        grad_output = grad_output.contiguous()
        dist.all_reduce(grad_output, op=dist.ReduceOp.SUM)
        start = get_rank() * ctx.batch_size
        return grad_output[start:start + ctx.batch_size]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0 keeping the autograd graph."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)
