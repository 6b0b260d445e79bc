from .dino_head import DINOHead, WeightNormLinear
from .dino_init import DINOInit
from .semantic_grouping import SemanticGrouping

__all__ = ['DINOHead', 'DINOInit', 'SemanticGrouping', 'WeightNormLinear']
