"""Stop training on NaN/Inf losses; count the steps skipped by an AMP loss scaler."""
import logging
import math
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdense.registry import HOOKS


def non_finite_terms(outputs: Optional[dict]) -> dict:
    """The entries of a train step's log variables whose value is NaN or ±Inf."""
    bad = {}
    for name, value in (outputs or {}).items():
        if isinstance(value, torch.Tensor):
            if value.numel() and not bool(torch.isfinite(value.detach()).all()):
                bad[name] = value.detach().float().flatten()[0].item() if value.numel() == 1 \
                    else 'non-finite elements'
        elif isinstance(value, (int, float)) and not math.isfinite(value):
            bad[name] = value
    return bad


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stops training when a logged loss term becomes NaN or infinite.

    After every train iteration each entry of the step's log variables (``loss`` and every
    ``loss_*`` term the model returns) is checked; the first non-finite one raises
    ``FloatingPointError`` naming the terms, their values and the (1-based) iteration.

    With mixed precision (an optim wrapper with a ``loss_scaler``, e.g. ``AmpOptimWrapper``),
    overflowing fp16 steps are expected: the scaler skips them and lowers its scale. The hook
    then does not raise; it counts the skipped steps in the message hub as
    ``train/amp_skipped_steps`` and logs a warning for each.
    """

    priority = 'HIGH'

    def __init__(self) -> None:
        self.amp_skipped_steps = 0
        self._scale_before = None

    @staticmethod
    def _loss_scaler(runner):
        return getattr(runner.optim_wrapper, 'loss_scaler', None)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        scaler = self._loss_scaler(runner)
        self._scale_before = scaler.get_scale() if scaler is not None else None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        bad = non_finite_terms(outputs)
        scaler = self._loss_scaler(runner)
        if scaler is not None:
            if self._scale_before is not None and scaler.get_scale() < self._scale_before:
                self.amp_skipped_steps += 1
                print_log(f'AMP: iteration {runner.iter + 1} skipped by the loss scaler '
                          f'(non-finite terms: {bad or "gradients only"}; scale now '
                          f'{scaler.get_scale()}; {self.amp_skipped_steps} skipped so far)',
                          logger='current', level=logging.WARNING)
            runner.message_hub.update_scalar('train/amp_skipped_steps', self.amp_skipped_steps)
            return
        if bad:
            terms = ', '.join(f'{name}={value}' for name, value in bad.items())
            raise FloatingPointError(
                f'non-finite loss at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): '
                f'{terms}. Training stopped; lower the learning rate, enable gradient clipping '
                'or check the data of this batch.')
