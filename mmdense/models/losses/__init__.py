from .dino_loss import DINOLoss, multicrop_cross_entropy

__all__ = ['DINOLoss', 'multicrop_cross_entropy']
from .slotcon_losses import global_mean, group_loss, kept_slots, slot_contrast_loss  # noqa: E402

__all__ += ['global_mean', 'group_loss', 'kept_slots', 'slot_contrast_loss']
