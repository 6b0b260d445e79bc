from .dino_head import DINOHead, WeightNormLinear

__all__ = ['DINOHead', 'WeightNormLinear']
from .semantic_grouping import SemanticGrouping  # noqa: E402

__all__ += ['SemanticGrouping']
