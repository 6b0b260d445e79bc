from .slotcon_necks import ConvMLPProjector, SlotPredictor

__all__ = ['ConvMLPProjector', 'SlotPredictor']
