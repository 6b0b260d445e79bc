"""The DINO algorithm is world-size invariant: 2 CPU processes (gloo) on half batches give the
loss, centre, teacher and (DDP-averaged) gradients of 1 process on the whole batch."""
import pytest
import torch
from distributed import assert_averaged_gradients_match, run_on_ranks
from helpers import dino_views, tiny_dino

WORLD_SIZE = 2
BATCH = 6


def compute(rows):
    """One DINO step (eval mode: no drop-path) on the samples ``rows`` of a fixed batch."""
    torch.manual_seed(0)
    model = tiny_dino()
    model.init_weights()
    model.eval()
    model.loss_module.center.fill_(0.01)
    model.teacher_temp = 0.04
    loss = model.loss([view[rows] for view in dino_views(batch=BATCH)], None)['loss']
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return dict(loss=loss.detach(), grads=grads, center=model.loss_module.center.clone())


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    ranks = run_on_ranks(compute, BATCH, tmp_path_factory.mktemp('dino_dist'), WORLD_SIZE)
    return ranks, compute(slice(None))


def test_loss_and_centre_match_single_process(results):
    ranks, single = results
    assert torch.allclose(torch.stack([r['loss'] for r in ranks]).mean(), single['loss'],
                          atol=1e-6)
    for r in ranks:
        assert torch.allclose(r['center'], single['center'], atol=1e-6)


def test_ddp_averaged_gradients_match_single_process(results):
    ranks, single = results
    assert_averaged_gradients_match([r['grads'] for r in ranks], single['grads'], tolerance=1e-4)
