from .precision import fp32_forward
from .dino_loss import DINOLoss, multicrop_cross_entropy

__all__ = ['fp32_forward', 'DINOLoss', 'multicrop_cross_entropy']
from .reductions import global_mean, rank_mean  # noqa: E402
from .slot_contrast_loss import SlotContrastLoss, kept_slots, slot_contrast_loss  # noqa: E402
from .slotcon_group_loss import SlotConGroupLoss, group_loss  # noqa: E402

__all__ += ['global_mean', 'rank_mean', 'SlotConGroupLoss', 'group_loss', 'SlotContrastLoss',
            'kept_slots', 'slot_contrast_loss']
from .cotap_loss import (ContinuousAPLoss, cotap_loss, similarity_lists,  # noqa: E402
                         smooth_hinge)
from .sinkhorn_cross_entropy import SinkhornCrossEntropyLoss  # noqa: E402

__all__ += ['ContinuousAPLoss', 'cotap_loss', 'similarity_lists', 'smooth_hinge',
            'SinkhornCrossEntropyLoss']
from .info_nce_with_queue_loss import InfoNCEWithQueueLoss, info_nce_with_queue  # noqa: E402
from .multi_positive_info_nce_loss import (MultiPositiveInfoNCELoss,  # noqa: E402
                                           multi_positive_info_nce)
from .positive_masks import feature_neighbours, per_image_to_batch_mask  # noqa: E402
from .prototype_assignment_loss import (PrototypeAssignmentLoss,  # noqa: E402
                                        prototype_assignment_loss)

__all__ += ['InfoNCEWithQueueLoss', 'info_nce_with_queue', 'MultiPositiveInfoNCELoss',
            'multi_positive_info_nce', 'feature_neighbours', 'per_image_to_batch_mask',
            'PrototypeAssignmentLoss', 'prototype_assignment_loss']
from .ibot_patch_loss import iBOTPatchLoss, masked_patch_cross_entropy  # noqa: E402

__all__ += ['iBOTPatchLoss', 'masked_patch_cross_entropy']
