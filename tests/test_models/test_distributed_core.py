"""World-size invariance of the shared pieces: 2 CPU processes (gloo) on half batches give the
same results as 1 process on the whole batch."""
import pytest
import torch
from distributed import run_on_ranks

from mmdense.models.losses import DINOLoss
from mmdense.models.utils import sinkhorn_knopp
from mmdense.utils import concat_all_gather, gather_with_grad

WORLD_SIZE = 2


def make_inputs():
    g = torch.Generator().manual_seed(0)
    return dict(
        student=torch.randn(4, 6, 16, generator=g),  # (views, batch, K)
        teacher=torch.randn(2, 6, 16, generator=g),
        sinkhorn=torch.randn(6, 5, generator=g) * 3,
        features=torch.randn(6, 3, generator=g),
    )


def compute(rows):
    """Everything under test, on the samples ``rows`` of this process."""
    inputs = make_inputs()
    loss_fn = DINOLoss(out_channels=16)
    loss_fn.center.fill_(0.1)
    student = inputs['student'][:, rows].clone().requires_grad_(True)
    loss = loss_fn(student, inputs['teacher'][:, rows], teacher_temp=0.04)
    loss.backward()

    queries = inputs['features'][rows].clone().requires_grad_(True)
    keys = gather_with_grad(queries)
    contrast = (queries @ keys.t()).pow(2).sum(1).mean()
    contrast.backward()
    return dict(loss=loss.detach(), center=loss_fn.center.clone(), student_grad=student.grad,
                sinkhorn=sinkhorn_knopp(inputs['sinkhorn'][rows], num_iters=3),
                feature_grad=queries.grad, gathered=concat_all_gather(queries.detach()))


@pytest.fixture(scope='module')
def two_process_results(tmp_path_factory):
    return run_on_ranks(compute, 6, tmp_path_factory.mktemp('dist'), WORLD_SIZE)


def test_loss_centre_and_gradients_match_single_process(two_process_results):
    single = compute(slice(None))
    ranks = two_process_results
    assert torch.allclose(torch.stack([r['loss'] for r in ranks]).mean(), single['loss'],
                          atol=1e-6)
    for r in ranks:
        assert torch.allclose(r['center'], single['center'], atol=1e-6)
    # DDP averages gradients over ranks: the per-rank gradient / world size is the global one.
    grads = torch.cat([r['student_grad'] for r in ranks], dim=1) / WORLD_SIZE
    assert torch.allclose(grads, single['student_grad'], atol=1e-6)


def test_sinkhorn_and_gathers_match_single_process(two_process_results):
    single = compute(slice(None))
    ranks = two_process_results
    assert torch.allclose(torch.cat([r['sinkhorn'] for r in ranks]), single['sinkhorn'],
                          atol=1e-5)
    for r in ranks:
        assert torch.equal(r['gathered'], make_inputs()['features'])
    grads = torch.cat([r['feature_grad'] for r in ranks]) / WORLD_SIZE
    assert torch.allclose(grads, single['feature_grad'], atol=1e-5)
