"""AutocastOptimWrapper: bf16 autocast for the forward pass on the CPU, fp32 parameters."""
import pytest
import torch
from mmengine.model import BaseModel
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope


class TinyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)
        self.seen = []

    def forward(self, inputs, data_samples=None, mode='loss'):
        out = self.fc(inputs)
        self.seen.append(out.dtype)
        return dict(loss=out.float().pow(2).mean())


def test_forward_in_bf16_parameters_stay_fp32():
    import mmdense  # noqa: F401
    from mmdense.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    model = TinyModel()
    wrapper = build_optim_wrapper(model, dict(
        type='AutocastOptimWrapper', dtype='bfloat16', device_type='cpu',
        constructor='FrozenAwareOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.1)))
    assert type(wrapper).__name__ == 'AutocastOptimWrapper'
    before = model.fc.weight.detach().clone()
    model.train_step(dict(inputs=torch.randn(2, 8)), wrapper)
    assert model.seen == [torch.bfloat16]
    assert model.fc.weight.dtype == torch.float32 and not torch.equal(model.fc.weight, before)
    assert model.fc(torch.randn(2, 8)).dtype == torch.float32  # no autocast outside a step


def test_rejects_other_dtypes():
    from mmdense.engine.optimizers import AutocastOptimWrapper
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match='bfloat16 or float16'):
        AutocastOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                             dtype='float32')


def test_constructor_merges_groups_of_equal_settings_and_keeps_every_update():
    """With paramwise_cfg mmengine makes one group per parameter; merged, a foreach AdamW
    launches its kernels once per distinct setting, and every parameter ends where the
    per-parameter groups take it, bit for bit."""
    from copy import deepcopy

    from mmdense.engine.optimizers.frozen_aware_constructor import merge_equal_groups
    from mmdense.utils.op_counter import compute_ops, count_aten_ops
    init_default_scope('mmdense')
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(4, 4),
                                                      torch.nn.LayerNorm(4)) for _ in range(6)])
    looped = deepcopy(model)
    cfg = dict(constructor='FrozenAwareOptimWrapperConstructor',
               optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.04, foreach=True),
               paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                                  custom_keys={'5.0.weight': dict(lr_mult=2.0)}))
    optimizer = build_optim_wrapper(model, cfg).optimizer
    # decayed weights, undecayed biases and norms, the one weight with its own lr
    assert [(len(g['params']), g['weight_decay'], g['lr']) for g in optimizer.param_groups] \
        == [(5, 0.04, 0.01), (18, 0.0, 0.01), (1, 0.04, 0.02)]
    twin = dict(zip(map(id, model.parameters()), looped.parameters()))
    per_parameter = torch.optim.AdamW(
        [dict(params=[twin[id(p)]], weight_decay=g['weight_decay'], lr=g['lr'])
         for g in optimizer.param_groups for p in g['params']], lr=0.01, foreach=True)
    assert len(per_parameter.param_groups) == 24
    for step in range(3):
        x = torch.randn(2, 4)
        launches = []
        for net, opt in ((model, optimizer), (looped, per_parameter)):
            opt.zero_grad()
            net(x).square().sum().backward()
            with count_aten_ops() as counts:
                opt.step()
            # the foreach kernels (the step counters are host scalars: no kernel)
            launches.append(sum(n for op, n in compute_ops(counts).items()
                                if op.startswith('aten._foreach')))
    for (name, a), b in zip(model.named_parameters(), looped.parameters()):
        assert torch.equal(a, b), name
    assert launches[0] * 4 < launches[1], launches
    assert merge_equal_groups([dict(params=[1], lr=1), dict(params=[2], lr=2),
                               dict(params=[3], lr=1)]) == [dict(params=[1, 3], lr=1),
                                                            dict(params=[2], lr=2)]
