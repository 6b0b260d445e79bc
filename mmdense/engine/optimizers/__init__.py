from .autocast_wrapper import AutocastOptimWrapper
from .frozen_aware_constructor import FrozenAwareOptimWrapperConstructor
from .sync_free_lars import BarlowTwinsLARS, SyncFreeLARS

__all__ = [
    'AutocastOptimWrapper', 'BarlowTwinsLARS', 'FrozenAwareOptimWrapperConstructor', 'SyncFreeLARS'
]
from .per_param_clip import (PerParamClipOptimWrapperConstructor,  # noqa: E402
                             clip_grad_norm_per_param_)

__all__ += ['PerParamClipOptimWrapperConstructor', 'clip_grad_norm_per_param_']
