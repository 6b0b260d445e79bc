from .autocast_wrapper import AutocastOptimWrapper
from .frozen_aware_constructor import FrozenAwareOptimWrapperConstructor

__all__ = ['AutocastOptimWrapper', 'FrozenAwareOptimWrapperConstructor']
