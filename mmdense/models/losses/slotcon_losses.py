"""SlotCon losses: pixel-wise self-distillation of prototype scores and slot contrast."""
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdense.utils.dist import all_reduce_sum, concat_all_gather, get_rank, get_world_size


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


def group_loss(student_dots: Tensor,
               teacher_dots: Tensor,
               center: Tensor,
               student_temp: float,
               teacher_temp: float,
               valid: Optional[Tensor] = None) -> Tensor:
    """Per-pixel cross-entropy between centred teacher and student prototype scores.

    ``L = mean_{b valid, h, w} [ -Σ_k softmax_k((t[b,:,h,w] - c) / τ_t) ·
    log_softmax_k(s[b,:,h,w] / τ_s) ]``

    Args:
        student_dots, teacher_dots: (B, K, h, w) score maps of the same image region (aligned).
        center: (1, K) centre c subtracted from the teacher scores.
        student_temp, teacher_temp: τ_s, τ_t.
        valid: optional (B,) bool; samples marked False are left out. The mean is taken over the
            valid pixels of this rank (see :func:`rank_mean`).
    """
    targets = F.softmax((teacher_dots.detach().float() - center[..., None, None]) / teacher_temp,
                        dim=1)
    log_probs = F.log_softmax(student_dots.float() / student_temp, dim=1)
    pixel_losses = -(targets * log_probs).sum(dim=1)  # (B, h, w)
    if valid is None:
        valid = torch.ones(pixel_losses.shape[0], dtype=torch.bool, device=pixel_losses.device)
    weights = valid.to(pixel_losses.dtype)[:, None, None].expand_as(pixel_losses)
    return rank_mean((pixel_losses * weights).sum(), weights.sum())


def kept_slots(dots: Tensor) -> Tensor:
    """(B, K, h, w) scores → (B, K) bool: prototype k is the argmax of at least one pixel."""
    batch_size, num_prototypes = dots.shape[:2]
    winners = dots.argmax(dim=1).flatten(1)  # (B, hw)
    kept = torch.zeros(batch_size, num_prototypes, dtype=torch.bool, device=dots.device)
    return kept.scatter_(1, winners, True)


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

    Args:
        student_slots, teacher_slots: (B, K, D) slots of the two views.
        student_dots, teacher_dots: (B, K, h, w) prototype scores of the same views.
        temp: τ.
        predictor: applied to the (N, D) kept student slots before normalisation.
    """
    batch_size, num_prototypes = student_slots.shape[:2]
    teacher_kept = kept_slots(teacher_dots)
    query_mask = kept_slots(student_dots) & teacher_kept
    queries = student_slots[query_mask]
    if predictor is not None:
        queries = predictor(queries)
    queries = F.normalize(queries.float(), dim=1)

    all_kept = concat_all_gather(teacher_kept).flatten()  # (world · B · K,)
    all_keys = concat_all_gather(teacher_slots.detach()).flatten(0, 1)[all_kept]
    keys = F.normalize(all_keys.float(), dim=1)
    # Index of every (rank, image, prototype) among the kept keys; a query's label is the index
    # of its own (rank, image, prototype).
    key_index = (all_kept.long().cumsum(0) - 1).view(-1, batch_size * num_prototypes)
    labels = key_index[get_rank()][query_mask.flatten()]

    logits = queries @ keys.t() / temp
    total = F.cross_entropy(logits, labels, reduction='sum')
    return rank_mean(total, torch.tensor(len(labels), device=logits.device)) * (2 * temp)
