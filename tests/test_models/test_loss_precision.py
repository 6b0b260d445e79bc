"""Losses and temperature-scaled logits in fp32 under autocast (mmdense.models.losses.precision).

Under CPU bf16 autocast (CUDA autocast casts the same matmuls and einsums), every loss module,
the DINO head's prototype logits, SlotCon's prototype scores and CoTAP's ranking similarities
return fp32 equal, to fp32 tolerance, to what they compute without autocast from the same
inputs upcast to fp32; before, their products were bf16 (relative error ~2^-8, times 1/τ).
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from mmdense.models.heads import DINOHead
from mmdense.models.losses import (ContinuousAPLoss, DINOLoss, InfoNCEWithQueueLoss,
                                   MultiPositiveInfoNCELoss, PrototypeAssignmentLoss,
                                   SinkhornCrossEntropyLoss, SlotConGroupLoss, SlotContrastLoss,
                                   feature_neighbours, fp32_forward, similarity_lists)
from mmdense.models.losses.precision import fp32_forward_enabled
from mmdense.registry import MODELS


def bf16(*shape, unit_rows=False):
    """A random bf16 tensor as autocast hands it on (rows of unit length if asked)."""
    x = torch.randn(*shape)
    return (F.normalize(x, dim=-1) if unit_rows else x).bfloat16()


def dino_loss_case():
    loss = DINOLoss(out_channels=64, student_temp=0.1)
    loss.center.normal_(std=0.1)
    return loss, (bf16(4, 3, 64), bf16(2, 3, 64), 0.04)


def slotcon_group_case():
    loss = SlotConGroupLoss(num_prototypes=8)
    loss.center.normal_(std=0.1)
    return loss, (bf16(2, 8, 4, 4), bf16(2, 8, 4, 4), torch.tensor([True, False]))


def slot_contrast_case():
    return SlotContrastLoss(temp=0.2), (bf16(2, 6, 16), bf16(2, 6, 16), bf16(2, 6, 3, 3),
                                        bf16(2, 6, 3, 3))


def cotap_case():
    similarities = torch.rand(2, 5, 12) * 2 - 1
    return ContinuousAPLoss(margin=0.1), (
        (similarities + 0.1 * torch.randn(2, 5, 12)).clamp(-1, 1).bfloat16(),
        similarities.bfloat16(), torch.rand(2, 5, 12))


def sinkhorn_case():
    return SinkhornCrossEntropyLoss(student_temp=0.1), (bf16(3, 4, 16), bf16(2, 4, 16))


def info_nce_case():
    return InfoNCEWithQueueLoss(temp=0.2), (bf16(4, 16), bf16(4, 16),
                                            F.normalize(torch.randn(32, 16), dim=1))


def multi_positive_case():
    return MultiPositiveInfoNCELoss(temp=0.2), (bf16(12, 16), bf16(12, 16),
                                                torch.rand(12, 12) < 0.3)


def prototype_case():
    codes = torch.softmax(torch.randn(10, 6), dim=1)
    return PrototypeAssignmentLoss(temp=0.1), (bf16(10, 16), torch.randn(6, 16), codes)


LOSS_CASES = dict(DINOLoss=dino_loss_case, SlotConGroupLoss=slotcon_group_case,
                  SlotContrastLoss=slot_contrast_case,
                  ContinuousAPLoss=cotap_case, SinkhornCrossEntropyLoss=sinkhorn_case,
                  InfoNCEWithQueueLoss=info_nce_case,
                  MultiPositiveInfoNCELoss=multi_positive_case,
                  PrototypeAssignmentLoss=prototype_case)


def upcast(args):
    return [a.float() if torch.is_tensor(a) and a.dtype == torch.bfloat16 else a for a in args]


@pytest.mark.parametrize('name', LOSS_CASES)
def test_loss_under_bf16_autocast_is_the_fp32_loss_of_the_upcast_inputs(name):
    torch.manual_seed(0)
    loss, args = LOSS_CASES[name]()
    fp32_loss = copy.deepcopy(loss)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = loss(*args)
    expected = fp32_loss(*upcast(args))
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)
    for (key, buffer), fp32_buffer in zip(loss.named_buffers(), fp32_loss.buffers()):
        torch.testing.assert_close(buffer, fp32_buffer, rtol=1e-6, atol=1e-7, msg=key)


def test_gradient_reaches_the_bf16_inputs():
    """The fp32 region is differentiable back to the bf16 tensors autocast produced."""
    torch.manual_seed(0)
    student = bf16(4, 3, 64).requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        DINOLoss(out_channels=64)(student, bf16(2, 3, 64), 0.04).backward()
    assert student.grad.dtype == torch.bfloat16 and student.grad.abs().sum() > 0


def test_dino_head_prototype_logits_are_fp32_under_autocast():
    """The MLP runs in bf16; the normalised bottleneck times the unit prototypes in fp32."""
    torch.manual_seed(0)
    head = DINOHead(in_channels=16, out_channels=32, hidden_channels=24, bottleneck_channels=8)
    head.init_weights()
    x = torch.randn(5, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        bottleneck = head.mlp(x)
        logits = head(x)
    assert bottleneck.dtype == torch.bfloat16 and logits.dtype == torch.float32
    prototypes = head.last_layer.weight_v / head.last_layer.weight_v.norm(dim=1, keepdim=True)
    unit = bottleneck.float() / bottleneck.float().norm(dim=1, keepdim=True)
    torch.testing.assert_close(logits, unit @ prototypes.t(), rtol=1e-6, atol=1e-6)


def test_semantic_grouping_scores_and_slots_are_fp32_under_autocast():
    torch.manual_seed(0)
    grouping = MODELS.build(dict(type='SemanticGrouping', num_prototypes=6, dim=8, temp=0.07))
    x = bf16(2, 8, 3, 3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        slots, dots = grouping(x)
    pixels = x.float().flatten(2)  # (B, C, HW)
    prototypes = grouping.prototypes.weight
    prototypes = prototypes / prototypes.norm(dim=1, keepdim=True)
    scores = torch.stack([prototypes @ (p / p.norm(dim=0, keepdim=True)) for p in pixels])
    attention = torch.softmax(scores / 0.07, dim=1) + 1e-6
    expected_slots = attention @ pixels.transpose(1, 2) / attention.sum(2, keepdim=True)
    assert dots.dtype == slots.dtype == torch.float32
    torch.testing.assert_close(dots.flatten(2), scores, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(slots, expected_slots, rtol=1e-5, atol=1e-6)


def test_cotap_ranking_similarities_are_fp32_under_autocast():
    torch.manual_seed(0)
    anchors, partner, negative = bf16(2, 3, 16, unit_rows=True), bf16(2, 3, 16, unit_rows=True), \
        bf16(2, 3, 16, unit_rows=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        lists = similarity_lists(anchors, [partner, negative])
    expected = torch.einsum('bik,bjk->bij', anchors.float(),
                            torch.cat([partner, negative], 1).float())
    assert lists.dtype == torch.float32
    torch.testing.assert_close(lists, expected, rtol=1e-6, atol=1e-6)


def test_dsc_feature_neighbours_are_chosen_in_fp32_under_autocast():
    """Cosines 0.69867 and 0.70010 (hand-computed: c / sqrt(c² + 1)) both round to the bf16
    value 0.69922: a bf16 product would tie them, fp32 picks the second."""
    pixel = torch.tensor([[[1.0, 0.0]]]).bfloat16()
    candidates = torch.tensor([[[0.9765625, 1.0], [0.98046875, 1.0], [-1.0, 1.0]]]).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        nearest = feature_neighbours(pixel, candidates, 1)
    assert nearest.tolist() == [[[False, True, False]]]


# ------------------------------------------------------------------------ fp32_forward itself
def test_fp32_forward_outside_autocast_passes_the_arguments_through_untouched():
    seen = []
    record = fp32_forward(lambda *args, **kwargs: seen.append((args, kwargs)))
    half, pair = torch.ones(2, dtype=torch.bfloat16), [torch.ones(1, dtype=torch.float16)]
    record(half, pair, scale=half)
    (args, kwargs), = seen
    assert args[0] is half and args[1][0] is pair[0] and kwargs['scale'] is half


def test_fp32_forward_upcasts_nested_arguments_and_turns_autocast_off():
    seen = {}

    @fp32_forward
    def record(views, table, exact):
        seen.update(views=[v.dtype for v in views], table=table['x'].dtype, exact=exact.dtype,
                    autocast=torch.is_autocast_enabled('cpu'),
                    product=(views[0] @ views[0].t()).dtype)

    with torch.autocast('cpu', dtype=torch.bfloat16):
        record((torch.ones(2, 2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float16)),
               dict(x=torch.ones(1, dtype=torch.bfloat16)), torch.ones(1, dtype=torch.float64))
        assert torch.is_autocast_enabled('cpu')  # on again after the call
    assert seen == dict(views=[torch.float32, torch.float32], table=torch.float32,
                        exact=torch.float64, autocast=False, product=torch.float32)


def test_fp32_forward_can_be_switched_off_to_measure_what_it_changes():
    loss, args = info_nce_case()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with fp32_forward_enabled(False):
            low = loss(*args)
        high = loss(*args)
    expected = loss(*upcast(args))
    assert torch.equal(high, expected)
    assert not torch.allclose(low, expected, rtol=1e-5, atol=1e-6)
