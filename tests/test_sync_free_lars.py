import copy

import pytest
import torch
import torch.nn as nn
from mmpretrain.engine.optimizers import LARS

from mmdense.engine.optimizers import SyncFreeLARS
from mmdense.utils import count_host_readbacks


def param_groups(model):
    """Conv weights with LARS adaptation; 1-D parameters excluded, as in the SlotCon recipe."""
    matrices = [p for p in model.parameters() if p.dim() > 1]
    vectors = [p for p in model.parameters() if p.dim() == 1]
    return [dict(params=matrices), dict(params=vectors, weight_decay=0.0, lars_exclude=True)]


def train(optimizer_type, model, nesterov, steps=5):
    torch.manual_seed(1)
    optimizer = optimizer_type(param_groups(model), lr=0.5, momentum=0.9, weight_decay=1e-2,
                               eta=0.02, nesterov=nesterov)
    for step in range(steps):
        model.zero_grad()
        model(torch.randn(4, 3, 8, 8)).square().mean().backward()
        optimizer.step()
    return optimizer


@pytest.mark.parametrize('nesterov', [False, True])
def test_matches_mmpretrain_lars(nesterov):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        # first step: ‖w‖ = 0 for the last conv and (as it blocks the gradient) ‖g‖ = 0 for the
        # first one, so both take local lr 1; later steps adapt both
        model[3].weight.zero_()
    reference, ours = copy.deepcopy(model), copy.deepcopy(model)
    train(LARS, reference, nesterov)
    optimizer = train(SyncFreeLARS, ours, nesterov)
    for (name, expected), actual in zip(reference.named_parameters(), ours.parameters()):
        assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-7), name
    assert not torch.equal(ours[0].weight, model[0].weight)  # it did train
    assert all('momentum_buffer' in optimizer.state[p] for p in ours.parameters())


def test_step_reads_nothing_back():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer = SyncFreeLARS(param_groups(model), lr=0.1, momentum=0.9, weight_decay=1e-5)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    with count_host_readbacks() as readbacks:
        optimizer.step()
        optimizer.step()
    assert sum(readbacks.values()) == 0, readbacks


def test_built_from_a_config_in_the_mmdense_scope():
    from mmengine.optim import build_optim_wrapper
    model = nn.Linear(3, 2)
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SyncFreeLARS', lr=0.1)))
    assert isinstance(wrapper.optimizer, SyncFreeLARS)
