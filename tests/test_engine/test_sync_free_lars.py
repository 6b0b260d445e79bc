import copy

import pytest
import torch
import torch.nn as nn
from mmpretrain.engine.optimizers import LARS

from mmdense.engine.optimizers import BarlowTwinsLARS, SyncFreeLARS
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


# ----------------------------------------------------------------------------- BarlowTwinsLARS

def official_lars_step(params, state, lr, momentum, weight_decay, eta):
    """The LARS step of the official SlotCon (and Barlow Twins) code, one parameter at a time:
    ``d = g + λw`` and ``q = η‖w‖/‖d‖`` for tensors of 2+ dimensions (``d = g``, ``q = 1`` for
    1-D ones), ``μ ← m·μ + q·d`` from ``μ = 0``, ``w ← w − lr·μ``."""
    for i, p in enumerate(params):
        d = p.grad.clone()
        if p.ndim > 1:
            d += weight_decay * p
            w_norm, d_norm = float(p.norm()), float(d.norm())
            d *= eta * w_norm / d_norm if w_norm > 0 and d_norm > 0 else 1.0
        state[i] = momentum * state.get(i, torch.zeros_like(p)) + d
        p -= lr * state[i]


def small_convnet():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        model[3].weight.zero_()  # ‖w‖ = 0 at the first step (and ‖g‖ = 0 for the first conv)
    return model


def loss_of(model, step):
    return model(torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(step))) \
        .square().mean()


def test_barlow_twins_lars_is_the_official_update_under_a_changing_lr():
    settings = dict(momentum=0.9, weight_decay=0.05, eta=0.02)
    lrs = [0.01, 0.3, 1.0, 2.0, 0.5]  # a warm-up, then a decay
    reference, ours, inner_lr = small_convnet(), small_convnet(), small_convnet()
    optimizer = BarlowTwinsLARS(ours.parameters(), lr=lrs[0], **settings)
    mmpretrain_form = SyncFreeLARS([dict(params=[p for p in inner_lr.parameters() if p.ndim > 1]),
                                    dict(params=[p for p in inner_lr.parameters() if p.ndim == 1],
                                         weight_decay=0.0, lars_exclude=True)],
                                   lr=lrs[0], **settings)
    state = {}
    for step, lr in enumerate(lrs):
        for model, opt in ((ours, optimizer), (inner_lr, mmpretrain_form)):
            opt.param_groups[0]['lr'] = opt.param_groups[-1]['lr'] = lr
            model.zero_grad()
            loss_of(model, step).backward()
            opt.step()
        reference.zero_grad()
        loss_of(reference, step).backward()
        with torch.no_grad():
            official_lars_step(list(reference.parameters()), state, lr, **settings)
        for (name, expected), actual in zip(reference.named_parameters(), ours.parameters()):
            assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-7), (step, name)
    assert not torch.equal(ours[0].weight, small_convnet()[0].weight)  # it did train
    # mmpretrain's form (lr inside the momentum buffer, η‖w‖/(‖g‖ + λ‖w‖)) ends elsewhere
    assert not torch.allclose(inner_lr[0].weight, ours[0].weight, rtol=1e-3)


def test_barlow_twins_lars_gives_1d_parameters_plain_momentum_sgd():
    bias = nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = BarlowTwinsLARS([bias], lr=0.1, momentum=0.5, weight_decay=10.0, eta=1e-3)
    grads = [torch.tensor([0.5, 1.0]), torch.tensor([-1.0, 2.0])]
    for grad in grads:
        bias.grad = grad
        optimizer.step()
    # no decay, no trust ratio: μ1 = g1, μ2 = 0.5·g1 + g2
    expected = torch.tensor([1.0, -2.0]) - 0.1 * grads[0] - 0.1 * (0.5 * grads[0] + grads[1])
    assert torch.allclose(bias.detach(), expected)


def test_barlow_twins_lars_step_reads_nothing_back():
    model = small_convnet()
    optimizer = BarlowTwinsLARS(model.parameters(), lr=0.1, weight_decay=1e-5)
    loss_of(model, 0).backward()
    with count_host_readbacks() as readbacks:
        optimizer.step()
        optimizer.step()
    assert sum(readbacks.values()) == 0, readbacks


def test_barlow_twins_lars_built_from_a_config_and_rejects_negative_settings():
    from mmengine.optim import build_optim_wrapper
    wrapper = build_optim_wrapper(nn.Linear(3, 2),
                                  dict(optimizer=dict(type='BarlowTwinsLARS', lr=0.1)))
    assert isinstance(wrapper.optimizer, BarlowTwinsLARS)
    with pytest.raises(ValueError, match='weight_decay must be >= 0, got -1'):
        BarlowTwinsLARS(nn.Linear(3, 2).parameters(), lr=0.1, weight_decay=-1)


# ----------------------------------------------------------- fused (foreach) steps, bit for bit

