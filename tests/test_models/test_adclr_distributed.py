"""ADCLR is world-size invariant: 2 CPU processes (gloo) on half batches give the DINO and query
losses, both centres (image and query, each all-reduced over ranks) and the (DDP-averaged)
gradients of 1 process on the whole batch.

Eval mode turns drop-path off (its draws would differ with the batch size); the model has no
BatchNorm. The query term (patch-token targets, 3 x 3 tokens per query crop) averages over the
B·Q·P query tokens of a rank, the same number on every rank.
"""
import pytest
import torch
from distributed import assert_averaged_gradients_match, run_with_reference
from helpers import adclr_views, build_seeded, query_samples, tiny_adclr_cfg

WORLD_SIZE = 2
BATCH = 6
NUM_QUERIES = 4


def compute(rows):
    """One ADCLR loss and backward (eval mode: no drop-path) on the samples ``rows``."""
    model = build_seeded(tiny_adclr_cfg(query_loss_weight=0.5, query_teacher_temp=0.05))
    model.eval()
    model.loss_module.center.fill_(0.01)
    model.query_loss_module.center.fill_(-0.02)
    model.teacher_temp = 0.04
    views, queries = adclr_views(batch_size=BATCH, num_queries=NUM_QUERIES)
    inputs = [view[rows] for view in views + queries]
    losses = model.loss(inputs, query_samples(len(inputs[0]), NUM_QUERIES))
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return dict(losses={k: v.detach() for k, v in losses.items()}, grads=grads,
                center=model.loss_module.center.clone(),
                query_center=model.query_loss_module.center.clone())


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    return run_with_reference(compute, BATCH, tmp_path_factory.mktemp('adclr_dist'), WORLD_SIZE)


def test_losses_and_centres_match_single_process(results):
    ranks, single = results
    assert set(single['losses']) == {'loss_dino', 'loss_query'}
    for key, value in single['losses'].items():
        mean = torch.stack([r['losses'][key] for r in ranks]).mean()
        assert torch.allclose(mean, value, rtol=1e-5, atol=1e-6), (key, mean, value)
    for r in ranks:
        for key in ('center', 'query_center'):
            assert torch.allclose(r[key], single[key], atol=1e-6), key


def test_averaged_gradients_match_single_process(results):
    ranks, single = results
    assert_averaged_gradients_match([r['grads'] for r in ranks], single['grads'])
