from .dino_head import DINOHead, WeightNormLinear

__all__ = ['DINOHead', 'WeightNormLinear']
