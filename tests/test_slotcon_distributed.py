"""SlotCon is world-size invariant: 2 CPU processes (gloo) on half batches give the losses,
centre and (DDP-averaged) gradients of 1 process on the whole batch.

BatchNorm runs in eval mode here: in training mode each process would normalise with its own
half-batch statistics (SyncBN, which removes that difference, needs CUDA), so the comparison
would test BN rather than SlotCon. Everything else — kept-slot masks, keys gathered from all
ranks, labels offset by rank, loss normalisation over all ranks, the all-reduced centre and
prototype count — is exercised.
"""
import pytest
import torch
from distributed import assert_averaged_gradients_match, run_on_ranks
from mmengine.logging import MessageHub
from mmpretrain.structures import DataSample
from test_slotcon import tiny_slotcon

WORLD_SIZE = 2
BATCH = 4


def make_batch():
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(BATCH, 3, 96, 96, generator=g) for _ in range(2)]
    x1 = torch.randint(0, 40, (BATCH, 2), generator=g).float()
    boxes = torch.cat([x1, x1 + 60], dim=-1).view(BATCH, 1, 4).expand(BATCH, 2, 4).clone()
    boxes[:, 1] += torch.tensor([10., 5., 10., 5.])
    flips = torch.rand(BATCH, 2, generator=g) < 0.5
    samples = [DataSample(crop_boxes=boxes[i], flips=flips[i]) for i in range(BATCH)]
    return inputs, samples


def compute(rows):
    """One SlotCon loss and backward (BN in eval mode) on the samples ``rows`` of the batch."""
    MessageHub.get_current_instance().update_info('max_iters', 100)
    torch.manual_seed(0)
    model = tiny_slotcon()
    model.init_weights()
    model.eval()
    model.center.fill_(0.01)
    inputs, samples = make_batch()
    losses = model.loss([view[rows] for view in inputs], samples[rows])
    (losses['loss_group'] + losses['loss_slot']).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return dict(losses={k: v.detach() for k, v in losses.items()}, grads=grads,
                center=model.center.clone())


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    ranks = run_on_ranks(compute, BATCH, tmp_path_factory.mktemp('slotcon_dist'), WORLD_SIZE)
    return ranks, compute(slice(None))


def test_losses_and_centre_match_single_process(results):
    ranks, single = results
    for key in ('loss_group', 'loss_slot'):
        mean = torch.stack([r['losses'][key] for r in ranks]).mean()
        assert torch.allclose(mean, single['losses'][key], atol=1e-5), key
    for r in ranks:
        assert torch.equal(r['losses']['num_active_prototypes'],
                           single['losses']['num_active_prototypes'])
        assert torch.allclose(r['center'], single['center'], atol=1e-6)


def test_averaged_gradients_match_single_process(results):
    ranks, single = results
    # relative to the largest entry: eval-mode BN at init makes some gradients ~1e4
    assert_averaged_gradients_match([r['grads'] for r in ranks], single['grads'],
                                    tolerance=1e-4, floor=1e-3)
