"""LARS optimisers whose layer-wise trust ratios stay on the device."""
from typing import List

import torch
from mmpretrain.engine.optimizers import LARS
from torch import Tensor
from torch.optim import Optimizer

from mmdense.registry import OPTIMIZERS


@OPTIMIZERS.register_module()
class SyncFreeLARS(LARS):
    """mmpretrain's ``LARS`` update, computed without reading the norms back to the host.

    For a parameter ``w`` with gradient ``g`` (groups without ``lars_exclude``)::

        local_lr = η‖w‖ / (‖g‖ + λ‖w‖ + ε)   if ‖w‖ ≠ 0 and ‖g‖ ≠ 0, else 1
        d = (g + λw) · lr · local_lr,  then SGD momentum (optionally Nesterov) on d

    mmpretrain's ``step`` takes ``‖w‖`` and ``‖g‖`` of every parameter with ``.item()`` (two
    device synchronisations per parameter per step, 120 for SlotCon's ResNet-50). Here the norms
    of a group come from one ``torch._foreach_norm`` per list and the trust ratios are selected
    with ``torch.where``, so the step never waits on the device; every per-parameter operation
    is one ``torch._foreach_*`` call over the group (a handful of kernel launches per group
    instead of five per parameter). Arguments, state and results are those of ``LARS`` (up to
    float rounding: the ratio is computed in the parameters' dtype, not in Python floats).
    :class:`BarlowTwinsLARS` is the form of the official SlotCon code.
    """

    def _scaled_updates(self, params: List[Tensor], group: dict) -> List[Tensor]:
        """``(g + λw) · lr · local_lr`` of each parameter of an adapted group."""
        weight_decay = group['weight_decay']
        weight_norms = torch.stack(torch._foreach_norm(params))
        grad_norms = torch.stack(torch._foreach_norm([p.grad for p in params]))
        trust = group['eta'] * weight_norms / (grad_norms + weight_decay * weight_norms + self.eps)
        adapt = (weight_norms != 0) & (grad_norms != 0)
        scales = (torch.where(adapt, trust, torch.ones_like(trust)) * group['lr']).unbind()
        updates = torch._foreach_add([p.grad for p in params], params, alpha=weight_decay)
        torch._foreach_mul_(updates, scales)
        return updates

    def _momentum(self, params: List[Tensor], updates: List[Tensor],
                  group: dict) -> List[Tensor]:
        """SGD momentum on the updates: ``μ ← m·μ + (1 − dampening)·d`` (``μ = d`` at first),
        the step is ``μ``, or ``d + m·μ`` with Nesterov."""
        fresh = {i for i, p in enumerate(params) if 'momentum_buffer' not in self.state[p]}
        for i in fresh:
            self.state[params[i]]['momentum_buffer'] = updates[i].clone()
        old = [i for i in range(len(params)) if i not in fresh]
        if old:
            buffers = [self.state[params[i]]['momentum_buffer'] for i in old]
            torch._foreach_mul_(buffers, group['momentum'])
            torch._foreach_add_(buffers, [updates[i] for i in old],
                                alpha=1 - group['dampening'])
        buffers = [self.state[p]['momentum_buffer'] for p in params]
        if group['nesterov']:
            return torch._foreach_add(updates, buffers, alpha=group['momentum'])
        return buffers

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group['params'] if p.grad is not None]
            if not params:
                continue
            weight_decay, lr = group['weight_decay'], group['lr']
            if group.get('lars_exclude', False):
                updates = torch._foreach_add([p.grad for p in params], params, alpha=weight_decay)
                torch._foreach_mul_(updates, lr)
            else:
                updates = self._scaled_updates(params, group)
            if group['momentum'] != 0:
                updates = self._momentum(params, updates, group)
            torch._foreach_sub_(params, updates)
        return loss


@OPTIMIZERS.register_module()
class BarlowTwinsLARS(Optimizer):
    """LARS in the form of the Barlow Twins code, which the official SlotCon code uses.

    For a parameter ``w`` of two or more dimensions, with gradient ``g``, weight decay λ, trust
    coefficient η, momentum m and the group's current lr::

        d = g + λw
        q = η‖w‖ / ‖d‖   if ‖w‖ > 0 and ‖d‖ > 0, else 1
        μ ← m·μ + q·d    (μ starts at 0)
        w ← w − lr·μ

    1-D (and 0-D) parameters (BN weights and biases, all biases) take ``d = g`` and ``q = 1``:
    neither weight decay nor adaptation, whatever their group says. Two differences from
    mmpretrain's ``LARS`` (:class:`SyncFreeLARS`): the lr multiplies the momentum buffer when
    the step is taken instead of entering it, so a changing lr (warm-up, cosine) rescales the
    whole accumulated step at once; and the trust ratio divides by ‖g + λw‖, not by
    ‖g‖ + λ‖w‖.

    No host read-backs: the norms of a group come from ``torch._foreach_norm`` and the ratios
    are selected with ``torch.where``; every per-parameter operation is one ``torch._foreach_*``
    call over the group, so a step dispatches a fixed number of operators per group.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        momentum: m.
        weight_decay: λ (of the parameters with two or more dimensions).
        eta: η.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001) -> None:
        for name, value in dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                eta=eta).items():
            if value < 0:
                raise ValueError(f'BarlowTwinsLARS: {name} must be >= 0, got {value}')
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      eta=eta))

    @staticmethod
    def _adapted_updates(params: List[Tensor], weight_decay: float, eta: float) -> List[Tensor]:
        """``q·(g + λw)`` for parameters with two or more dimensions."""
        updates = torch._foreach_add([p.grad for p in params], params, alpha=weight_decay)
        weight_norms = torch.stack(torch._foreach_norm(params))
        update_norms = torch.stack(torch._foreach_norm(updates))
        trust = eta * weight_norms / update_norms
        adapt = (weight_norms > 0) & (update_norms > 0)
        torch._foreach_mul_(updates, torch.where(adapt, trust, torch.ones_like(trust)).unbind())
        return updates

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group['params'] if p.grad is not None]
            if not params:
                continue
            matrices = [p for p in params if p.ndim > 1]
            vectors = [p for p in params if p.ndim <= 1]
            updates = [p.grad for p in vectors]
            if matrices:
                updates += self._adapted_updates(matrices, group['weight_decay'], group['eta'])
            for p in vectors + matrices:
                if 'momentum_buffer' not in self.state[p]:
                    self.state[p]['momentum_buffer'] = torch.zeros_like(p)
            buffers = [self.state[p]['momentum_buffer'] for p in vectors + matrices]
            torch._foreach_mul_(buffers, group['momentum'])
            torch._foreach_add_(buffers, updates)
            torch._foreach_sub_(vectors + matrices, buffers, alpha=group['lr'])
        return loss
