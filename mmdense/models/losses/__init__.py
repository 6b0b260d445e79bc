from .cotap_loss import ContinuousAPLoss, cotap_loss, similarity_lists, smooth_hinge
from .dino_loss import DINOLoss, multicrop_cross_entropy
from .ibot_patch_loss import iBOTPatchLoss, masked_patch_cross_entropy
from .info_nce_with_queue_loss import InfoNCEWithQueueLoss, info_nce_with_queue
from .multi_positive_info_nce_loss import MultiPositiveInfoNCELoss, multi_positive_info_nce
from .pixpro_loss import PixProConsistencyLoss
from .positive_masks import feature_neighbours, per_image_to_batch_mask
from .precision import fp32_forward
from .prototype_assignment_loss import PrototypeAssignmentLoss, prototype_assignment_loss
from .reductions import global_mean, rank_mean
from .sinkhorn_cross_entropy import SinkhornCrossEntropyLoss
from .slot_contrast_loss import SlotContrastLoss, kept_slots, slot_contrast_loss
from .slotcon_group_loss import SlotConGroupLoss, group_loss

__all__ = [
    'ContinuousAPLoss', 'DINOLoss', 'InfoNCEWithQueueLoss', 'MultiPositiveInfoNCELoss',
    'PixProConsistencyLoss',
    'PrototypeAssignmentLoss', 'SinkhornCrossEntropyLoss', 'SlotConGroupLoss', 'SlotContrastLoss',
    'cotap_loss', 'feature_neighbours', 'fp32_forward', 'global_mean', 'group_loss',
    'iBOTPatchLoss', 'info_nce_with_queue', 'kept_slots', 'masked_patch_cross_entropy',
    'multi_positive_info_nce', 'multicrop_cross_entropy', 'per_image_to_batch_mask',
    'prototype_assignment_loss', 'rank_mean', 'similarity_lists', 'slot_contrast_loss',
    'smooth_hinge'
]
