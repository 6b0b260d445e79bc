from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmdense.models.losses.precision import fp32_forward
from mmdense.registry import MODELS


@MODELS.register_module()
class SemanticGrouping(BaseModule):
    """Soft assignment of pixels to K learnable prototypes, pooled into one slot per prototype.

    ``dots[b,k,h,w] = <normalize(proto_k), normalize(x[b,:,h,w])>``,
    ``attn = softmax_k(dots / τ) + eps``,
    ``slots[b,k] = Σ_hw attn[b,k,h,w] · x[b,:,h,w] / Σ_hw attn[b,k,h,w]`` (x not normalised).

    Computed in fp32 under autocast: the scores are divided by τ here and by the group loss's
    temperatures, and decide which slots the slot loss keeps (argmax over prototypes).

    Args:
        num_prototypes: K.
        dim: channels of the projected feature map x (and of the prototypes).
        temp: τ of the pixel-to-prototype softmax (the teacher temperature, 0.07).
        eps: added to the attention so that every slot is a well-defined mean.
    """

    def __init__(self, num_prototypes: int = 256, dim: int = 256, temp: float = 0.07,
                 eps: float = 1e-6, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_prototypes = num_prototypes
        self.dim = dim
        self.temp = temp
        self.eps = eps
        self.prototypes = nn.Embedding(num_prototypes, dim)

    @fp32_forward
    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """x (B, dim, H, W) → slots (B, K, dim), dots (B, K, H, W)."""
        if x.shape[1] != self.dim:
            raise ValueError(f'SemanticGrouping expects {self.dim}-channel maps, got {x.shape[1]}')
        prototypes = F.normalize(self.prototypes.weight, dim=1)
        dots = torch.einsum('kc,bchw->bkhw', prototypes, F.normalize(x, dim=1))
        attn = F.softmax(dots / self.temp, dim=1) + self.eps
        slots = torch.einsum('bchw,bkhw->bkc', x, attn) / attn.sum(dim=(2, 3))[..., None]
        return slots, dots
