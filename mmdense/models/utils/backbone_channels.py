"""Channels of a backbone's output, for build-time checks of the modules that follow it."""
from typing import Optional

import torch.nn as nn


def last_output_channels(backbone: nn.Module) -> Optional[int]:
    """Channels of the last feature map ``backbone`` returns, or None when they cannot be told
    without a forward pass.

    mmpretrain's ResNet family returns the stages in ``out_indices``, the last one being the
    highest index; its ``feat_dim`` is the channels of the *final* stage whatever
    ``out_indices`` says, so it is used only for other backbones.
    """
    stages = getattr(backbone, 'res_layers', None)
    out_indices = getattr(backbone, 'out_indices', None)
    if stages and out_indices:
        last_stage = getattr(backbone, stages[max(out_indices)])
        return last_stage[-1].out_channels
    return getattr(backbone, 'feat_dim', None)
