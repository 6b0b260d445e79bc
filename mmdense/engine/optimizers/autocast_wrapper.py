"""bf16 mixed precision on the CPU, where mmengine's ``AmpOptimWrapper`` refuses to run."""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from torch import nn

from mmdense.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward context is ``torch.autocast(device_type, dtype)``.

    mmengine 0.10.7's ``AmpOptimWrapper`` asserts that a CUDA, NPU, MLU or MUSA device exists, so
    ``--amp`` cannot run on a CPU-only machine. This wrapper does what ``AmpOptimWrapper`` does
    inside ``optim_context`` (the data preprocessor and the forward pass, losses included, run
    under autocast; backward and the optimizer step do not) without a loss scaler, which bf16
    does not need: its exponent range is fp32's. Parameters, gradients and optimizer state stay
    fp32. ``tools/analysis_tools/benchmark.py --amp`` uses it on the CPU; elsewhere::

        optim_wrapper = dict(type='AutocastOptimWrapper', dtype='bfloat16', device_type='cpu')

    Args:
        dtype: autocast dtype, ``'bfloat16'`` (the only one CPU autocast supports) or
            ``'float16'``.
        device_type: ``'cpu'`` or ``'cuda'``.
        **kwargs: ``OptimWrapper`` arguments (``optimizer``, ``clip_grad``, ...).
    """

    def __init__(self, dtype: str = 'bfloat16', device_type: str = 'cpu', **kwargs) -> None:
        super().__init__(**kwargs)
        if dtype not in ('bfloat16', 'float16'):
            raise ValueError(f'AutocastOptimWrapper: dtype must be bfloat16 or float16, '
                             f'got {dtype!r}')
        self.cast_dtype = getattr(torch, dtype)
        self.device_type = device_type

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast(self.device_type,
                                                          dtype=self.cast_dtype):
            yield
