"""DSC losses and the pixel-level positive sets they use.

Pixels are indexed row-major over a view's (h, w) feature map. Crop boxes are ``(x1, y1, x2, y2)``
in original-image pixels; a flipped view is displayed mirrored (see ``crop_geometry``).
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .slotcon_losses import global_mean


def info_nce_with_queue(queries: Tensor, keys: Tensor, queue: Tensor, temp: float) -> Tensor:
    """MoCo InfoNCE: each query's positive is its own key, the negatives are the queue.

    With unit vectors ``q_b``, ``k_b`` and queue entries ``n_m``:
    ``L = mean_b −log( exp(q_b·k_b/τ) / (exp(q_b·k_b/τ) + Σ_m exp(q_b·n_m/τ)) )``.

    Args:
        queries: (B, D) embeddings (normalised here).
        keys: (B, D) embeddings of the other view, without gradient (normalised here).
        queue: (L, D) unit negatives.
        temp: τ.
    """
    queries = F.normalize(queries.float(), dim=1)
    keys = F.normalize(keys.detach().float(), dim=1)
    positive = (queries * keys).sum(dim=1, keepdim=True)
    negatives = queries @ queue.detach().float().t()
    logits = torch.cat([positive, negatives], dim=1) / temp
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long,
                                               device=logits.device))


def multi_positive_info_nce(queries: Tensor, keys: Tensor, positive_mask: Tensor,
                            temp: float) -> Tensor:
    """InfoNCE with a set of positives per query (the supervised-contrastive "outside" form).

    With unit vectors ``q_i``, ``k_j``, logits ``z_ij = q_i·k_j/τ`` and positives ``P(i)``:
    ``L = mean_{i: P(i)≠∅} −1/|P(i)| Σ_{p∈P(i)} log( exp(z_ip) / Σ_j exp(z_ij) )``,
    the mean taken over the queries of all ranks (:func:`global_mean`); queries without a
    positive are left out.

    Args:
        queries: (N, D) embeddings (normalised here).
        keys: (M, D) embeddings, without gradient (normalised here).
        positive_mask: (N, M) bool, ``positive_mask[i, j]`` iff key j is a positive of query i.
        temp: τ.
    """
    queries = F.normalize(queries.float(), dim=1)
    keys = F.normalize(keys.detach().float(), dim=1)
    log_probs = F.log_softmax(queries @ keys.t() / temp, dim=1)
    positive_mask = positive_mask.to(log_probs.dtype)
    num_positives = positive_mask.sum(dim=1)
    has_positive = num_positives > 0
    per_query = -(log_probs * positive_mask).sum(dim=1) / num_positives.clamp(min=1)
    return global_mean(per_query[has_positive].sum(), has_positive.sum())


def pixel_cells(boxes: Tensor, flips: Tensor, size: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """Where the pixels of an (h, w) feature map of each view lie in the original image.

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
    """Cross-view correspondence from the crop geometry.

    Pixel j of view 2 is a positive of pixel i of view 1 when they cover the same image
    location: the centre of either lies inside the other's cell (so a coarse pixel matches every
    finer pixel it contains, and a fine pixel the coarse pixel containing it). Pixels outside
    the views' overlap have none.

    Returns:
        (B, h1·w1, h2·w2) bool.
    """
    centres_1, cells_1 = pixel_cells(boxes_1, flips_1, size_1)
    centres_2, cells_2 = pixel_cells(boxes_2, flips_2, size_2)
    return _contains(cells_2, centres_1).transpose(1, 2) | _contains(cells_1, centres_2)


@torch.no_grad()
def feature_neighbours(pixels_1: Tensor, pixels_2: Tensor, k: int) -> Tensor:
    """The k pixels of view 2 most similar (cosine) to each pixel of view 1, per image.

    Args:
        pixels_1, pixels_2: (B, n1, D) and (B, n2, D) embeddings of the two views.
        k: neighbours per pixel (at most n2).

    Returns:
        (B, n1, n2) bool.
    """
    similarity = F.normalize(pixels_1.float(), dim=-1) @ F.normalize(pixels_2.float(),
                                                                     dim=-1).transpose(1, 2)
    nearest = similarity.topk(k, dim=-1).indices
    return torch.zeros_like(similarity, dtype=torch.bool).scatter_(-1, nearest, True)


def per_image_to_batch_mask(per_image: Tensor, num_key_images: int, first_image: int) -> Tensor:
    """Spread per-image positives over the keys of a whole (gathered) batch.

    Args:
        per_image: (B, n, m) bool positives between the queries and keys of each image.
        num_key_images: images whose m keys each are concatenated as the keys (all ranks).
        first_image: index among them of this rank's first image.

    Returns:
        (B·n, num_key_images·m) bool; keys of other images are never positives.
    """
    batch_size, num_queries, num_keys = per_image.shape
    mask = per_image.new_zeros(batch_size, num_queries, num_key_images, num_keys)
    images = torch.arange(batch_size, device=per_image.device)
    mask[images, :, first_image + images, :] = per_image
    return mask.flatten(0, 1).flatten(1, 2)


def prototype_assignment_loss(pixels: Tensor, prototypes: Tensor, codes: Tensor,
                              temp: float) -> Tensor:
    """Cross-entropy between balanced codes and the pixels' softmax over the prototypes.

    With unit pixels ``z_i``, unit prototypes ``c_k`` and Sinkhorn codes ``Q`` (rows sum to 1):
    ``L = mean_i −Σ_k Q_ik · log softmax_k(z_i·c_k/τ)`` (mean over the pixels of all ranks,
    which hold equally many).

    Args:
        pixels: (N, D) student embeddings.
        prototypes: (K, D) learnable prototypes (normalised here).
        codes: (N, K) targets, without gradient.
        temp: τ.
    """
    logits = F.normalize(pixels.float(), dim=1) @ F.normalize(prototypes.float(), dim=1).t()
    return -(codes.detach() * F.log_softmax(logits / temp, dim=1)).sum(dim=1).mean()
