"""SlotCon's own segmentation, scored: its teacher's prototype assignment against the labels.

Each feature cell takes its best prototype (``argmax_k <normalise(z_ij), normalise(p_k)>``); the
prototype score maps of a split go into a :class:`~.feature_store.MemoryFeatureStore` and
:class:`~.protocols.PrototypeAssignment` scores them one-to-one (Hungarian on val) and
many-to-one (each prototype's majority class on train).
"""
from typing import Dict

import torch
from torch import Tensor, nn

from .feature_store import MemoryFeatureStore
from .features import model_inputs
from .protocols import PrototypeAssignment


@torch.no_grad()
def prototype_dots(model: nn.Module, images: Tensor, *, channel_order: str,
                   branch: str = 'teacher', batch_size: int = 16) -> Tensor:
    """SlotCon's prototype scores ``(N, K, h, w)`` for 0-255 ``images (N, 3, S, S)`` whose
    channels are in ``channel_order`` (:func:`~mmdense.evaluation.model_inputs`): the
    ``branch``'s (``'teacher'`` or ``'student'``) backbone → projector → prototype scores
    (``SlotCon.encode_view``), on CPU."""
    if branch not in ('teacher', 'student'):
        raise ValueError(f"branch must be 'teacher' or 'student', got {branch!r}")
    modules = model.teacher if branch == 'teacher' else model.student_modules()
    device = next(model.parameters()).device
    dots = []
    for batch in images.split(batch_size):
        inputs = model_inputs(model, batch.to(device), channel_order=channel_order)
        dots.append(model.encode_view(modules, inputs)[1].float().cpu())
    return torch.cat(dots)


def prototype_assignment(model: nn.Module, images: Tensor, *, channel_order: str,
                         batch_size: int = 16) -> Tensor:
    """Best prototype ``(N, h, w)`` of the SlotCon teacher for ``images``
    (:func:`prototype_dots`, argmax over the prototypes)."""
    return prototype_dots(model, images, channel_order=channel_order,
                          batch_size=batch_size).argmax(1)


def prototype_score_store(model: nn.Module, split: dict, *,
                          channel_order: str) -> MemoryFeatureStore:
    """A RAM store of ``split``'s (``images``, ``labels (N, H, W)``) teacher prototype scores,
    the input of :class:`~.protocols.PrototypeAssignment`."""
    return MemoryFeatureStore.from_tensors(
        prototype_dots(model, split['images'], channel_order=channel_order), split['labels'])


def prototype_scores(model: nn.Module, train: dict, val: dict, num_classes: int,
                     ignore_index: int = 255, *,
                     channel_order: str) -> Dict[str, Dict[str, float]]:
    """``{'hungarian': {'mIoU', 'pAcc'}, 'majority': {...}}`` of the prototype assignment on the
    val images (:class:`~.protocols.PrototypeAssignment`: Hungarian matching on val, majority
    label per prototype over ``train``)."""
    stores = [prototype_score_store(model, split, channel_order=channel_order)
              for split in (train, val)]
    return {matching: PrototypeAssignment(matching).evaluate(*stores, num_classes, ignore_index,
                                                             device='cpu')
            for matching in ('hungarian', 'majority')}
