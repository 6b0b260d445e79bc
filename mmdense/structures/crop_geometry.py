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
    full_view = torch.cat([region.new_zeros(2), region.new_ones(2)]).expand_as(region)
    overlap_a = torch.where(valid[:, None], _to_view_frame(region, boxes_a, flips_a.bool()),
                            full_view)
    overlap_b = torch.where(valid[:, None], _to_view_frame(region, boxes_b, flips_b.bool()),
                            full_view)
    return overlap_a, overlap_b, valid


def pixel_cells(boxes: Tensor, flips: Tensor, size: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """Where the pixels of an (h, w) feature map of each view lie in the original image.

    Pixels are indexed row-major over the (h, w) map of the view as displayed.

    Args:
        boxes: (B, 4) crop boxes of the views in original-image pixels.
        flips: (B,) bool, whether each view was flipped horizontally.
        size: (h, w) of the feature map.

    Returns:
        ``(centres, cells)``: (B, h·w, 2) ``(x, y)`` centres and (B, h·w, 4) ``(x1, y1, x2, y2)``
        extents of the pixels, in original-image coordinates.
    """
    height, width = size
    boxes = boxes.float()
    edges_x = torch.arange(width + 1, device=boxes.device, dtype=boxes.dtype) / width
    edges_y = torch.arange(height + 1, device=boxes.device, dtype=boxes.dtype) / height
    # displayed column j covers [j, j+1)/w of the view; a flipped view shows it mirrored
    left, right = edges_x[:-1].expand(len(boxes), -1), edges_x[1:].expand(len(boxes), -1)
    flipped = flips.bool()[:, None]
    left, right = torch.where(flipped, 1 - right, left), torch.where(flipped, 1 - left, right)
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    span_x, span_y = (x2 - x1)[:, None], (y2 - y1)[:, None]
    left, right = x1[:, None] + left * span_x, x1[:, None] + right * span_x  # (B, w)
    top, bottom = y1[:, None] + edges_y[:-1] * span_y, y1[:, None] + edges_y[1:] * span_y
    cells = torch.stack([left[:, None, :].expand(-1, height, -1),
                         top[:, :, None].expand(-1, -1, width),
                         right[:, None, :].expand(-1, height, -1),
                         bottom[:, :, None].expand(-1, -1, width)], dim=-1).flatten(1, 2)
    centres = (cells[..., :2] + cells[..., 2:]) / 2
    return centres, cells


def _contains(cells: Tensor, points: Tensor) -> Tensor:
    """(B, n, 4) cells, (B, m, 2) points → (B, n, m) bool: point in the half-open cell."""
    x, y = points[:, None, :, 0], points[:, None, :, 1]
    x1, y1, x2, y2 = (c[..., None] for c in cells.unbind(dim=-1))
    return (x >= x1) & (x < x2) & (y >= y1) & (y < y2)


def geometric_positives(boxes_1: Tensor, flips_1: Tensor, size_1: Tuple[int, int],
                        boxes_2: Tensor, flips_2: Tensor, size_2: Tuple[int, int]) -> Tensor:
    """Cross-view pixel correspondence from the crop geometry.

    Pixel j of view 2 corresponds to pixel i of view 1 when they cover the same image location:
    the centre of either lies inside the other's cell (so a coarse pixel matches every finer
    pixel it contains, and a fine pixel the coarse pixel containing it). Pixels outside the
    views' overlap have none.

    Args:
        boxes_1, boxes_2: (B, 4) crop boxes of the two views in original-image pixels.
        flips_1, flips_2: (B,) bool, whether each view was flipped horizontally.
        size_1, size_2: (h, w) of each view's feature map.

    Returns:
        (B, h1·w1, h2·w2) bool.
    """
    centres_1, cells_1 = pixel_cells(boxes_1, flips_1, size_1)
    centres_2, cells_2 = pixel_cells(boxes_2, flips_2, size_2)
    return _contains(cells_2, centres_1).transpose(1, 2) | _contains(cells_1, centres_2)
