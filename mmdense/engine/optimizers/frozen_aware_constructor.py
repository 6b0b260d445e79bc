from typing import List

from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from mmdense.registry import OPTIM_WRAPPER_CONSTRUCTORS


def merge_equal_groups(groups: List[dict]) -> List[dict]:
    """The parameter groups with their settings (every key but ``params``) equal merged into
    one, in the order each setting first appears, parameters in their original order.

    mmengine's constructor makes one group per parameter whenever ``paramwise_cfg`` is given
    (e.g. 158 for a ViT-S/16 with decay off for norms and biases); torch's ``foreach``
    optimizers fuse only within a group, so one group per parameter costs one kernel launch per
    operator and parameter. Merged, a step launches a few per distinct setting. Each parameter
    keeps its settings, so the updates are unchanged."""
    merged = {}
    for group in groups:
        settings = tuple(sorted((k, v) for k, v in group.items() if k != 'params'))
        if settings not in merged:
            merged[settings] = dict(group, params=[])
        merged[settings]['params'].extend(group['params'])
    return list(merged.values())


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FrozenAwareOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor that passes over sub-modules with no trainable parameter
    (the EMA teacher) as a whole, instead of logging one "requires_grad=False" warning per
    parameter, and merges the parameter groups of equal settings (:func:`merge_equal_groups`).
    Which parameters are optimised, and with which settings, is unchanged."""

    def add_params(self, params: list, module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        if prefix and not any(p.requires_grad for p in module.parameters()):
            return
        super().add_params(params, module, prefix=prefix, is_dcn_module=is_dcn_module)
        if not prefix:  # the top-level call: every group is in
            params[:] = merge_equal_groups(params)
