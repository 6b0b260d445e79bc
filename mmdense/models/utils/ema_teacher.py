import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.utils import CosineEMA
from torch import Tensor

# What the teacher does with the BatchNorm running statistics (and any other buffer):
BUFFER_MODES = {
    'copy': "copy the student's buffers after every update (mmpretrain's CosineEMA default)",
    'average': "average the student's buffers like parameters (CosineEMA update_buffers=True)",
    'own': 'keep its own buffers, updated by its own forward passes in train mode (the official '
           'SlotCon and MoCo teachers: only parameters are averaged)',
}


class EMATeacher(CosineEMA):
    """EMA copy of named student modules (e.g. ``backbone``, ``neck``, ``head``).

    ``teacher ← m·teacher + (1 − m)·student`` with the teacher momentum m following a cosine from
    ``momentum`` to ``end_momentum`` over ``schedule_length`` steps (paper convention: 0.996 → 1):
    at update k (counted from 0), ``m_k = m_end − (m_end − m)·(1 + cos(πk/T))/2``
    with T the schedule length, the runner's ``max_iters`` (``TeacherScheduleHook`` calls
    :meth:`set_schedule_length`; a model stepped outside a Runner gives it itself).
    The step counter is a buffer, so the schedule resumes exactly. The first update copies the
    student's parameters (and buffers, unless ``buffers='own'``). Drop-path is switched off in the
    teacher, which only runs without gradient.

    The update is mmpretrain's ``CosineEMA`` rule without its per-parameter host read-back (it
    evaluates the schedule from the step tensor once per parameter: one device synchronisation
    per teacher parameter and step, e.g. 158 for DINO's ViT-S/16 teacher, 273 for DSC's
    ResNet-50 one): the momentum is computed once per step from a host copy of the step counter
    and applied to all parameters with one fused ``lerp``.

    Every update pairs the teacher's and the student's tensors *as they are now*, by name. No
    tensor list is kept between steps: ``Module.to()``/``.double()``/``.half()`` replace buffer
    tensors (and, with ``torch.__future__.set_overwrite_module_params_on_conversion``,
    parameters), so references taken at construction would go stale after the model is moved to
    a GPU or cast (``tests/test_models/test_device_moves.py``).

    Args:
        student: the modules to track, by name.
        momentum / end_momentum: teacher momentum at the first and the last iteration.
        buffers: ``'copy'``, ``'average'`` or ``'own'`` (see ``BUFFER_MODES``).
        schedule_length: T, the number of steps of the schedule; ``None`` until
            :meth:`set_schedule_length` gives it (an update before that is an error).
    """

    def __init__(self,
                 student: Dict[str, nn.Module],
                 momentum: float = 0.996,
                 end_momentum: float = 1.0,
                 buffers: str = 'copy',
                 schedule_length: Optional[int] = None) -> None:
        if not 0.0 <= momentum <= end_momentum <= 1.0:
            raise ValueError('EMATeacher needs 0 <= momentum <= end_momentum <= 1, got '
                             f'momentum={momentum}, end_momentum={end_momentum}')
        if buffers not in BUFFER_MODES:
            raise ValueError(f'EMATeacher buffers must be one of {sorted(BUFFER_MODES)}, got '
                             f'{buffers!r}')
        # mmengine's EMA weighs the *student* by its momentum argument: pass 1 − m.
        super().__init__(nn.ModuleDict(student), momentum=1.0 - momentum,
                         end_momentum=1.0 - end_momentum, update_buffers=buffers == 'average')
        # mmengine keeps references to the teacher's tensors taken here; they go stale when the
        # model is moved or cast, so drop them: every update reads the current tensors instead.
        del self.avg_parameters
        self.buffers_mode = buffers
        self.schedule_length = None
        if schedule_length is not None:
            self.set_schedule_length(schedule_length)
        for module in self.module.modules():
            if hasattr(module, 'drop_prob'):
                module.drop_prob = 0.0
        # (value, version of the ``steps`` tensor it is the value of); ``steps`` is on the CPU here
        self._host_steps = (int(self.steps), self.steps._version)

    def set_schedule_length(self, total_steps: int) -> None:
        """The number of steps T over which the momentum follows its cosine."""
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f'EMATeacher: the schedule length must be a number of steps >= 1, '
                             f'got {total_steps!r}')
        self.schedule_length = total_steps

    @property
    def num_updates(self) -> int:
        """The step counter as a Python int. It is read from the device only after a change
        made elsewhere (loading a checkpoint, a DDP buffer broadcast, ``steps.fill_``), which
        bumps the tensor's version counter; a move or cast (:meth:`_apply`) keeps the value."""
        if self._host_steps[1] != self.steps._version:
            self._host_steps = (int(self.steps), self.steps._version)
        return self._host_steps[0]

    def _apply(self, fn, *args, **kwargs):
        """``Module.to()``/``.cuda()``/``.double()`` replace the ``steps`` tensor by one of the
        same value: keep the host copy (if it was current), so the first step after a move to a
        GPU does not read the counter back."""
        current = self._host_steps[1] == self.steps._version
        out = super()._apply(fn, *args, **kwargs)
        if current:
            self._host_steps = (self._host_steps[0], self.steps._version)
        return out

    def student_weight(self, steps: int) -> float:
        """``1 − m`` at ``steps``: the cosine schedule of ``CosineEMA.avg_func``."""
        cosine = (math.cos(math.pi * steps / float(self.schedule_length)) + 1) / 2
        return self.end_momentum - (self.end_momentum - self.momentum) * cosine

    @staticmethod
    def _pairs(teacher: nn.Module, student: nn.Module,
               kind: str) -> Tuple[List[Tensor], List[Tensor]]:
        """The (teacher, student) tensors of ``kind`` (``'parameters'``/``'buffers'``), matched by
        name as they are now."""
        named = 'named_parameters' if kind == 'parameters' else 'named_buffers'
        source = dict(getattr(student, named)())
        averaged = list(getattr(teacher, named)())
        missing = [name for name, _ in averaged if name not in source]
        if missing:
            raise KeyError(f'EMATeacher: the student has no {kind} {missing[:3]} of the teacher')
        return [t for _, t in averaged], [source[name].detach() for name, _ in averaged]

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self.schedule_length is None:
            raise RuntimeError(
                'EMATeacher: the momentum schedule has no length: call '
                'model.set_teacher_schedule(total_steps) (or EMATeacher.set_schedule_length) '
                'before stepping outside a Runner; under a Runner, TeacherScheduleHook (in '
                "configs/_base_/default_runtime.py's default_hooks) sets it to max_iters")
        steps = self.num_updates
        teacher, student = self._pairs(self.module, model, 'parameters')
        buffers = self._pairs(self.module, model, 'buffers')
        if steps == 0:  # the teacher starts as a copy of the student, buffers included
            torch._foreach_copy_(teacher + buffers[0], student + buffers[1])
        else:
            if self.buffers_mode == 'average':
                # like CosineEMA: integer buffers (num_batches_tracked) keep their first copy
                floating = [(t, s) for t, s in zip(*buffers) if t.dtype.is_floating_point]
                teacher += [t for t, _ in floating]
                student += [s for _, s in floating]
            if steps % self.interval == 0:
                torch._foreach_lerp_(teacher, student, self.student_weight(steps))
            if self.buffers_mode == 'copy' and buffers[0]:
                torch._foreach_copy_(*buffers)
        self.steps += 1
        self._host_steps = (steps + 1, self.steps._version)

    def update(self, student: Dict[str, nn.Module]) -> None:
        self.update_parameters(nn.ModuleDict(student))

    def __getitem__(self, name: str) -> nn.Module:
        return self.module[name]
