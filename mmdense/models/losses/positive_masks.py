"""Positive sets of DSC's pixel contrast, as boolean masks between queries and keys."""
import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import fp32_forward


@torch.no_grad()
@fp32_forward
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
