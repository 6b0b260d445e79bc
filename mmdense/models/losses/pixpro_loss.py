"""PixPro's pixel-to-propagation consistency (Xie et al., CVPR 2021) and its positive pairs."""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdense.registry import MODELS
from mmdense.structures import pixel_cells


@torch.no_grad()
def pixpro_positive_pairs(boxes_1: Tensor, flips_1: Tensor, size_1: Tuple[int, int],
                          boxes_2: Tensor, flips_2: Tensor, size_2: Tuple[int, int],
                          image_shapes: Tensor, threshold: float) -> Tensor:
    """The pixel pairs of two views that PixPro takes as positives.

    Every feature-map pixel is a bin of its view's crop; its centre is mapped back to the
    original image, in coordinates normalised by the image size (x by the width, y by the
    height, as the authors' crop coordinates). Pixel i of view 1 and pixel j of view 2 are
    positives when

    ``‖c_i − c_j‖ / max(d_1, d_2) < T``,

    with ``d_v`` the diagonal of a bin of view v in the same normalised coordinates (official
    ``regression_loss``: ``dist_center / max_bin_diag < pos_ratio``). Flipped views are
    mirrored, so pixels are matched where they show the same image spot.

    Args:
        boxes_1, boxes_2: (B, 4) crop boxes ``(x1, y1, x2, y2)`` in original-image pixels.
        flips_1, flips_2: (B,) bool, whether each view was flipped horizontally.
        size_1, size_2: (h, w) of each view's feature map.
        image_shapes: (B, 2) ``(height, width)`` of the original images.
        threshold: T (0.7 in the paper and the official scripts).

    Returns:
        (B, h1·w1, h2·w2) bool.
    """
    scale = image_shapes.to(boxes_1.dtype).flip(-1).repeat(1, 2)  # (w, h, w, h)
    centres_1, cells_1 = pixel_cells(boxes_1 / scale, flips_1, size_1)
    centres_2, cells_2 = pixel_cells(boxes_2 / scale, flips_2, size_2)
    # every bin of a view has the same extent: take the first one's diagonal, (B,)
    diagonal_1 = (cells_1[:, 0, 2:] - cells_1[:, 0, :2]).norm(dim=-1)
    diagonal_2 = (cells_2[:, 0, 2:] - cells_2[:, 0, :2]).norm(dim=-1)
    distance = (centres_1[:, :, None] - centres_2[:, None]).norm(dim=-1)  # (B, n1, n2)
    return distance / torch.maximum(diagonal_1, diagonal_2)[:, None, None] < threshold


def pixel_consistency(predictions: Tensor, targets: Tensor, positives: Tensor) -> Tensor:
    """``−2 · mean_b [Σ_{(i,j)∈P_b} cos(y_i, x'_j) / (|P_b| + 1e-6)]``.

    Args:
        predictions: (B, C, h1, w1) propagated student features y of one view.
        targets: (B, C, h2, w2) teacher features x' of the other view.
        positives: (B, h1·w1, h2·w2) bool, the positive pairs P_b of each image.

    Returns:
        Scalar; an image without positive pairs contributes 0 to the batch mean.
    """
    predictions = F.normalize(predictions.flatten(2), dim=1)
    targets = F.normalize(targets.flatten(2), dim=1)
    cosine = predictions.transpose(1, 2) @ targets  # (B, n1, n2)
    positives = positives.to(cosine.dtype)
    per_image = (cosine * positives).sum(dim=(1, 2)) / (positives.sum(dim=(1, 2)) + 1e-6)
    return -2 * per_image.mean()


@MODELS.register_module()
class PixProConsistencyLoss(nn.Module):
    """PixPro's pixel-to-propagation consistency between the propagated student features
    ``y`` of one view and the teacher (momentum) features ``x'`` of the other:

    ``L = −2 · mean_b [ Σ_{(i,j)∈P_b} cos(y_i, x'_j) / |P_b| ]``

    ``P_b``: the pixel pairs of image b whose centres, mapped back to the image, lie closer
    than ``threshold`` bin diagonals (:func:`pixpro_positive_pairs`). The mean is over this
    rank's images; DDP averages the gradients over ranks, as the official code.

    Args:
        threshold: T, the largest distance of a positive pair in bin diagonals (0.7).
    """

    def __init__(self, threshold: float = 0.7) -> None:
        super().__init__()
        if threshold <= 0:
            raise ValueError(f'PixProConsistencyLoss: threshold must be positive, got '
                             f'{threshold}')
        self.threshold = threshold

    def positive_pairs(self, boxes: Tensor, flips: Tensor, sizes: Tuple[Tuple[int, int], ...],
                       image_shapes: Tensor) -> Tensor:
        """(B, h1·w1, h2·w2) positives of views 1 and 2, given their (B, 2, 4) boxes, (B, 2)
        flips, feature-map sizes and the (B, 2) image shapes (see :func:`pixpro_positive_pairs`)."""
        return pixpro_positive_pairs(boxes[:, 0], flips[:, 0], sizes[0], boxes[:, 1],
                                     flips[:, 1], sizes[1], image_shapes, self.threshold)

    def forward(self, predictions: Tensor, targets: Tensor, positives: Tensor) -> Tensor:
        return pixel_consistency(predictions, targets, positives)
