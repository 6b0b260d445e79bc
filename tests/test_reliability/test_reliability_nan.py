"""NonFiniteLossHook: a NaN/Inf loss term stops training with its name and iteration; with an
AMP loss scaler, skipped steps are counted instead."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner

import mmdense  # noqa: F401
from mmdense.engine.hooks import NonFiniteLossHook
from mmdense.engine.hooks.nan_guard_hook import non_finite_terms


class TwoTermModel(BaseModel):
    """``loss_main`` is finite; ``loss_aux`` becomes ``bad_value`` from iteration ``bad_at``."""

    def __init__(self, bad_at, bad_value):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.bad_at, self.bad_value, self.calls = bad_at, bad_value, 0

    def forward(self, inputs, data_samples=None, mode='loss'):
        self.calls += 1
        out = self.linear(inputs)
        aux = out.mean() * 0 + (self.bad_value if self.calls >= self.bad_at else 1.0)
        return dict(loss_main=out.pow(2).mean(), loss_aux=aux)


def train(tmp_path, model, max_iters=5):
    runner = Runner(
        model=model,
        work_dir=str(tmp_path),
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(2))] * 16, batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        custom_hooks=[dict(type='NonFiniteLossHook')],
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmdense')
    runner.train()
    return runner


@pytest.mark.parametrize('bad_value', [float('nan'), float('inf'), float('-inf')])
def test_non_finite_term_stops_training_naming_term_and_iteration(tmp_path, bad_value):
    with pytest.raises(FloatingPointError, match=r'iteration 3 .*loss_aux=') as err:
        train(tmp_path, TwoTermModel(bad_at=3, bad_value=bad_value))
    assert 'loss_main' not in str(err.value)
    assert str(bad_value) in str(err.value)


def test_finite_losses_train_to_the_end(tmp_path):
    runner = train(tmp_path, TwoTermModel(bad_at=10**9, bad_value=float('nan')))
    assert runner.iter == 5


def test_non_finite_element_of_a_vector_term_is_caught():
    bad = {'loss': torch.tensor([1.0, float('nan')]), 'acc': torch.tensor(0.5)}
    assert non_finite_terms(bad) == {'loss': 'non-finite elements'}


class HalvingScaler:
    """Stands in for a GradScaler: halves its scale when the step overflows."""

    def __init__(self):
        self.scale = 2.0**16

    def get_scale(self):
        return self.scale


def test_amp_counts_skipped_steps_instead_of_raising():
    scaler = HalvingScaler()
    hub = MessageHub.get_instance('mmdense-test-amp-skip')
    runner = SimpleNamespace(optim_wrapper=SimpleNamespace(loss_scaler=scaler), iter=0,
                             epoch=0, message_hub=hub)
    hook = NonFiniteLossHook()
    for step, loss in enumerate([1.0, float('inf'), 2.0, float('nan')]):
        runner.iter = step
        hook.before_train_iter(runner, step)
        if loss != loss or loss == float('inf'):
            scaler.scale /= 2  # the scaler skipped this step
        hook.after_train_iter(runner, step, outputs=dict(loss=torch.tensor(loss)))
    assert hook.amp_skipped_steps == 2
    assert hub.get_scalar('train/amp_skipped_steps').current() == 2


def test_a_non_finite_step_is_never_checkpointed(tmp_path):
    """The guard (priority HIGH) raises before the checkpoint hook (VERY_LOW) saves the
    iteration whose loss was NaN: the last checkpoint is the last finite step."""
    runner = Runner(
        model=TwoTermModel(bad_at=3, bad_value=float('nan')),
        work_dir=str(tmp_path),
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(2))] * 16, batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=5),
        default_hooks=dict(nan_guard=dict(type='NonFiniteLossHook'),
                           checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False,
                                           interval=1)),
        default_scope='mmdense')
    with pytest.raises(FloatingPointError, match='iteration 3 '):
        runner.train()
    assert (tmp_path / 'iter_2.pth').exists() and not (tmp_path / 'iter_3.pth').exists()
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
    state = torch.load(tmp_path / 'iter_2.pth', map_location='cpu')['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values())
