from .dino_loss import DINOLoss, multicrop_cross_entropy

__all__ = ['DINOLoss', 'multicrop_cross_entropy']
from .slotcon_losses import global_mean, group_loss, kept_slots, slot_contrast_loss  # noqa: E402

__all__ += ['global_mean', 'group_loss', 'kept_slots', 'slot_contrast_loss']
from .cotap_loss import cotap_loss, smooth_hinge  # noqa: E402

__all__ += ['cotap_loss', 'smooth_hinge']
from .dsc_losses import (feature_neighbours, geometric_positives, info_nce_with_queue,  # noqa: E402
                         multi_positive_info_nce, per_image_to_batch_mask, pixel_cells,
                         prototype_assignment_loss)

__all__ += ['feature_neighbours', 'geometric_positives', 'info_nce_with_queue',
            'multi_positive_info_nce', 'per_image_to_batch_mask', 'pixel_cells',
            'prototype_assignment_loss']
