"""Multi-crop views plus the small query crops of ADCLR."""
from typing import Optional, Sequence

import numpy as np

from mmdense.registry import TRANSFORMS
from .multi_crop import MultiCropWithGeometry, _build_pipeline

QUERY_CROPS = dict(num=4, size=96, scale=(0.05, 0.25), flip_prob=0.0)


@TRANSFORMS.register_module()
class MultiCropWithQueries(MultiCropWithGeometry):
    """:class:`MultiCropWithGeometry` followed by Q query crops of the same image.

    Query crops are random-resized crops of the original image like the local views (area
    fraction in ``scale``, same aspect ratios), flipped horizontally with their own
    ``flip_prob`` and resized to ``size``, which should be a multiple of the ViT's patch size
    (96 → 6 × 6 = 36 tokens per crop, 16 → one token). They are drawn after the global and
    local views, so those are the same as :class:`MultiCropWithGeometry` gives for the same
    random state.

    The query crops are appended to ``img`` as its last Q views, so the data preprocessor
    normalises them like every view; ``crop_boxes`` and ``flips`` get their rows too, and
    ``num_queries`` (int) tells the model how many trailing views are queries. Pack it with
    ``PackMultiViewInputs(algorithm_keys=['crop_boxes', 'flips', 'num_queries'])``.

    Args:
        query_crops: ``num`` (>= 1), ``size`` (int or ``(h, w)``), ``scale`` and ``flip_prob``
            of the query crops; missing entries take the defaults ``dict(num=4, size=96,
            scale=(0.05, 0.25), flip_prob=0.0)``: the local crops of the ADCLR authors' public
            code (``configs/adclr/README.md``).
        query_pipeline: transform configs applied to every query crop.
        **kwargs: arguments of :class:`MultiCropWithGeometry`.
    """

    def __init__(self,
                 query_crops: Optional[dict] = None,
                 query_pipeline: Optional[Sequence[dict]] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.query_crops = {**QUERY_CROPS, **(query_crops or {})}
        if not isinstance(self.query_crops['num'], int) or self.query_crops['num'] < 1:
            raise ValueError(f"query_crops['num'] must be an int >= 1, got "
                             f"{self.query_crops['num']!r}")
        self.query_pipeline = _build_pipeline(query_pipeline)

    def transform(self, results: dict) -> dict:
        img = results['img']
        results = super().transform(results)
        height, width = img.shape[:2]
        num, size, scale, flip_prob = (self.query_crops[key]
                                       for key in ('num', 'size', 'scale', 'flip_prob'))
        boxes = np.stack([self._sample_box(height, width, scale) for _ in range(num)])
        flips = np.random.rand(num) < flip_prob
        results['img'] = results['img'] + [
            self._make_view(img, box, size, flip, self.query_pipeline)
            for box, flip in zip(boxes, flips)
        ]
        results['crop_boxes'] = np.concatenate([results['crop_boxes'], boxes])
        results['flips'] = np.concatenate([results['flips'], flips])
        results['num_queries'] = num
        return results

    def __repr__(self) -> str:
        return f'{super().__repr__()[:-1]}, query_crops={self.query_crops})'
