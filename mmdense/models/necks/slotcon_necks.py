"""Projection and prediction MLPs of SlotCon."""
from collections import OrderedDict

import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from mmdense.registry import MODELS

TRUNC_NORMAL_INIT = dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=0.02, bias=0.)


def _three_layer_mlp(in_channels: int, hidden_channels: int, out_channels: int, linear: type,
                     norm: type) -> nn.Sequential:
    """``linear → norm → GELU → linear → norm → GELU → linear``, its layers named ``fc1``,
    ``bn1``, ``act1``, ``fc2``, ``bn2``, ``act2``, ``fc3``."""
    return nn.Sequential(OrderedDict([
        ('fc1', linear(in_channels, hidden_channels)),
        ('bn1', norm(hidden_channels)),
        ('act1', nn.GELU()),
        ('fc2', linear(hidden_channels, hidden_channels)),
        ('bn2', norm(hidden_channels)),
        ('act2', nn.GELU()),
        ('fc3', linear(hidden_channels, out_channels)),
    ]))


def _conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


@MODELS.register_module()
class ConvMLPProjector(BaseModule):
    """Dense projector: a 3-layer MLP applied to every pixel as 1×1 convolutions.

    ``C → hidden (BN, GELU) → hidden (BN, GELU) → out``; weights trunc-normal (std .02), biases
    zero. Input (B, C, H, W) or a tuple of backbone outputs (the last one is used); output
    (B, out_channels, H, W).
    """

    def __init__(self,
                 in_channels: int,
                 hidden_channels: int = 4096,
                 out_channels: int = 256,
                 init_cfg: dict = TRUNC_NORMAL_INIT) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mlp = _three_layer_mlp(in_channels, hidden_channels, out_channels, _conv1x1,
                                    nn.BatchNorm2d)

    def forward(self, x) -> Tensor:
        if isinstance(x, (tuple, list)):
            x = x[-1]
        return self.mlp(x)


@MODELS.register_module()
class SlotPredictor(BaseModule):
    """Slot predictor: ``C → hidden (BN, GELU) → hidden (BN, GELU) → out`` on (N, C) vectors."""

    def __init__(self,
                 in_channels: int = 256,
                 hidden_channels: int = 4096,
                 out_channels: int = 256,
                 init_cfg: dict = TRUNC_NORMAL_INIT) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mlp = _three_layer_mlp(in_channels, hidden_channels, out_channels, nn.Linear,
                                    nn.BatchNorm1d)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)
