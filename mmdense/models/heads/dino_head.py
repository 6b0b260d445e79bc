import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor

from mmdense.models.losses.precision import fp32_forward
from mmdense.registry import MODELS


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation ``W = g * v / ||v||`` (one row per
    prototype). With ``fix_norm=True`` the scale ``g`` stays 1, so outputs are cosine
    similarities between the (normalised) input and the prototypes."""

    def __init__(self, in_features: int, out_features: int, fix_norm: bool = True) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_g = nn.Parameter(torch.ones(out_features, 1), requires_grad=not fix_norm)
        trunc_normal_(self.weight_v, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_g * F.normalize(self.weight_v, dim=1))


@MODELS.register_module()
class DINOHead(BaseModule):
    """DINO projection head: MLP (GELU) → L2-normalised bottleneck → weight-normalised
    prototype layer ``last_layer``. Works on (B, C) and on (B, N, C) token maps.

    The logits ``last_layer(normalize(mlp(x)))`` are cosine similarities (scaled by the
    prototype norms) that the losses divide by temperatures of 0.04–0.1: the normalisation and
    the prototype layer run in fp32 under autocast (:meth:`prototype_logits`), the MLP in the
    autocast precision.

    Args:
        in_channels: backbone feature dim (2·D when a module concatenates two token streams).
        out_channels: number of prototypes K.
        hidden_channels: MLP width.
        bottleneck_channels: dim of the normalised bottleneck.
        num_layers: number of MLP linear layers (>= 1).
        norm_last_layer: keep the prototype norms fixed at 1 (False for ViT-S in DINO).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 65536,
                 hidden_channels: int = 2048,
                 bottleneck_channels: int = 256,
                 num_layers: int = 3,
                 norm_last_layer: bool = True,
                 init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.)) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        if num_layers < 1:
            raise ValueError(f'DINOHead: num_layers must be >= 1, got {num_layers}')
        dims = [in_channels] + [hidden_channels] * (num_layers - 1) + [bottleneck_channels]
        layers = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last_layer = WeightNormLinear(bottleneck_channels, out_channels, norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.prototype_logits(self.mlp(x))

    @fp32_forward
    def prototype_logits(self, bottleneck: Tensor) -> Tensor:
        """``last_layer(bottleneck / ‖bottleneck‖)``: (..., bottleneck) → (..., K)."""
        return self.last_layer(F.normalize(bottleneck, dim=-1))
