from .dino import DINO, embed_views

__all__ = ['DINO', 'embed_views']
from .slotcon import SlotCon  # noqa: E402

__all__ += ['SlotCon']
