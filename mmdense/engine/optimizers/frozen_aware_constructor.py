from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from mmdense.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FrozenAwareOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor that passes over sub-modules with no trainable parameter
    (the EMA teacher) as a whole, instead of logging one "requires_grad=False" warning per
    parameter. Which parameters are optimised, and with which settings, is unchanged."""

    def add_params(self, params: list, module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        if prefix and not any(p.requires_grad for p in module.parameters()):
            return
        super().add_params(params, module, prefix=prefix, is_dcn_module=is_dcn_module)
