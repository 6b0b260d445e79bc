"""Geometry of the crops (views) of one image, shared by the crop transforms (``datasets``)
and the algorithms that relate views (``models``); it imports neither.

Crop boxes are ``(x1, y1, x2, y2)`` in original-image pixel coordinates with pixel edges at
integers: a box covers ``img[y1:y2, x1:x2]``. Normalised view coordinates run from 0 to 1 across
the view *as displayed*, i.e. after the view's horizontal flip.
"""
from typing import Tuple

import numpy as np
import torch
from torch import Tensor


def intersection_area(box_a: np.ndarray, box_b: np.ndarray) -> float:
    """Area shared by two ``(x1, y1, x2, y2)`` boxes (0 if they are disjoint)."""
    width = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0])
    height = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
    return float(max(width, 0) * max(height, 0))


def _to_view_frame(region: Tensor, boxes: Tensor, flips: Tensor) -> Tensor:
    """Express ``region`` (B, 4), in pixels, in the normalised displayed frame of ``boxes``."""
    origin = boxes[:, :2].repeat(1, 2)
    extent = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    normalised = ((region - origin) / extent).clamp(0, 1)
    x1, y1, x2, y2 = normalised.unbind(1)
    mirrored = torch.stack([1 - x2, y1, 1 - x1, y2], dim=1)
    return torch.where(flips[:, None], mirrored, normalised)


def overlap_in_views(boxes_a: Tensor,
                     flips_a: Tensor,
                     boxes_b: Tensor,
                     flips_b: Tensor,
                     eps: float = 1e-6) -> Tuple[Tensor, Tensor, Tensor]:
    """Intersection of two views' crops, in each view's normalised displayed frame.

    Args:
        boxes_a, boxes_b: (B, 4) crop boxes of the two views in original-image pixels.
        flips_a, flips_b: (B,) bool, whether each view was flipped horizontally.
        eps: minimum side length, in pixels, of an intersection counted as valid.

    Returns:
        ``(overlap_a, overlap_b, valid)``: (B, 4) boxes ``(x1, y1, x2, y2)`` in [0, 1] locating the
        shared region in view a and in view b, and a (B,) bool mask of positive-area overlaps.
        Invalid rows hold the full view ``(0, 0, 1, 1)`` and must be masked by the caller.
    """
    boxes_a, boxes_b = boxes_a.float(), boxes_b.float()
    region = torch.cat([torch.maximum(boxes_a[:, :2], boxes_b[:, :2]),
                        torch.minimum(boxes_a[:, 2:], boxes_b[:, 2:])], dim=1)
    valid = ((region[:, 2:] - region[:, :2]) > eps).all(dim=1)
    full_view = region.new_tensor([0., 0., 1., 1.]).expand_as(region)
    overlap_a = torch.where(valid[:, None], _to_view_frame(region, boxes_a, flips_a.bool()),
                            full_view)
    overlap_b = torch.where(valid[:, None], _to_view_frame(region, boxes_b, flips_b.bool()),
                            full_view)
    return overlap_a, overlap_b, valid
