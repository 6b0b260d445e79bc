from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdense.registry import HOOKS


@HOOKS.register_module()
class FreezeLastLayerHook(Hook):
    """Keep the parameters under ``module_prefixes`` (e.g. the DINO head's prototype layer)
    fixed during the first ``freeze_epochs`` (or ``freeze_iters``).

    Their gradients are dropped right before every optimizer step (after backward, gradient
    all-reduce and clipping), so the optimizer skips them entirely (no momentum, no weight
    decay), as in DINO.
    """

    def __init__(self,
                 module_prefixes: Sequence[str] = ('head.last_layer', ),
                 freeze_epochs: Optional[float] = 1,
                 freeze_iters: Optional[int] = None) -> None:
        if freeze_iters is not None:
            freeze_epochs = None
        if freeze_epochs is None and freeze_iters is None:
            raise ValueError('FreezeLastLayerHook: give freeze_epochs or freeze_iters')
        self.module_prefixes = tuple(module_prefixes)
        self.freeze_epochs, self.freeze_iters = freeze_epochs, freeze_iters

    def before_train(self, runner) -> None:
        if self.freeze_iters is None:
            self.freeze_iters = int(round(self.freeze_epochs * len(runner.train_dataloader)))
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._params = [
            p for name, p in model.named_parameters()
            if any(name == prefix or name.startswith(prefix + '.')
                   for prefix in self.module_prefixes)
        ]
        if not self._params:
            raise ValueError(f'FreezeLastLayerHook: no parameter of {type(model).__name__} '
                             f'starts with {self.module_prefixes}')
        self._runner = runner
        optimizer = runner.optim_wrapper.optimizer
        self._handle = optimizer.register_step_pre_hook(self._drop_gradients)

    def _drop_gradients(self, optimizer, args, kwargs) -> None:
        if self._runner.iter < self.freeze_iters:
            for param in self._params:
                param.grad = None

    def after_train(self, runner) -> None:
        self._handle.remove()
