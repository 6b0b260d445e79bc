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
