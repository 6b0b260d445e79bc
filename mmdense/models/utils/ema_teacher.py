import math
from typing import Dict

import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmpretrain.models.utils import CosineEMA


class EMATeacher(CosineEMA):
    """EMA copy of named student modules (e.g. ``backbone``, ``neck``, ``head``).

    ``teacher ← m·teacher + (1 − m)·student`` with the teacher momentum m following a cosine from
    ``momentum`` to ``end_momentum`` over the runner's ``max_iters`` (paper convention: 0.996 → 1).
    The step counter is a buffer, so the schedule resumes exactly. The first update copies the
    student. Drop-path is switched off in the teacher, which only runs without gradient.

    The update is mmpretrain's ``CosineEMA`` rule without its per-parameter host read-back (it
    evaluates the schedule from the step tensor once per parameter: one device synchronisation
    per teacher parameter and step, e.g. 158 for DINO's ViT-S/16 teacher, 273 for DSC's
    ResNet-50 one): the momentum is computed once per step from a host copy of the step counter
    and applied to all parameters with one fused ``lerp``.
    """

    def __init__(self,
                 student: Dict[str, nn.Module],
                 momentum: float = 0.996,
                 end_momentum: float = 1.0,
                 update_buffers: bool = False) -> None:
        if not 0.0 <= momentum <= end_momentum <= 1.0:
            raise ValueError('EMATeacher needs 0 <= momentum <= end_momentum <= 1, got '
                             f'momentum={momentum}, end_momentum={end_momentum}')
        # mmengine's EMA weighs the *student* by its momentum argument: pass 1 − m.
        super().__init__(nn.ModuleDict(student), momentum=1.0 - momentum,
                         end_momentum=1.0 - end_momentum, update_buffers=update_buffers)
        for module in self.module.modules():
            if hasattr(module, 'drop_prob'):
                module.drop_prob = 0.0
        self._host_steps = None  # (value, version of the ``steps`` tensor it was read at)

    @property
    def num_updates(self) -> int:
        """The step counter as a Python int. It is read from the device only after a change
        made elsewhere (loading a checkpoint, a DDP buffer broadcast), which bumps the tensor's
        version counter."""
        if self._host_steps is None or self._host_steps[1] != self.steps._version:
            self._host_steps = (int(self.steps), self.steps._version)
        return self._host_steps[0]

    def student_weight(self, steps: int) -> float:
        """``1 − m`` at ``steps``: the cosine schedule of ``CosineEMA.avg_func``."""
        max_iters = MessageHub.get_current_instance().get_info('max_iters')
        cosine = (math.cos(math.pi * steps / float(max_iters)) + 1) / 2
        return self.end_momentum - (self.end_momentum - self.momentum) * cosine

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        steps = self.num_updates
        source = model.state_dict() if self.update_buffers else dict(model.named_parameters())
        pairs = [(averaged, source[name].detach())
                 for name, averaged in self.avg_parameters.items()]
        if steps == 0:
            torch._foreach_copy_(*map(list, zip(*pairs)))
        elif steps % self.interval == 0:
            floating = [pair for pair in pairs if pair[0].dtype.is_floating_point]
            torch._foreach_lerp_(*map(list, zip(*floating)), self.student_weight(steps))
        buffers = list(zip(self.module.buffers(), model.buffers()))
        if buffers and not self.update_buffers:
            torch._foreach_copy_(*map(list, zip(*buffers)))
        self.steps += 1
        self._host_steps = (steps + 1, self.steps._version)

    def update(self, student: Dict[str, nn.Module]) -> None:
        self.update_parameters(nn.ModuleDict(student))

    def __getitem__(self, name: str) -> nn.Module:
        return self.module[name]
