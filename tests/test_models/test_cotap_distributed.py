"""CoTAP is world-size invariant: 2 CPU processes (gloo) on half batches give the four losses
and (DDP-averaged) gradients of 1 process on the whole batch.

The tiny model has no BatchNorm and no dropout or drop-path, so it runs in training mode.
The batch is built so that every cross-rank coupling of CoTAP matters:

* Sinkhorn codes (patch, cls and cross-cls terms) are balanced over the samples of all ranks;
* crop overlaps differ between samples and ranks: one (global, local) pair of views overlaps
  on rank 1's images only, another on 3 of the 4 images, so the patch loss must decide which
  pairs count and normalise its attention-weighted mean over all ranks;
* the cross-image ranking loss normalises by the target weights of all ranks, and its
  negatives are images of other pairs drawn from the whole batch by derangements of all
  pairs that every rank shares (rank 0 draws them): with 2 pairs per rank, local-only
  negatives could never come from the other rank's pairs.
"""
import pytest
import torch
from distributed import assert_averaged_gradients_match, run_with_reference
from helpers import pair_batch, tiny_cotap

from mmdense.utils import get_rank

WORLD_SIZE = 2
BATCH = 4  # (image, neighbour) pairs
PER_RANK = BATCH // WORLD_SIZE
TERMS = ('patch', 'cls', 'cross_patch', 'cross_cls')
NUM_PAIR_VIEWS = 6  # 2 global, 2 local and 2 clean global views per image


def make_batch():
    """:func:`pair_batch` with crop boxes that differ between samples (and ranks)."""
    inputs, samples = pair_batch(batch=BATCH)
    for i, sample in enumerate(samples):
        boxes = sample.crop_boxes.clone()
        for side in (0, NUM_PAIR_VIEWS):  # the image and its neighbour
            if i < PER_RANK:  # rank 0: local view 0 overlaps no global view
                boxes[side + 2] = torch.tensor([100., 0., 128., 28.])
            if i == BATCH - 1:  # local view 1 overlaps the second global view only
                boxes[side + 3] = torch.tensor([100., 100., 128., 128.])
        sample.crop_boxes = boxes
    return inputs, samples


def compute(rows):
    """One CoTAP loss and backward on the samples ``rows`` of the batch."""
    model = tiny_cotap(patch_attention_weighting=True, num_negatives=3)
    drawn = []
    draw = model.negative_partners

    def recording_draw(*args):
        drawn.append(draw(*args))
        return drawn[-1]
    model.negative_partners = recording_draw
    inputs, samples = make_batch()
    # Random states differ between ranks, as they may in training: the negatives must follow
    # rank 0's draws, which are those of the single process (same seed, same draws before).
    torch.manual_seed(1 + get_rank())
    losses = model.loss([view[rows] for view in inputs], samples[rows])
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return dict(losses={k: v.detach() for k, v in losses.items()}, grads=grads,
                negatives=torch.stack(drawn[0]))


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    return run_with_reference(compute, BATCH, tmp_path_factory.mktemp('cotap_dist'), WORLD_SIZE)


def test_every_rank_takes_the_single_process_negatives(results):
    """Negative indices of rank r's images, into the images of all ranks, are those of the
    single process once mapped to its batch (all anchors, then all neighbours)."""
    ranks, single = results
    local_batch = 2 * PER_RANK  # anchors, then neighbours
    for rank, r in enumerate(ranks):
        index = r['negatives']  # (num_negatives, local_batch)
        source_rank, position = index // local_batch, index % local_batch
        as_single = position // PER_RANK * BATCH + source_rank * PER_RANK + position % PER_RANK
        rows = [rank * PER_RANK + j for j in range(PER_RANK)]
        rows += [BATCH + row for row in rows]
        assert torch.equal(as_single, single['negatives'][:, rows])
        assert (source_rank != rank).any()  # some negatives are images of the other rank


def test_losses_match_single_process(results):
    ranks, single = results
    assert set(single['losses']) == {f'loss_{t}' for t in TERMS}
    for key, value in single['losses'].items():
        assert value > 0, key
        mean = torch.stack([r['losses'][key] for r in ranks]).mean()
        assert torch.allclose(mean, value, rtol=1e-5, atol=1e-6), (key, mean, value)


def test_averaged_gradients_match_single_process(results):
    ranks, single = results
    assert_averaged_gradients_match([r['grads'] for r in ranks], single['grads'])
