import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner

from mmdense.engine.hooks import FreezeLastLayerHook, TeacherTempWarmupHook


class TinyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.head = nn.ModuleDict(dict(last_layer=nn.Linear(4, 2)))
        self.teacher_temp = 0.0
        self.seen_temps = []

    def forward(self, inputs, data_samples=None, mode='loss'):
        self.seen_temps.append(self.teacher_temp)
        x = torch.stack(inputs) if isinstance(inputs, list) else inputs
        return dict(loss=self.head['last_layer'](self.body(x)).pow(2).mean())


def make_runner(tmp_path, hooks, max_iters=6, weight_decay=0.1):
    data = [dict(inputs=torch.randn(4)) for _ in range(4)]  # batch 2 -> 2 iters/epoch
    return Runner(
        model=TinyModel(),
        work_dir=str(tmp_path),
        train_dataloader=dict(dataset=data, batch_size=2, sampler=dict(type='DefaultSampler',
                                                                       shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.1, weight_decay=weight_decay)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        custom_hooks=hooks,
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None),
        default_scope='mmdense',
    )


def test_teacher_temp_schedule_values():
    hook = TeacherTempWarmupHook(start=0.04, end=0.07, warmup_iters=10)
    assert hook.value_at(0) == pytest.approx(0.04)
    assert hook.value_at(5) == pytest.approx(0.055)
    assert hook.value_at(10) == pytest.approx(0.07)
    assert hook.value_at(1000) == pytest.approx(0.07)


def test_teacher_temp_hook_sets_model_attribute_in_epochs(tmp_path):
    runner = make_runner(tmp_path, [dict(type='TeacherTempWarmupHook', start=0.04, end=0.07,
                                         warmup_epochs=2)])
    runner.train()
    # 2 iterations per epoch: warm-up over 4 iterations.
    assert runner.model.seen_temps == pytest.approx([0.04, 0.0475, 0.055, 0.0625, 0.07, 0.07])


def test_teacher_temp_hook_needs_exactly_one_length():
    with pytest.raises(ValueError):
        TeacherTempWarmupHook()
    with pytest.raises(ValueError):
        TeacherTempWarmupHook(warmup_epochs=1, warmup_iters=3)


def test_freeze_last_layer_skips_updates_then_trains(tmp_path):
    runner = make_runner(tmp_path, [dict(type='FreezeLastLayerHook', freeze_iters=3)],
                         max_iters=3)
    model = runner.model
    last0 = [p.detach().clone() for p in model.head.parameters()]
    body0 = model.body.weight.detach().clone()
    runner.train()
    assert all(torch.equal(a, b) for a, b in zip(last0, model.head.parameters()))
    assert not torch.equal(body0, model.body.weight)


def test_freeze_last_layer_releases_after_period(tmp_path):
    runner = make_runner(tmp_path, [dict(type='FreezeLastLayerHook', freeze_epochs=1)],
                         max_iters=4)
    last0 = runner.model.head['last_layer'].weight.detach().clone()
    runner.train()
    assert not torch.equal(last0, runner.model.head['last_layer'].weight)


def test_freeze_last_layer_unknown_prefix(tmp_path):
    runner = make_runner(tmp_path, [FreezeLastLayerHook(module_prefixes=('nope', ),
                                                        freeze_iters=1)])
    with pytest.raises(ValueError, match='nope'):
        runner.train()
