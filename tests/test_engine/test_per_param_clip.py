"""``clip_grad=dict(type='per_param', max_norm=3.0)`` clips each parameter's gradient on its own
norm, as DINO's ``utils.clip_gradients`` does, against hand-computed gradients: a parameter whose
gradient has norm 5 is scaled to norm 3, one with norm 1 is left alone (clipping on the global
norm √26 would scale both by 3/√26)."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from helpers import ROOT

START = {'large': [1.0, 1.0], 'small': [1.0, 1.0]}
GRADS = {'large': [3.0, 4.0], 'small': [0.6, 0.8]}  # norms 5 and 1
# SGD with lr 1 subtracts the (clipped) gradient: large -> 3/5 of its gradient, small unchanged
EXPECTED = {'large': [1.0 - 1.8, 1.0 - 2.4], 'small': [1.0 - 0.6, 1.0 - 0.8]}


class TwoParameters(nn.Module):

    def __init__(self):
        super().__init__()
        self.large = nn.Parameter(torch.tensor(START['large']))
        self.small = nn.Parameter(torch.tensor(START['small']))

    def loss(self):
        """A loss whose gradient with respect to each parameter is ``GRADS``."""
        return sum((getattr(self, name) * torch.tensor(grad)).sum()
                   for name, grad in GRADS.items())


def sgd_wrapper(model, clip_grad, **wrapper):
    init_default_scope('mmdense')
    return build_optim_wrapper(model, dict(
        constructor='PerParamClipOptimWrapperConstructor', optimizer=dict(type='SGD', lr=1.0),
        clip_grad=clip_grad, **wrapper))


def assert_parameters(model, expected):
    for name, values in expected.items():
        torch.testing.assert_close(getattr(model, name).detach(), torch.tensor(values),
                                   rtol=0, atol=1e-6)


def test_each_parameter_is_clipped_on_its_own_norm():
    model = TwoParameters()
    sgd_wrapper(model, dict(type='per_param', max_norm=3.0)).update_params(model.loss())
    assert_parameters(model, EXPECTED)


def test_global_norm_clipping_is_still_mmengines():
    model = TwoParameters()
    sgd_wrapper(model, dict(type='norm', max_norm=3.0)).update_params(model.loss())
    scale = 3.0 / 26 ** 0.5  # both gradients scaled by max_norm / global norm
    assert_parameters(model, {name: [1.0 - scale * g for g in grad]
                              for name, grad in GRADS.items()})


def test_loss_scaled_gradients_are_unscaled_before_clipping():
    """``AmpOptimWrapper`` backpropagates ``scaler.scale(loss)`` and steps with
    ``scaler.step(optimizer)``, which unscales the gradients and only then calls
    ``optimizer.step``. Clipping the scaled gradients (norms 5·1024 and 1024) would shrink both
    updates to nearly nothing."""
    model = TwoParameters()
    optimizer = sgd_wrapper(model, dict(type='per_param', max_norm=3.0)).optimizer
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    scaler.scale(model.loss()).backward()
    assert model.large.grad.norm().item() == pytest.approx(5 * 1024)
    scaler.step(optimizer)
    assert_parameters(model, EXPECTED)


def test_the_dino_recipes_clip_per_parameter():
    for config in ('vit-s_in1k-100e.py', 'vit-s_in1k-300e.py'):
        cfg = Config.fromfile(osp.join(ROOT, 'configs/dino', config)).optim_wrapper
        model = TwoParameters()
        cfg.optimizer = dict(type='SGD', lr=1.0, weight_decay=0.0)  # the recipe's, plain update
        cfg.type = 'OptimWrapper'  # the recipes' fp16 AmpOptimWrapper needs a GPU
        init_default_scope('mmdense')
        build_optim_wrapper(model, cfg).update_params(model.loss())
        assert_parameters(model, EXPECTED)


def test_a_per_param_setting_it_does_not_know_is_an_error():
    with pytest.raises(ValueError, match="type='per_param' takes max_norm only"):
        sgd_wrapper(TwoParameters(), dict(type='per_param', max_norm=3.0, norm_type=1))
