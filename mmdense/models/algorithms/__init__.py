from .dino import DINO, embed_views

__all__ = ['DINO', 'embed_views']
from .slotcon import SlotCon  # noqa: E402

__all__ += ['SlotCon']
from .dsc import DSC  # noqa: E402

__all__ += ['DSC']
from .adclr import ADCLR  # noqa: E402

__all__ += ['ADCLR']
from .cotap import CoTAP  # noqa: E402

__all__ += ['CoTAP']
from .ibot import iBOT  # noqa: E402

__all__ += ['iBOT']
