from .adclr import ADCLR
from .cotap import CoTAP
from .dino import DINO, embed_views
from .dsc import DSC
from .ibot import iBOT
from .pixpro import PixPro
from .slotcon import SlotCon

__all__ = ['ADCLR', 'CoTAP', 'DINO', 'DSC', 'SlotCon', 'embed_views', 'iBOT', 'PixPro']
