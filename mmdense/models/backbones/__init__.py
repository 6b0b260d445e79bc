__all__ = []
from .vit_cp import VisionTransformerCP  # noqa: E402

__all__ += ['VisionTransformerCP']
from .object_aware_vit import ObjectAwareFilterLayer, ObjectAwareViT  # noqa: E402

__all__ += ['ObjectAwareFilterLayer', 'ObjectAwareViT']
from .query_vit import QueryVisionTransformer  # noqa: E402

__all__ += ['QueryVisionTransformer']
