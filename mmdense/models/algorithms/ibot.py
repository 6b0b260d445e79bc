from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdense.models.backbones import QueryVisionTransformer
from mmdense.registry import MODELS
from .base import TrainingBatch
from .dino import DINO, embed_views


def view_masks(data_samples: List[DataSample], num_views: int, device: torch.device) -> Tensor:
    """The packed ``masks`` of every sample, (V, B, h, w) bool on ``device``."""
    if data_samples[0].get('masks') is None:
        raise KeyError("'masks' is missing from the data samples: add BlockwisePatchMasks to "
                       "the pipeline and pack 'masks' with PackMultiViewInputs")
    masks = torch.stack([sample.masks for sample in data_samples]).to(device, non_blocking=True)
    if masks.shape[1] != num_views:
        raise ValueError(f"'masks' holds {masks.shape[1]} views per image, the model has "
                         f'{num_views} global views')
    return masks.bool().transpose(0, 1)


@dataclass
class MaskedBatch(TrainingBatch):
    """A batch with the block masks of the global views: ``masks`` (V_g, B, h, w) bool."""
    masks: Optional[Tensor]


@MODELS.register_module()
class iBOT(DINO):
    """iBOT: image BERT pre-training with online tokenizer (Zhou et al., ICLR 2022).

    DINO (its CLS term over every pair of different views, :class:`DINOLoss`) plus a
    masked-image term on the global views: the student sees each global view with a block mask
    (masked patch embeddings replaced by the backbone's mask token), the teacher sees it
    unmasked, and at the masked patches the student's patch outputs match the teacher's
    (:class:`iBOTPatchLoss`, its own centre and teacher temperature τ_p). One head serves the
    CLS and the patch tokens (iBOT's ``--shared_head true``):

    ``L = L_cls + λ · L_mim``,
    ``L_mim = 1/V_g Σ_v 1/B Σ_b [Σ_n m H(softmax((t_{v,b,n} − c_p)/τ_p), s_{v,b,n}) / Σ_n m]``

    with t: the teacher's head output of patch n of global view v of image b, s: the
    student's of the same patch of the masked view. The masks come from the data pipeline
    (:class:`BlockwisePatchMasks`, packed ``masks`` of shape (V_g, h, w) per sample), so the
    step draws nothing on the device.

    Args:
        backbone: :class:`QueryVisionTransformer` with ``mask_token=True`` (no queries used).
        head, loss, **kwargs: as for :class:`DINO` (``loss``: the CLS term).
        patch_loss: :class:`iBOTPatchLoss` config.
        patch_loss_weight: λ.
        teacher_patch_temp: τ_p; :class:`TeacherTempWarmupHook` warms it up with
            ``attributes=('teacher_temp', 'teacher_patch_temp')``.
    """

    def __init__(self,
                 head: dict,
                 loss: dict,
                 patch_loss: dict,
                 patch_loss_weight: float = 1.0,
                 teacher_patch_temp: float = 0.07,
                 **kwargs) -> None:
        super().__init__(head=head, loss=loss, **kwargs)
        if not isinstance(self.backbone, QueryVisionTransformer) or \
                self.backbone.mask_token is None:
            raise TypeError(f'iBOT needs a QueryVisionTransformer backbone with '
                            f'mask_token=True, got {type(self.backbone).__name__}')
        self.patch_loss_module = MODELS.build(patch_loss)
        self.check_channels('patch_loss out_channels', self.patch_loss_module.center.shape[-1],
                            'the head out_channels', self.loss_module.center.shape[-1])
        self.patch_loss_weight = patch_loss_weight
        self.teacher_patch_temp = teacher_patch_temp

    def backbone_keys_new_to_the_method(self) -> set:
        return {'mask_token'}

    def head_on_tokens(self, backbone: QueryVisionTransformer, head, views: List[Tensor],
                       masks: Optional[Tensor]) -> Tensor:
        """Head outputs of all tokens of the V view batches (B, 3, H, W), masked where the
        (V, B, h, w) ``masks`` say: (V, B, 1 + N, K)."""
        tokens = head(backbone.forward_all_tokens(
            torch.cat(views), None if masks is None else masks.flatten(0, 1)))
        return tokens.view(len(views), -1, *tokens.shape[1:])

    def unpack(self, inputs: List[Tensor], data_samples: List[DataSample]) -> MaskedBatch:
        return MaskedBatch(inputs, data_samples,
                           view_masks(data_samples, self.num_global_views, inputs[0].device))

    def encode_teacher(self, batch: MaskedBatch) -> Tensor:
        """(V_g, B, 1 + N, K): every token of the unmasked global views."""
        return self.head_on_tokens(self.teacher['backbone'], self.teacher['head'],
                                   batch.views[:self.num_global_views], None)

    def encode_student(self, batch: MaskedBatch) -> Tuple[Tensor, Tensor]:
        """(V_g, B, 1 + N, K) every token of the masked global views, and (V, B, K) the CLS
        outputs of all views (the local ones through :func:`embed_views`)."""
        num_global = self.num_global_views
        tokens = self.head_on_tokens(self.backbone, self.head, batch.views[:num_global],
                                     batch.masks)
        cls = tokens[:, :, 0]
        if len(batch.views) > num_global:
            cls = torch.cat([cls, embed_views(self.backbone, self.head, batch.views[num_global:])])
        return tokens, cls

    def compute_losses(self, student: Tuple[Tensor, Tensor], teacher: Tensor,
                       batch: MaskedBatch) -> dict:
        student_tokens, student_cls = student
        loss_cls = self.loss_module(student_cls, teacher[:, :, 0], self.teacher_temp)
        loss_mim = self.patch_loss_module(student_tokens[:, :, 1:], teacher[:, :, 1:],
                                          batch.masks, self.teacher_patch_temp)
        return dict(loss_cls=loss_cls, loss_mim=self.patch_loss_weight * loss_mim)
