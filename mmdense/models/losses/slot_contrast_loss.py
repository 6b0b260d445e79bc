"""SlotCon's slot contrast: InfoNCE between the slots of two views."""
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdense.registry import MODELS
from mmdense.utils.dist import concat_all_gather, get_rank
from .precision import fp32_forward
from .reductions import rank_mean


def kept_slots(dots: Tensor) -> Tensor:
    """(B, K, h, w) scores → (B, K) bool: prototype k is the argmax of at least one pixel."""
    batch_size, num_prototypes = dots.shape[:2]
    winners = dots.argmax(dim=1).flatten(1)  # (B, hw)
    kept = torch.zeros(batch_size, num_prototypes, dtype=torch.bool, device=dots.device)
    return kept.scatter_(1, winners, True)


@fp32_forward
def info_nce_sum(queries: Tensor, keys: Tensor, labels: Tensor, temp: float) -> Tensor:
    """``Σ_q CE(normalize(q) · normalize(κ)ᵀ / τ, label_q)`` for queries (N, D), keys (M, D) and
    labels (N,) indexing the keys; in fp32 under autocast (:func:`fp32_forward`), since 1/τ
    multiplies the product's rounding error."""
    logits = F.normalize(queries.float(), dim=1) @ F.normalize(keys.float(), dim=1).t() / temp
    return F.cross_entropy(logits, labels, reduction='sum')


def slot_contrast_loss(student_slots: Tensor,
                       teacher_slots: Tensor,
                       student_dots: Tensor,
                       teacher_dots: Tensor,
                       temp: float,
                       predictor: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """InfoNCE between the slots of one view (student) and of another view (teacher).

    Queries are the slots kept (:func:`kept_slots`) in both the student and the teacher view,
    ``q = normalize(predictor(student_slots[b, k]))``. Keys are the slots kept in the teacher
    view of every image on every rank, ``κ = normalize(teacher_slots[b', k'])``; the positive of
    q is the key of the same image and prototype. With logits ``z = q·κ / τ``:

    ``L = mean_q [ CE(z_q, positive(q)) ] · 2τ``, the mean over the queries of this rank
    (:func:`rank_mean`; 0 if it has none), as in the official code.

    One host synchronisation per call: the numbers of queries and of keys are read together,
    because the predictor's BatchNorm normalises over exactly the kept slots (the number of rows
    is the shape of its input). With those numbers the rows are taken by index
    (``nonzero_static`` of the known size, ``index_select``), so nothing else is read back, in
    the backward pass neither (boolean-mask indexing would read each mask's size again, and its
    gradient once more).

    Args:
        student_slots, teacher_slots: (B, K, D) slots of the two views.
        student_dots, teacher_dots: (B, K, h, w) prototype scores of the same views.
        temp: τ.
        predictor: applied to the (N, D) kept student slots before normalisation.
    """
    batch_size, num_prototypes = student_slots.shape[:2]
    teacher_kept = kept_slots(teacher_dots)
    query_mask = (kept_slots(student_dots) & teacher_kept).flatten()  # (B · K,)
    all_kept = concat_all_gather(teacher_kept).flatten()  # (world · B · K,)
    num_queries, num_keys = torch.stack([query_mask.sum(), all_kept.sum()]).tolist()
    query_rows = torch.nonzero_static(query_mask, size=num_queries).flatten()
    key_rows = torch.nonzero_static(all_kept, size=num_keys).flatten()

    queries = student_slots.flatten(0, 1).index_select(0, query_rows)
    if predictor is not None:
        queries = predictor(queries)
    keys = concat_all_gather(teacher_slots.detach()).flatten(0, 1).index_select(0, key_rows)
    # Index of every (rank, image, prototype) among the kept keys; a query's label is the index
    # of its own (rank, image, prototype).
    key_index = (all_kept.long().cumsum(0) - 1).view(-1, batch_size * num_prototypes)
    labels = key_index[get_rank()].index_select(0, query_rows)

    total = info_nce_sum(queries, keys, labels, temp)
    count = torch.full((), num_queries, dtype=torch.float32, device=total.device)
    return rank_mean(total, count) * (2 * temp)


@MODELS.register_module()
class SlotContrastLoss(nn.Module):
    """SlotCon's slot contrast: each predicted student slot of one view finds the teacher slot of
    the same image and prototype, in another view, among the teacher slots of every image on
    every rank.

    Only slots kept in a view (their prototype wins at least one pixel, :func:`kept_slots`) take
    part: queries ``q = normalize(predictor(s[b,k]))`` for slots kept in both views, keys
    ``κ = normalize(t[b',k'])`` for teacher slots kept in theirs, logits ``z = q·κ / τ``:

    ``L = 2τ · mean_q CE(z_q, index of κ for (b, k))`` over this rank's queries
    (:func:`slot_contrast_loss`).

    Args:
        temp: τ.
    """

    def __init__(self, temp: float = 0.2) -> None:
        super().__init__()
        self.temp = temp

    def forward(self, student_slots: Tensor, teacher_slots: Tensor, student_dots: Tensor,
                teacher_dots: Tensor,
                predictor: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
        """Slots (B, K, D) and prototype scores (B, K, h, w) of the student's and the teacher's
        view; ``predictor`` maps the (N, D) kept student slots."""
        return slot_contrast_loss(student_slots, teacher_slots, student_dots, teacher_dots,
                                  self.temp, predictor)

    def extra_repr(self) -> str:
        return f'temp={self.temp}'