def per_parameter_sync_free_lars_step(optimizer):
    """SyncFreeLARS's step as it was written before it was fused: one parameter at a time."""
    for group in optimizer.param_groups:
        params = [p for p in group['params'] if p.grad is not None]
        weight_decay, lr = group['weight_decay'], group['lr']
        if group.get('lars_exclude', False):
            scales = [lr] * len(params)
        else:
            weight_norms = torch.stack(torch._foreach_norm(params))
            grad_norms = torch.stack(torch._foreach_norm([p.grad for p in params]))
            trust = group['eta'] * weight_norms / (
                grad_norms + weight_decay * weight_norms + optimizer.eps)
            adapt = (weight_norms != 0) & (grad_norms != 0)
            scales = (torch.where(adapt, trust, torch.ones_like(trust)) * lr).unbind()
        for p, scale in zip(params, scales):
            update = p.grad.add(p, alpha=weight_decay).mul(scale)
            state = optimizer.state[p]
            if 'momentum_buffer' not in state:
                buffer = state['momentum_buffer'] = update.clone()
            else:
                buffer = state['momentum_buffer']
                buffer.mul_(group['momentum']).add_(update, alpha=1 - group['dampening'])
            update = update.add(buffer, alpha=group['momentum']) if group['nesterov'] else buffer
            p.sub_(update)


def per_parameter_barlow_twins_lars_step(optimizer):
    """BarlowTwinsLARS's step as it was written before it was fused."""
    for group in optimizer.param_groups:
        params = [p for p in group['params'] if p.grad is not None]
        matrices = [p for p in params if p.ndim > 1]
        vectors = [p for p in params if p.ndim <= 1]
        updates = [p.grad for p in vectors]
        if matrices:
            updates += optimizer._adapted_updates(matrices, group['weight_decay'], group['eta'])
        for p, update in zip(vectors + matrices, updates):
            state = optimizer.state[p]
            if 'momentum_buffer' not in state:
                state['momentum_buffer'] = torch.zeros_like(p)
            state['momentum_buffer'].mul_(group['momentum']).add_(update)
            p.sub_(state['momentum_buffer'], alpha=group['lr'])


def per_parameter_adapted_updates(params, weight_decay, eta):
    updates = torch._foreach_add([p.grad for p in params], params, alpha=weight_decay)
    weight_norms = torch.stack(torch._foreach_norm(params))
    update_norms = torch.stack(torch._foreach_norm(updates))
    trust = eta * weight_norms / update_norms
    ratios = torch.where((weight_norms > 0) & (update_norms > 0), trust,
                         torch.ones_like(trust)).unbind()
    return [update.mul_(ratio) for update, ratio in zip(updates, ratios)]


@torch.no_grad()
def fused_and_per_parameter_trajectories(build, reference_step, steps=4):
    """Train two copies of a small convnet, one with ``optimizer.step`` and one with the
    per-parameter ``reference_step``, on the same losses; return both models."""
    fused, looped = small_convnet(), small_convnet()
    fused_opt, looped_opt = build(fused), build(looped)
    for step in range(steps):
        for model in (fused, looped):
            model.zero_grad()
            with torch.enable_grad():
                loss_of(model, step).backward()
        fused_opt.step()
        reference_step(looped_opt)
    return fused, looped


@pytest.mark.parametrize('nesterov', [False, True])
def test_fused_sync_free_lars_step_is_the_per_parameter_step_bit_for_bit(nesterov):
    fused, looped = fused_and_per_parameter_trajectories(
        lambda model: SyncFreeLARS(param_groups(model), lr=0.5, momentum=0.9, weight_decay=1e-2,
                                   eta=0.02, nesterov=nesterov,
                                   dampening=0.0 if nesterov else 0.1),
        per_parameter_sync_free_lars_step)
    for (name, actual), expected in zip(fused.named_parameters(), looped.parameters()):
        assert torch.equal(actual, expected), name


def test_fused_barlow_twins_lars_step_is_the_per_parameter_step_bit_for_bit(monkeypatch):
    def reference(optimizer):
        with monkeypatch.context() as patch:
            patch.setattr(optimizer, '_adapted_updates', per_parameter_adapted_updates)
            per_parameter_barlow_twins_lars_step(optimizer)

    fused, looped = fused_and_per_parameter_trajectories(
        lambda model: BarlowTwinsLARS(model.parameters(), lr=0.7, momentum=0.9,
                                      weight_decay=0.05, eta=0.02), reference)
    for (name, actual), expected in zip(fused.named_parameters(), looped.parameters()):
        assert torch.equal(actual, expected), name


@pytest.mark.parametrize('optimizer_type', [SyncFreeLARS, BarlowTwinsLARS])
def test_fused_lars_steps_dispatch_as_many_operators_for_4_layers_as_for_16(optimizer_type):
    """The operators of a step (GPU kernel launches) do not grow with the parameter count."""
    from mmdense.utils.op_counter import compute_ops, count_aten_ops

    def operators_per_step(num_layers):
        model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(num_layers)])
        optimizer = optimizer_type(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        for _ in range(2):  # the second step has its momentum buffers
            model.zero_grad()
            model(torch.randn(2, 4)).square().sum().backward()
            with count_aten_ops() as counts:
                optimizer.step()
        return sum(compute_ops(counts).values())

    assert operators_per_step(4) == operators_per_step(16) > 0
