"""SlotCon's own segmentation, scored: its teacher's prototype assignment against the labels.

Each feature cell takes its best prototype (``argmax_k <normalise(z_ij), normalise(p_k)>``); the
prototype maps are upsampled to the label size and their prototypes become classes in two ways:

* one-to-one (``'hungarian'``): the Hungarian matching on the val images' class×prototype pixel
  counts; with ``K`` prototypes for ``C < K`` classes the ``K - C`` unmatched ones count as wrong;
* many-to-one (``'majority'``): each prototype takes the class most of its pixels have on the
  *train* images, as over-clustering protocols map clusters; a prototype no train pixel took
  counts as wrong. Several prototypes may share a class (background split by texture, say).
"""
from typing import Dict

import torch
from torch import Tensor, nn

from .features import model_inputs
from .metrics import confusion_matrix, scores_from_confusion
from .protocols import cluster_scores, upsample_labels

PROTOTYPE_MATCHINGS = ('hungarian', 'majority')


@torch.no_grad()
def prototype_assignment(model: nn.Module, images: Tensor, *, channel_order: str,
                         batch_size: int = 16) -> Tensor:
    """Best prototype ``(N, h, w)`` of the SlotCon teacher for 0-255 ``images (N, 3, S, S)``
    whose channels are in ``channel_order`` (:func:`~mmdense.evaluation.model_inputs`): the
    teacher's backbone → projector → prototype scores (``SlotCon.encode_view``), argmax over
    the prototypes; on CPU."""
    device = next(model.parameters()).device
    winners = []
    for batch in images.split(batch_size):
        inputs = model_inputs(model, batch.to(device), channel_order=channel_order)
        _, dots = model.encode_view(model.teacher, inputs)
        winners.append(dots.argmax(1).cpu())
    return torch.cat(winners)


def prototype_label_counts(model: nn.Module, split: dict, num_classes: int,
                           ignore_index: int = 255, *, channel_order: str) -> Tensor:
    """Class×prototype pixel counts ``(C, K)`` over ``split`` (``images``, ``labels (N, H, W)``):
    the prototype maps upsampled (nearest) to the labels; ``ignore_index`` pixels skipped."""
    assignment = prototype_assignment(model, split['images'], channel_order=channel_order)
    assignment = upsample_labels(assignment, split['labels'].shape[-2:])
    counts, _ = confusion_matrix(assignment, split['labels'], model.head.num_prototypes,
                                 num_classes, ignore_index)
    return counts


def majority_mapping(counts: Tensor) -> Tensor:
    """Class of each prototype from class×prototype counts ``(C, K)``: its most frequent class,
    ``-1`` for a prototype with no pixel."""
    return torch.where(counts.sum(0) > 0, counts.argmax(0), -1)


def prototype_scores(model: nn.Module, train: dict, val: dict, num_classes: int,
                     ignore_index: int = 255, *,
                     channel_order: str) -> Dict[str, Dict[str, float]]:
    """``{'hungarian': {'mIoU', 'pAcc'}, 'majority': {...}}`` of the prototype assignment on the
    val images (see the module docstring: Hungarian matching on val, majority label per prototype
    over ``train``)."""
    common = dict(num_classes=num_classes, ignore_index=ignore_index,
                  channel_order=channel_order)
    val_counts = prototype_label_counts(model, val, **common)
    mapping = majority_mapping(prototype_label_counts(model, train, **common))
    # class×class counts of the val pixels mapped through their prototype; column C collects
    # the pixels of prototypes without a class (-1 % (C + 1) = C), counted as missed
    mapped = torch.zeros(num_classes, num_classes + 1, dtype=val_counts.dtype).index_add_(
        1, mapping % (num_classes + 1), val_counts)
    return dict(hungarian=cluster_scores(val_counts, 'hungarian'),
                majority=scores_from_confusion(mapped[:, :num_classes], mapped[:, num_classes]))
