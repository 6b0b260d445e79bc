"""Gradient clipping of each parameter's norm separately, as DINO's ``utils.clip_gradients``."""
from typing import Iterable, Optional

import torch
from torch import nn

from mmdense.registry import OPTIM_WRAPPER_CONSTRUCTORS
from .frozen_aware_constructor import FrozenAwareOptimWrapperConstructor

PER_PARAM = 'per_param'


@torch.no_grad()
def clip_grad_norm_per_param_(parameters: Iterable[torch.Tensor], max_norm: float,
                              eps: float = 1e-6) -> None:
    """Scale each gradient g in place by ``min(1, max_norm / (||g||_2 + eps))``.

    Every parameter is clipped on its own norm, not on the norm of all gradients together
    (``torch.nn.utils.clip_grad_norm_``): a parameter with a large gradient is shrunk to norm
    ``max_norm`` while the others keep theirs. This is DINO's ``utils.clip_gradients`` (same
    ``eps``), computed on the device without reading any norm back to the host.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch.stack(torch._foreach_norm(grads))
    scales = (max_norm / (norms + eps)).clamp_(max=1.0)
    torch._foreach_mul_(grads, list(scales.unbind()))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PerParamClipOptimWrapperConstructor(FrozenAwareOptimWrapperConstructor):
    """:class:`FrozenAwareOptimWrapperConstructor` that also understands
    ``clip_grad=dict(type='per_param', max_norm=...)``: every optimised parameter's gradient is
    clipped to ``max_norm`` separately (:func:`clip_grad_norm_per_param_`), as DINO clips.

    The clipping runs in an optimizer step pre-hook, so it sees the gradients the optimizer is
    about to apply whatever the optim wrapper type: after DDP's all-reduce and, with
    ``AmpOptimWrapper``'s loss scaler, after unscaling (``GradScaler.step`` unscales, skips the
    step on inf/NaN, and only then calls ``optimizer.step``). Other ``clip_grad`` types
    (``'norm'``, ``'value'``) go to mmengine's optim wrapper unchanged.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        optim_wrapper_cfg = dict(optim_wrapper_cfg)
        clip_grad = optim_wrapper_cfg.get('clip_grad')
        self.per_param_max_norm = None
        if clip_grad is not None and clip_grad.get('type') == PER_PARAM:
            unknown = set(clip_grad) - {'type', 'max_norm'}
            if unknown or 'max_norm' not in clip_grad:
                raise ValueError(f"optim_wrapper.clip_grad: type='{PER_PARAM}' takes max_norm "
                                 f'only (and needs it), got {dict(clip_grad)}')
            self.per_param_max_norm = float(clip_grad['max_norm'])
            del optim_wrapper_cfg['clip_grad']
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def __call__(self, model: nn.Module):
        optim_wrapper = super().__call__(model)
        if self.per_param_max_norm is not None:
            optim_wrapper.optimizer.register_step_pre_hook(self._clip)
        return optim_wrapper

    def _clip(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        clip_grad_norm_per_param_(
            (p for group in optimizer.param_groups for p in group['params']),
            self.per_param_max_norm)
