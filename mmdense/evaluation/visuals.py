"""Pictures of dense features: PCA-to-RGB, query-point similarity heatmaps, label colouring."""
import colorsys
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def pca_rgb(feats: Tensor) -> np.ndarray:
    """``(N, C, h, w)`` → ``(N, h, w, 3)`` uint8: the first three principal components of all
    patch features (fitted jointly over the batch), each scaled from its 1st-99th percentile
    range to 0-255."""
    n, c, h, w = feats.shape
    x = feats.permute(0, 2, 3, 1).reshape(-1, c).float()
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    proj = x @ v[:3].T
    low, high = torch.quantile(proj, 0.01, dim=0), torch.quantile(proj, 0.99, dim=0)
    proj = ((proj - low) / (high - low).clamp_min(1e-6)).clamp(0, 1)
    return (proj.reshape(n, h, w, 3) * 255).round().byte().numpy()


def similarity_map(feats: Tensor, point: Tuple[float, float]) -> np.ndarray:
    """Cosine similarity ``(h, w)`` of every patch of ``feats (C, h, w)`` to the patch at the
    relative position ``point = (y, x)`` in ``[0, 1]²``."""
    _, h, w = feats.shape
    row, col = min(int(point[0] * h), h - 1), min(int(point[1] * w), w - 1)
    unit = F.normalize(feats.float(), dim=0)
    return torch.einsum('chw,c->hw', unit, unit[:, row, col]).numpy()


def palette(num_colors: int) -> np.ndarray:
    """``(num_colors, 3)`` uint8 RGB colours spread around the hue circle (golden ratio)."""
    hues = (np.arange(num_colors) * 0.618034) % 1.0
    colors = [colorsys.hsv_to_rgb(h, 0.75 if i % 2 else 0.95, 0.95 if i % 3 else 0.7)
              for i, h in enumerate(hues)]
    return (np.array(colors).reshape(-1, 3) * 255).astype(np.uint8)


def colorize(labels: np.ndarray, colors: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Label map ``(H, W)`` → RGB ``(H, W, 3)``; ``ignore_index`` (and any label without a
    colour) is white."""
    out = np.full(labels.shape + (3, ), 255, np.uint8)
    known = (labels >= 0) & (labels < len(colors)) & (labels != ignore_index)
    out[known] = colors[labels[known]]
    return out


def heatmap(values: np.ndarray, size: int,
            point: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """Similarity map → RGB jet image ``size²`` stretched to the map's own min-max (blue: least,
    red: most similar to the query), the query patch marked by a white circle."""
    low, high = values.min(), values.max()
    scaled = ((values - low) / max(high - low, 1e-6) * 255).round().astype(np.uint8)
    image = cv2.applyColorMap(cv2.resize(scaled, (size, size), interpolation=cv2.INTER_NEAREST),
                              cv2.COLORMAP_JET)[..., ::-1].copy()
    if point is not None:
        centre = (int(point[1] * size), int(point[0] * size))
        cv2.circle(image, centre, max(3, size // 40), (255, 255, 255), 2)
    return image


def image_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str],
               size: int) -> np.ndarray:
    """Tile RGB tiles (resized to ``size²``, nearest) into a grid under a row of titles."""
    header_h, gap = 22, 4
    num_cols = len(titles)
    grid = np.full((header_h + len(rows) * (size + gap), num_cols * (size + gap), 3), 255,
                   np.uint8)
    for col, title in enumerate(titles):
        cv2.putText(grid, title, (col * (size + gap) + 4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
    for r, row in enumerate(rows):
        for col, tile in enumerate(row):
            top, left = header_h + r * (size + gap), col * (size + gap)
            grid[top:top + size, left:left + size] = cv2.resize(
                tile, (size, size), interpolation=cv2.INTER_NEAREST)
    return grid
