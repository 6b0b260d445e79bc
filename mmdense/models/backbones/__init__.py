from .object_aware_vit import ObjectAwareFilterLayer, ObjectAwareViT
from .query_vit import QueryVisionTransformer
from .vit_cp import VisionTransformerCP

__all__ = [
    'ObjectAwareFilterLayer', 'ObjectAwareViT', 'QueryVisionTransformer', 'VisionTransformerCP'
]
