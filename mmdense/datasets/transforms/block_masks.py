"""iBOT's block-wise patch masks for the global views."""
import math
from typing import Sequence, Tuple, Union

import numpy as np

from mmdense.registry import TRANSFORMS

Ratios = Union[float, Sequence[float]]


@TRANSFORMS.register_module()
class BlockwisePatchMasks:
    """One boolean patch mask per global view, drawn as iBOT's ``ImageFolderMask`` draws them.

    For each of the first ``num_views`` views (h × w patches of ``patch_size`` px):

    1. a masking ratio r: for each pair (r_i, δ_i) of ``pred_ratio`` and ``pred_ratio_var``,
       r_i' ~ U(r_i − δ_i, r_i + δ_i) (r_i when δ_i = 0), and r is one of the r_i' at random;
       with iBOT's recipe (``(0, 0.3)``, ``(0, 0.2)``) half the views are not masked at all;
    2. blocks (BEiT's generator) until at least r·h·w patches are masked: area
       U(⌊min(h, w)/3⌋², remaining), aspect ratio log-uniform in ``pred_aspect_ratio``, a block
       kept if it fits strictly inside the grid and masks between 1 and ``remaining`` new
       patches; up to 10 tries per block, and the view stops when none is kept.

    Adds ``masks``: (num_views, h, w) bool, True where the student's patch is masked. Pack it
    with ``PackMultiViewInputs(algorithm_keys=[..., 'masks'])``.

    Args:
        num_views: the leading views that get a mask (the global views), all of one size.
        patch_size: the ViT's patch size in px.
        pred_ratio / pred_ratio_var: the masking ratios and their half-ranges.
        pred_aspect_ratio: (min, max) aspect ratio of a block.
    """

    def __init__(self,
                 num_views: int = 2,
                 patch_size: int = 16,
                 pred_ratio: Ratios = (0.0, 0.3),
                 pred_ratio_var: Ratios = (0.0, 0.2),
                 pred_aspect_ratio: Tuple[float, float] = (0.3, 1 / 0.3)) -> None:
        ratios = np.atleast_1d(np.asarray(pred_ratio, dtype=float))
        spreads = np.broadcast_to(np.asarray(pred_ratio_var, dtype=float), ratios.shape)
        if (spreads > ratios).any() or (ratios + spreads > 1).any() or (spreads < 0).any():
            raise ValueError(f'BlockwisePatchMasks: pred_ratio={pred_ratio} and pred_ratio_var='
                             f'{pred_ratio_var} must give ranges within [0, 1]')
        self.num_views = num_views
        self.patch_size = patch_size
        self.ratios, self.spreads = ratios, np.array(spreads)
        self.log_aspect_ratio = tuple(math.log(a) for a in pred_aspect_ratio)

    def draw_ratio(self) -> float:
        drawn = [np.random.uniform(r - d, r + d) if d > 0 else r
                 for r, d in zip(self.ratios, self.spreads)]
        return float(drawn[np.random.randint(len(drawn))])

    def block_mask(self, height: int, width: int, ratio: float) -> np.ndarray:
        """One (height, width) bool mask with at least ``ratio``·height·width patches in
        blocks (step 2 of the class docstring)."""
        mask = np.zeros((height, width), dtype=bool)
        goal, count = ratio * height * width, 0
        min_area = (min(height, width) // 3)**2
        while count < goal:
            remaining, added = goal - count, 0
            for _ in range(10):
                area = np.random.uniform(min_area, remaining)
                aspect = math.exp(np.random.uniform(*self.log_aspect_ratio))
                h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
                if w < width and h < height:
                    top = np.random.randint(0, height - h + 1)
                    left = np.random.randint(0, width - w + 1)
                    new = h * w - mask[top:top + h, left:left + w].sum()
                    if 0 < new <= remaining:
                        mask[top:top + h, left:left + w] = True
                        added = new
                if added > 0:
                    break
            if added == 0:
                break
            count += added
        return mask

    def transform(self, results: dict) -> dict:
        views = results['img'][:self.num_views]
        sizes = {view.shape[:2] for view in views}
        if len(views) < self.num_views or len(sizes) != 1:
            raise ValueError(f'BlockwisePatchMasks: needs {self.num_views} leading views of '
                             f'one size, got sizes {[v.shape[:2] for v in views]}')
        height, width = (s // self.patch_size for s in sizes.pop())
        results['masks'] = np.stack([self.block_mask(height, width, self.draw_ratio())
                                     for _ in range(self.num_views)])
        return results

    def __call__(self, results: dict) -> dict:
        return self.transform(results)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_views={self.num_views}, patch_size={self.patch_size}, '
                f'pred_ratio={self.ratios.tolist()}, pred_ratio_var={self.spreads.tolist()})')
