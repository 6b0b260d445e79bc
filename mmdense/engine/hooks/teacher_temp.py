from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdense.registry import HOOKS


@HOOKS.register_module()
class TeacherTempWarmupHook(Hook):
    """Linear teacher-temperature warm-up: ``τ_t`` goes from ``start`` to ``end`` over the
    first ``warmup_epochs`` (or ``warmup_iters``) and stays at ``end`` afterwards.

    The value is recomputed from the runner's iteration before every step and written to the
    model attributes named in ``attributes`` (e.g. ``teacher_temp``), so resuming is exact.
    """

    priority = 'NORMAL'

    def __init__(self,
                 start: float = 0.04,
                 end: float = 0.07,
                 warmup_epochs: Optional[float] = None,
                 warmup_iters: Optional[int] = None,
                 attributes: Sequence[str] = ('teacher_temp', )) -> None:
        if (warmup_epochs is None) == (warmup_iters is None):
            raise ValueError('TeacherTempWarmupHook: give exactly one of warmup_epochs and '
                             'warmup_iters')
        self.start, self.end = start, end
        self.warmup_epochs, self.warmup_iters = warmup_epochs, warmup_iters
        self.attributes = tuple(attributes)

    def before_train(self, runner) -> None:
        if self.warmup_iters is None:
            self.warmup_iters = int(round(self.warmup_epochs * len(runner.train_dataloader)))
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        missing = [a for a in self.attributes if not hasattr(model, a)]
        if missing:
            raise AttributeError(f'TeacherTempWarmupHook: {type(model).__name__} has no '
                                 f'attribute(s) {missing}')
        self._model = model

    def value_at(self, iteration: int) -> float:
        if self.warmup_iters <= 0 or iteration >= self.warmup_iters:
            return self.end
        return self.start + (self.end - self.start) * iteration / self.warmup_iters

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        value = self.value_at(runner.iter)
        for name in self.attributes:
            setattr(self._model, name, value)
        runner.message_hub.update_scalar('train/teacher_temp', value)
