"""Host synchronisations of one call of SlotCon's slot contrast (forward and backward), three ways
of selecting the kept slots, counted by ``mmdense.utils.count_host_readbacks``:

* ``official pattern``: the selection of the official code (CVMI-Lab/SlotCon,
  ``models/slotcon.py``, ``SlotCon.ctr_loss_filtered``), written anew here: ``nonzero`` of the
  mask of slots kept in both views (queries) and of the gathered mask of teacher slots kept
  (keys), rows taken with those long indices, labels from the cumulative sum of the key mask;
* ``boolean masks``: rows taken by boolean-mask indexing (``slots[mask]``), as mmdense's loss did
  before (three selections, and the gradient of the query selection);
* ``mmdense``: :func:`mmdense.models.losses.slot_contrast_loss` as it is (one read of both
  counts, then ``nonzero_static`` and ``index_select``).

All three give the same loss. Run: ``python benchmarks/slotcon_indexing_syncs.py``.
"""
from collections import Counter

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdense.models.losses import kept_slots, slot_contrast_loss
from mmdense.utils import count_host_readbacks

TEMP = 0.2


def official_pattern(student_slots, teacher_slots, student_dots, teacher_dots, predictor):
    """The official selection: nonzero of the masks, long-index rows, cumsum labels."""
    query_mask = (kept_slots(student_dots) & kept_slots(teacher_dots)).flatten()
    key_mask = kept_slots(teacher_dots).flatten()
    query_rows = query_mask.nonzero().squeeze(-1)
    key_rows = key_mask.nonzero().squeeze(-1)
    queries = F.normalize(predictor(student_slots.flatten(0, 1)[query_rows]), dim=1)
    keys = F.normalize(teacher_slots.detach().flatten(0, 1)[key_rows], dim=1)
    labels = key_mask.long().cumsum(0)[query_rows] - 1
    return F.cross_entropy(queries @ keys.t() / TEMP, labels) * (2 * TEMP)


def boolean_masks(student_slots, teacher_slots, student_dots, teacher_dots, predictor):
    """Rows and labels selected by boolean-mask indexing."""
    both = kept_slots(student_dots) & kept_slots(teacher_dots)
    key_mask = kept_slots(teacher_dots)
    queries = F.normalize(predictor(student_slots[both]), dim=1)
    keys = F.normalize(teacher_slots.detach()[key_mask], dim=1)
    labels = (key_mask.flatten().long().cumsum(0) - 1)[both.flatten()]
    return F.cross_entropy(queries @ keys.t() / TEMP, labels) * (2 * TEMP)


def mmdense(student_slots, teacher_slots, student_dots, teacher_dots, predictor):
    return slot_contrast_loss(student_slots, teacher_slots, student_dots, teacher_dots, TEMP,
                              predictor)


def main():
    torch.manual_seed(0)
    # 8 images, 16 prototypes, 4 x 4 score maps: about half the prototypes win a pixel
    student_slots, teacher_slots = torch.randn(2, 8, 16, 32).unbind(0)
    student_dots, teacher_dots = torch.randn(2, 8, 16, 4, 4).unbind(0)
    predictor = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.GELU(),
                              nn.Linear(64, 32))
    print('| selection | loss | host syncs per call (forward + backward) |')
    print('|---|---|---|')
    for loss_fn in (official_pattern, boolean_masks, mmdense):
        slots = student_slots.clone().requires_grad_()
        with count_host_readbacks() as syncs:
            loss = loss_fn(slots, teacher_slots, student_dots, teacher_dots, predictor)
            loss.backward()
        kinds = Counter()
        for site, n in syncs.items():
            kinds[site.what] += n
        where = ', '.join(f'{n} {what}' for what, n in kinds.items())
        print(f'| {loss_fn.__name__.replace("_", " ")} | {loss.item():.6f} | '
              f'{sum(syncs.values())} ({where}) |')


if __name__ == '__main__':
    main()
