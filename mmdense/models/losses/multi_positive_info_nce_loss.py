"""InfoNCE with a set of positives per query (DSC's pixel and semantic contrasts)."""
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdense.registry import MODELS
from .precision import fp32_forward
from .reductions import global_mean


@fp32_forward
def multi_positive_info_nce(queries: Tensor, keys: Tensor, positive_mask: Tensor,
                            temp: float) -> Tensor:
    """InfoNCE with a set of positives per query (the supervised-contrastive "outside" form).

    With unit vectors ``q_i``, ``k_j``, logits ``z_ij = q_i·k_j/τ`` and positives ``P(i)``:
    ``L = mean_{i: P(i)≠∅} −1/|P(i)| Σ_{p∈P(i)} log( exp(z_ip) / Σ_j exp(z_ij) )``,
    the mean taken over the queries of all ranks (:func:`global_mean`); queries without a
    positive are left out.

    Args:
        queries: (N, D) embeddings (normalised here).
        keys: (M, D) embeddings, without gradient (normalised here).
        positive_mask: (N, M) bool, ``positive_mask[i, j]`` iff key j is a positive of query i.
        temp: τ.
    """
    queries = F.normalize(queries.float(), dim=1)
    keys = F.normalize(keys.detach().float(), dim=1)
    log_probs = F.log_softmax(queries @ keys.t() / temp, dim=1)
    positive_mask = positive_mask.to(log_probs.dtype)
    num_positives = positive_mask.sum(dim=1)
    has_positive = num_positives > 0
    per_query = -(log_probs * positive_mask).sum(dim=1) / num_positives.clamp(min=1)
    # (a where, not per_query[has_positive]: a mask index reads its size back on a GPU)
    return global_mean(per_query.where(has_positive, 0).sum(), has_positive.sum())


@MODELS.register_module()
class MultiPositiveInfoNCELoss(nn.Module):
    """InfoNCE in which each query has a set of positive keys; every other key is a negative.

    With unit queries ``q_i`` (N, D), unit keys ``k_j`` (M, D), logits ``z_ij = q_i·k_j/τ`` and
    the positives ``P(i) = {j : positive_mask[i, j]}``:

    ``L = mean_{i: P(i)≠∅} −1/|P(i)| Σ_{p∈P(i)} log( exp(z_ip) / Σ_j exp(z_ij) )``

    over the queries of all ranks (:func:`multi_positive_info_nce`). DSC uses it twice, with its
    own τ each: positives by location (pixel contrast) and by pseudo-class (semantic contrast).

    Args:
        temp: τ.
    """

    def __init__(self, temp: float = 0.2) -> None:
        super().__init__()
        self.temp = temp

    def forward(self, queries: Tensor, keys: Tensor, positive_mask: Tensor) -> Tensor:
        """queries (N, D), keys (M, D) without gradient, positive_mask (N, M) bool."""
        return multi_positive_info_nce(queries, keys, positive_mask, self.temp)

    def extra_repr(self) -> str:
        return f'temp={self.temp}'
