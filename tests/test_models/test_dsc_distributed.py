"""DSC is world-size invariant: 2 CPU processes (gloo) on half batches cluster exactly the
pixels that 1 process clusters on the whole batch, into the same classes, and give the same
losses, (DDP-averaged) gradients and queue.

BatchNorm runs in eval mode (as in test_slotcon_distributed.py): per-process batch statistics
would differ by construction. Everything else is exercised: pixel keys gathered from all ranks,
per-image positives offset by rank, the k-means on the gathered pixels seeded identically on
every rank, Sinkhorn balanced over all ranks, loss normalisation over all ranks, the queue
filled with the keys of all ranks.
"""
import pytest
import torch
from distributed import assert_averaged_gradients_match, run_with_reference
from helpers import tiny_dsc

import mmdense.models.algorithms.dsc as dsc_module

WORLD_SIZE = 2
BATCH = 4
VARIANTS = ('km', 'pm')


def make_batch():
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(BATCH, 3, 64, 64, generator=g) for _ in range(2)]
    x1 = torch.randint(0, 40, (BATCH, 2), generator=g).float()
    boxes = torch.cat([x1, x1 + 60], dim=-1).view(BATCH, 1, 4).expand(BATCH, 2, 4).clone()
    boxes[:, 1] += torch.tensor([10., 5., 10., 5.])
    flips = torch.rand(BATCH, 2, generator=g) < 0.5
    samples = [DataSample(crop_boxes=boxes[i], flips=flips[i]) for i in range(BATCH)]
    return inputs, samples


def recording_kmeans(record):
    """``gathered_spherical_kmeans`` that also keeps what it clustered and the classes."""
    original = dsc_module.gathered_spherical_kmeans

    def kmeans(features, *args):
        centroids, labels, all_labels = original(features, *args)
        record.update(inputs=dsc_module.concat_all_gather(features), classes=all_labels)
        return centroids, labels, all_labels
    return kmeans


def compute(rows):
    """One DSC loss and backward per variant (BN in eval mode) on the samples ``rows``."""
    results = {}
    for variant in VARIANTS:
        torch.manual_seed(0)
        model = tiny_dsc(semantic_variant=variant, num_classes=4, queue_len=16)
        model.init_weights()
        model.eval()
        record = {}
        dsc_module.gathered_spherical_kmeans = recording_kmeans(record)
        inputs, samples = make_batch()
        losses = model.loss([view[rows] for view in inputs], samples[rows])
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[variant] = dict(losses={k: v.detach() for k, v in losses.items()}, grads=grads,
                                queue=model.queue.clone(), queue_ptr=model.queue_ptr.clone(),
                                **record)
    return results


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    return run_with_reference(compute, BATCH, tmp_path_factory.mktemp('dsc_dist'), WORLD_SIZE)


def test_every_rank_clusters_the_whole_batch_into_the_same_classes(results):
    ranks, single = results
    for r in ranks:
        assert r['km']['inputs'].shape == single['km']['inputs'].shape
        assert torch.allclose(r['km']['inputs'], single['km']['inputs'], atol=1e-5)
        assert torch.equal(r['km']['classes'], single['km']['classes'])


@pytest.mark.parametrize('variant', VARIANTS)
def test_losses_and_queue_match_single_process(results, variant):
    ranks, single = results
    for key, value in single[variant]['losses'].items():
        mean = torch.stack([r[variant]['losses'][key] for r in ranks]).mean()
        assert torch.allclose(mean, value, atol=1e-5), key
    for r in ranks:
        assert torch.allclose(r[variant]['queue'], single[variant]['queue'], atol=1e-5)
        assert torch.equal(r[variant]['queue_ptr'], single[variant]['queue_ptr'])


@pytest.mark.parametrize('variant', VARIANTS)
def test_averaged_gradients_match_single_process(results, variant):
    ranks, single = results
    assert_averaged_gradients_match([r[variant]['grads'] for r in ranks],
                                    single[variant]['grads'], tolerance=1e-4, floor=1e-3)
