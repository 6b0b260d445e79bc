from .autocast_wrapper import AutocastOptimWrapper
from .frozen_aware_constructor import FrozenAwareOptimWrapperConstructor
from .per_param_clip import PerParamClipOptimWrapperConstructor, clip_grad_norm_per_param_
from .sync_free_lars import BarlowTwinsLARS, SyncFreeLARS

__all__ = [
    'AutocastOptimWrapper', 'BarlowTwinsLARS', 'FrozenAwareOptimWrapperConstructor',
    'PerParamClipOptimWrapperConstructor', 'SyncFreeLARS', 'clip_grad_norm_per_param_'
]
