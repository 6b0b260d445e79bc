from .autocast_wrapper import AutocastOptimWrapper
from .frozen_aware_constructor import FrozenAwareOptimWrapperConstructor
from .sync_free_lars import BarlowTwinsLARS, SyncFreeLARS

__all__ = [
    'AutocastOptimWrapper', 'BarlowTwinsLARS', 'FrozenAwareOptimWrapperConstructor', 'SyncFreeLARS'
]
