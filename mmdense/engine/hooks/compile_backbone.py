from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdense.registry import HOOKS


@HOOKS.register_module()
class CompileBackboneHook(Hook):
    """``torch.compile`` the student backbone before training (``fast_path.compile``).

    The backbone is compiled in place (``nn.Module.compile``): its parameters keep their names
    and objects, so the optimizer, the EMA teacher's name-by-name update and checkpoints are
    unaffected (a ``torch.compile`` wrapper would prefix every name with ``_orig_mod.``). The
    teacher stays eager. The first iterations include the compilation.

    Args:
        **compile_kwargs: ``torch.compile`` arguments (``mode``, ``dynamic``, ``backend``...).
    """
    priority = 'LOW'

    def __init__(self, **compile_kwargs) -> None:
        self.compile_kwargs = compile_kwargs

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        model.backbone.compile(**self.compile_kwargs)
