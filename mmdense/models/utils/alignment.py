"""Inverse augmentation: resample dense maps of views onto a common image region."""
from typing import Tuple, Union

import torch
from torch import Tensor
from torchvision.ops import roi_align


def align_to_boxes(maps: Tensor, boxes: Tensor, flips: Tensor,
                   out_size: Union[int, Tuple[int, int]]) -> Tensor:
    """RoI-align each map to its own box and undo the view's horizontal flip.

    Args:
        maps: (B, C, h, w) dense maps of views, as displayed (flipped views stay flipped).
        boxes: (B, 4) ``(x1, y1, x2, y2)`` in [0, 1] in each view's displayed frame, e.g. an
            overlap box from :func:`overlap_in_views`.
        flips: (B,) bool, whether each view was flipped horizontally.
        out_size: output size ``oh`` (square) or ``(oh, ow)``.

    Returns:
        (B, C, oh, ow) maps of the boxed regions in original image orientation, so two views
        aligned to their own overlap boxes match pixel for pixel.
    """
    height, width = maps.shape[-2:]
    scale = maps.new_full((4, ), width)  # (width, height, width, height), filled on the device
    scale[1::2] = height
    batch_index = torch.arange(maps.shape[0], device=maps.device, dtype=maps.dtype)
    rois = torch.cat([batch_index[:, None], boxes.to(maps.dtype) * scale], dim=1)
    aligned = roi_align(maps, rois, output_size=out_size, aligned=True)
    return torch.where(flips.bool()[:, None, None, None], aligned.flip(-1), aligned)
