"""LARS whose layer-wise trust ratios stay on the device."""
import torch
from mmpretrain.engine.optimizers import LARS

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
    with ``torch.where``, so the step never waits on the device. Arguments, state and results
    are those of ``LARS`` (up to float rounding: the ratio is computed in the parameters' dtype,
    not in Python floats).
    """

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
                scales = [lr] * len(params)
            else:
                weight_norms = torch.stack(torch._foreach_norm(params))
                grad_norms = torch.stack(torch._foreach_norm([p.grad for p in params]))
                trust = group['eta'] * weight_norms / (
                    grad_norms + weight_decay * weight_norms + self.eps)
                adapt = (weight_norms != 0) & (grad_norms != 0)
                scales = (torch.where(adapt, trust, torch.ones_like(trust)) * lr).unbind()
            for p, scale in zip(params, scales):
                update = p.grad.add(p, alpha=weight_decay).mul(scale)
                if group['momentum'] != 0:
                    state = self.state[p]
                    if 'momentum_buffer' not in state:
                        buffer = state['momentum_buffer'] = update.clone()
                    else:
                        buffer = state['momentum_buffer']
                        buffer.mul_(group['momentum']).add_(update,
                                                            alpha=1 - group['dampening'])
                    update = update.add(buffer, alpha=group['momentum']) \
                        if group['nesterov'] else buffer
                p.sub_(update)
        return loss
