from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdense.models.algorithms.base import TeacherStudentSelfSupervisor
from mmdense.registry import HOOKS


@HOOKS.register_module()
class TeacherScheduleHook(Hook):
    """Gives the EMA teacher's momentum schedule its length: ``runner.max_iters`` (an
    epoch-based loop counts ``max_epochs × iterations per epoch``), before training starts or
    resumes. Models without an EMA teacher are left alone.

    Every config gets it from ``configs/_base_/default_runtime.py``'s ``default_hooks``
    (``teacher_schedule``); a model stepped outside a Runner calls
    ``model.set_teacher_schedule(total_steps)`` itself (tests/test_models/test_ema_teacher.py).
    """

    priority = 'VERY_HIGH'  # before any hook that might run a training step

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if isinstance(model, TeacherStudentSelfSupervisor):
            model.set_teacher_schedule(runner.max_iters)
