from typing import Dict

import torch.nn as nn
from mmpretrain.models.utils import CosineEMA


class EMATeacher(CosineEMA):
    """EMA copy of named student modules (e.g. ``backbone``, ``neck``, ``head``).

    ``teacher ← m·teacher + (1 − m)·student`` with the teacher momentum m following a cosine from
    ``momentum`` to ``end_momentum`` over the runner's ``max_iters`` (paper convention: 0.996 → 1).
    The step counter is a buffer, so the schedule resumes exactly. The first update copies the
    student. Drop-path is switched off in the teacher, which only runs without gradient.
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

    def update(self, student: Dict[str, nn.Module]) -> None:
        self.update_parameters(nn.ModuleDict(student))

    def __getitem__(self, name: str) -> nn.Module:
        return self.module[name]
