"""SlotCon under 2 CPU processes (gloo): each rank's losses are the means over its own pixels and
queries (keys gathered from all ranks), as in the official code, so the DDP-averaged gradient is
that of the mean over ranks of the per-rank losses, here computed by hand in one process.

BatchNorm runs in eval mode: in training mode each process would normalise with its own
half-batch statistics (SyncBN, which removes that difference, needs CUDA), so the comparison
would test BN rather than SlotCon. Everything else — kept-slot masks, keys gathered from all
ranks, labels offset by rank, per-rank loss normalisation, the all-reduced centre and prototype
count — is exercised. The batch gives the ranks different numbers of valid overlaps and of slot
queries, so per-rank and global normalisation disagree (checked).
"""
import pytest
import torch
import torch.nn.functional as F
from distributed import assert_averaged_gradients_match, run_on_ranks
from mmpretrain.structures import DataSample
from helpers import tiny_slotcon

from mmdense.models.losses import kept_slots

WORLD_SIZE = 2
BATCH = 4
PER_RANK = BATCH // WORLD_SIZE


def make_batch():
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(BATCH, 3, 96, 96, generator=g) for _ in range(2)]
    x1 = torch.randint(0, 40, (BATCH, 2), generator=g).float()
    boxes = torch.cat([x1, x1 + 60], dim=-1).view(BATCH, 1, 4).expand(BATCH, 2, 4).clone()
    boxes[:, 1] += torch.tensor([10., 5., 10., 5.])
    boxes[-1, 1] = torch.tensor([200., 200., 240., 240.])  # rank 1's last views do not overlap
    flips = torch.rand(BATCH, 2, generator=g) < 0.5
    samples = [DataSample(crop_boxes=boxes[i], flips=flips[i]) for i in range(BATCH)]
    return inputs, samples


def build_model():
    torch.manual_seed(0)
    model = tiny_slotcon()
    model.init_weights()
    model.eval()
    model.loss_group.center.fill_(0.01)
    return model


def gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def compute(rows):
    """One SlotCon loss and backward (BN in eval mode) on the samples ``rows`` of the batch."""
    model = build_model()
    inputs, samples = make_batch()
    losses = model.loss([view[rows] for view in inputs], samples[rows])
    (losses['loss_group'] + losses['loss_slot']).backward()
    return dict(losses={k: v.detach() for k, v in losses.items()}, grads=gradients(model),
                center=model.loss_group.center.clone())


def hand_losses(model, normalisation='rank'):
    """Each rank's ``loss_group`` and ``loss_slot``, written out on the whole batch in one
    process, and the (rank, view pair) counts they divide by: group cross-entropy over the valid
    pixels of the rank's images, slot InfoNCE of the rank's queries against the kept teacher
    slots of all images. ``normalisation='global'`` divides by the mean count over ranks
    instead (the weighting SlotCon used before: global sums over global counts)."""
    inputs, samples = make_batch()
    overlaps, flips, valid = model.view_overlaps(samples, torch.device('cpu'))
    model.teacher.update(model.student_modules())
    student = [model.encode_view(model.student_modules(), view) for view in inputs]
    with torch.no_grad():
        teacher = [model.encode_view(model.teacher, view) for view in inputs]
    student_maps = model.align_to_overlap([dots for _, dots in student], overlaps, flips)
    teacher_maps = model.align_to_overlap([dots for _, dots in teacher], overlaps, flips)
    totals = {key: [[], []] for key in ('loss_group', 'loss_slot')}  # [rank][view pair]
    counts = {key: torch.zeros(WORLD_SIZE, 2) for key in totals}
    for pair, (s, t) in enumerate(((0, 1), (1, 0))):
        group = model.loss_group
        targets = F.softmax((teacher_maps[t] - group.center[..., None, None])
                            / group.teacher_temp, dim=1)
        pixel_losses = -(targets * F.log_softmax(student_maps[s] / group.student_temp,
                                                 dim=1)).sum(1)  # (B, h, w)
        (student_slots, student_dots), (teacher_slots, teacher_dots) = student[s], teacher[t]
        teacher_kept = kept_slots(teacher_dots)  # (B, K), rank-major as gathered
        keys = F.normalize(teacher_slots[teacher_kept], dim=1)
        key_index = (teacher_kept.flatten().long().cumsum(0) - 1).view(BATCH, -1)
        for rank in range(WORLD_SIZE):
            rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
            pixels = pixel_losses[rows][valid[rows]]
            totals['loss_group'][rank].append(pixels.sum())
            counts['loss_group'][rank, pair] = pixels.numel()
            query_mask = kept_slots(student_dots[rows]) & teacher_kept[rows]
            queries = F.normalize(model.predictor(student_slots[rows][query_mask]), dim=1)
            labels = key_index[rows][query_mask]
            slot_temp = model.loss_slot.temp
            cross_entropy = F.cross_entropy(queries @ keys.t() / slot_temp, labels,
                                            reduction='sum')
            totals['loss_slot'][rank].append(cross_entropy * 2 * slot_temp)
            counts['loss_slot'][rank, pair] = len(labels)
    weights = dict(loss_group=model.group_loss_weight, loss_slot=1 - model.group_loss_weight)
    losses = [{} for _ in range(WORLD_SIZE)]
    for key, count in counts.items():
        divisor = count if normalisation == 'rank' else count.mean(0).expand_as(count)
        for rank in range(WORLD_SIZE):
            losses[rank][key] = weights[key] * sum(
                total / divisor[rank, pair] for pair, total in enumerate(totals[key][rank]))
    return losses, counts


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    ranks = run_on_ranks(compute, BATCH, tmp_path_factory.mktemp('slotcon_dist'), WORLD_SIZE)
    model = build_model()
    per_rank, counts = hand_losses(model)
    (sum(loss['loss_group'] + loss['loss_slot'] for loss in per_rank) / WORLD_SIZE).backward()
    return dict(ranks=ranks, hand=per_rank, counts=counts, hand_grads=gradients(model),
                single=compute(slice(None)))


def test_ranks_hold_different_numbers_of_pixels_and_queries(results):
    """Otherwise per-rank and global normalisation would agree and the tests below could not
    tell them apart."""
    for key, count in results['counts'].items():
        assert not torch.equal(count[0], count[1]), (key, count)
    with torch.no_grad():
        old_weighting, _ = hand_losses(build_model(), normalisation='global')
    for key in ('loss_group', 'loss_slot'):
        new = torch.stack([loss[key].detach() for loss in results['hand']])
        old = torch.stack([loss[key] for loss in old_weighting])
        assert (new - old).abs().max() > 1e-2, key


def test_each_rank_loss_is_the_mean_over_its_own_pixels_and_queries(results):
    for rank, hand in zip(results['ranks'], results['hand']):
        for key in ('loss_group', 'loss_slot'):
            assert torch.allclose(rank['losses'][key], hand[key].detach(), atol=1e-5), key


def test_averaged_gradients_are_those_of_the_mean_of_per_rank_losses(results):
    # relative to the largest entry: eval-mode BN at init makes some gradients ~1e4
    assert_averaged_gradients_match([r['grads'] for r in results['ranks']],
                                    results['hand_grads'], tolerance=1e-4, floor=1e-3)


def test_centre_and_prototype_count_are_those_of_the_whole_batch(results):
    single = results['single']
    for rank in results['ranks']:
        assert torch.equal(rank['losses']['num_active_prototypes'],
                           single['losses']['num_active_prototypes'])
        assert torch.allclose(rank['center'], single['center'], atol=1e-6)
