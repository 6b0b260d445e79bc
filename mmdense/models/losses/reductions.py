"""How a loss summed over this rank's terms becomes a mean, when ranks hold different numbers of
terms (valid pixels, kept slots, queries with a positive). DDP averages the gradients over ranks,
so the choice of the divisor decides how each rank's terms are weighted."""
from torch import Tensor

from mmdense.utils.dist import all_reduce_sum, get_world_size


def global_mean(total: Tensor, count: Tensor) -> Tensor:
    """``total`` divided by the mean over ranks of ``count``: averaging this over ranks (as DDP
    does with gradients) gives the sum of all totals over the sum of all counts."""
    mean_count = all_reduce_sum(count.float()) / get_world_size()
    return total / mean_count.clamp(min=1.0)


def rank_mean(total: Tensor, count: Tensor) -> Tensor:
    """``total / count`` on this rank (0 when ``count`` is 0). DDP averages the gradients over
    ranks, so the loss trained is the mean over ranks of each rank's mean, as in the official
    SlotCon code: ranks with fewer terms give each of them more weight."""
    return total / count.float().clamp(min=1.0)
