"""The losses that no longer make a GPU step wait for the host compute what they computed before:
SlotCon's slot contrast (one read of the numbers of kept slots instead of boolean-mask indexing,
forward and backward) and CoTAP's patch loss (pairs that overlap nowhere weighted out on the
device instead of skipped after a read)."""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import tiny_cotap
from mmdense.models.losses import slot_contrast_loss
from mmdense.utils import count_host_readbacks


def slot_contrast_by_masks(student_slots, teacher_slots, student_dots, teacher_dots, temp,
                           predictor):
    """The slot contrast written with boolean masks, the way the official SlotCon code selects
    slots: a prototype is kept in a view when it is the argmax of some pixel (one-hot counts
    here); queries are the student slots kept in both views, keys the teacher slots kept in the
    teacher view, and a query's label is the number of kept keys before its own."""
    num_prototypes = student_dots.shape[1]

    def kept(dots):
        return F.one_hot(dots.argmax(1), num_prototypes).sum((1, 2)) > 0  # (B, K)

    both, key_mask = kept(student_dots) & kept(teacher_dots), kept(teacher_dots)
    queries = F.normalize(predictor(student_slots[both]), dim=1)
    keys = F.normalize(teacher_slots.detach()[key_mask], dim=1)
    labels = (key_mask.flatten().long().cumsum(0) - 1)[both.flatten()]
    total = F.cross_entropy(queries @ keys.t() / temp, labels, reduction='sum')
    return total / max(len(labels), 1) * (2 * temp)


def slot_inputs(seed):
    """Slots (B=3, K=6, D=8) and prototype scores (3, 6, 2, 2): at most 4 of the 6 prototypes of
    an image win a pixel, so the kept sets differ between images and views."""
    generator = torch.Generator().manual_seed(seed)
    slots = [torch.randn(3, 6, 8, generator=generator) for _ in range(2)]
    dots = [torch.randn(3, 6, 2, 2, generator=generator) for _ in range(2)]
    return slots, dots


def test_slot_contrast_equals_the_mask_indexed_loss_with_one_host_read():
    for seed in range(5):
        (student, teacher), (student_dots, teacher_dots) = slot_inputs(seed)
        torch.manual_seed(seed)
        predictor = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.GELU(),
                                  nn.Linear(16, 8))
        reference_predictor = copy.deepcopy(predictor)
        student = student.requires_grad_()
        reference_student = student.detach().clone().requires_grad_()

        with count_host_readbacks() as syncs:
            loss = slot_contrast_loss(student, teacher, student_dots, teacher_dots, 0.2,
                                      predictor)
            loss.backward()
        expected = slot_contrast_by_masks(reference_student, teacher, student_dots,
                                          teacher_dots, 0.2, reference_predictor)
        expected.backward()

        assert torch.equal(loss, expected), (seed, loss, expected)
        assert torch.equal(student.grad, reference_student.grad)
        for param, reference in zip(predictor.parameters(), reference_predictor.parameters()):
            assert torch.equal(param.grad, reference.grad)
        # forward and backward: one read of the numbers of queries and keys, nothing else
        assert [(site.what, site.function, n) for site, n in syncs.items()] == [
            ('tolist', 'slot_contrast_loss', 1)], syncs


def test_cotap_patch_loss_weights_out_a_pair_that_overlaps_nowhere_without_a_host_read():
    model = tiny_cotap()
    # one teacher global view over the left half of a 128 px image; student views 0 and 1 on
    # the same box, view 2 in the bottom-right corner: it overlaps the teacher view nowhere
    boxes = torch.tensor([[[0, 0, 64, 64], [0, 0, 64, 64], [96, 96, 128, 128]]],
                         dtype=torch.float32)
    flips = torch.tensor([[False, False, False]])
    logits = torch.randn(1, 16, 4, 4)
    teacher = [dict(patch=logits)]
    student = [dict(patch=(logits * scale).requires_grad_()) for scale in (2.0, 3.0, 1.0)]
    with count_host_readbacks() as syncs:
        loss = model.patch_loss(student, teacher, boxes, flips, boxes[:, :1], flips[:, :1])
    assert not syncs, syncs

    # the mean over the two pairs that overlap: (teacher 0, student 0) and (teacher 0, student 1),
    # each a plain per-pixel cross-entropy on identical boxes
    codes = model.loss_distill.codes(logits, dim=1)
    student_temp = model.loss_distill.student_temp
    expected = sum(-(codes * F.log_softmax(logits * scale / student_temp, 1)).sum(1).mean()
                   for scale in (2.0, 3.0)) / 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(student[2]['patch'].grad).all()
    assert not student[2]['patch'].grad.any()  # the pair that overlaps nowhere is weighted out
