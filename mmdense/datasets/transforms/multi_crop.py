"""Multi-crop view generation that records each view's crop geometry."""
import math
from typing import List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform, Compose
from mmengine.registry import DefaultScope

from mmdense.models.utils.crop_geometry import boxes_overlap
from mmdense.registry import TRANSFORMS

GLOBAL_CROPS = dict(num=2, size=224, scale=(0.25, 1.0))
LOCAL_CROPS = dict(num=0, size=96, scale=(0.05, 0.25))


def _build_pipeline(transforms: Optional[Sequence[dict]]) -> Compose:
    """Compose transform configs, resolving names (nested ones too) in the mmdense scope."""
    with DefaultScope.overwrite_default_scope('mmdense'):
        return Compose(list(transforms or []))


@TRANSFORMS.register_module()
class MultiCropWithGeometry(BaseTransform):
    """Global and local random-resized crops of one image, with their boxes and flips.

    Each view is a random crop (area fraction in ``scale``, log-uniform aspect ratio in ``ratio``,
    centre-crop fallback after 10 failed draws) resized to its size, flipped horizontally with
    ``flip_prob`` and passed through its photometric pipeline. Crops and flips are drawn from
    ``np.random``, so seeding it (as mmengine does) makes them reproducible.

    Required keys: ``img``. Modified keys: ``img`` (list of views, globals first), ``img_shape``
    (first view's). Added keys: ``crop_boxes`` (V, 4) float32 ``(x1, y1, x2, y2)`` in
    original-image pixels, ``flips`` (V,) bool, and ``ori_shape`` if absent.

    Args:
        global_crops: ``num``, ``size`` (int or ``(h, w)``) and ``scale`` of the global views.
            Missing entries take the defaults ``dict(num=2, size=224, scale=(0.25, 1.0))``.
        local_crops: the same for local views; defaults ``dict(num=0, size=96,
            scale=(0.05, 0.25))``.
        ratio: range of crop aspect ratios (width / height).
        flip_prob: probability of flipping each view horizontally.
        global_pipelines: lists of transform configs for the global views: a single list shared
            by all of them, or one list per global view (asymmetric augmentation).
        local_pipeline: transform configs applied to every local view.
        require_overlap: resample each further global crop, up to ``max_tries`` draws, until it
            overlaps the first global crop; the last draw is kept if none does.
        clean_global_copies: append, after all views, a copy of each global view with the same
            crop and flip but no photometric pipeline (for a teacher that sees un-jittered
            crops, as in CoTAP).
        max_tries: number of draws allowed per crop by ``require_overlap``.
        interpolation: resize interpolation understood by :func:`mmcv.imresize`.
    """

    def __init__(self,
                 global_crops: Optional[dict] = None,
                 local_crops: Optional[dict] = None,
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3),
                 flip_prob: float = 0.5,
                 global_pipelines: Optional[Sequence[Sequence[dict]]] = None,
                 local_pipeline: Optional[Sequence[dict]] = None,
                 require_overlap: bool = False,
                 max_tries: int = 10,
                 clean_global_copies: bool = False,
                 interpolation: str = 'bicubic'):
        self.global_crops = {**GLOBAL_CROPS, **(global_crops or {})}
        self.local_crops = {**LOCAL_CROPS, **(local_crops or {})}
        self.ratio = ratio
        self.flip_prob = flip_prob
        self.require_overlap = require_overlap
        self.max_tries = max_tries
        self.clean_global_copies = clean_global_copies
        self.interpolation = interpolation

        num_globals = self.global_crops['num']
        global_pipelines = global_pipelines or [[]]
        if len(global_pipelines) == 1:
            global_pipelines = list(global_pipelines) * num_globals
        if len(global_pipelines) != num_globals:
            raise ValueError(f'got {len(global_pipelines)} global pipelines for {num_globals} '
                             'global crops: give one shared list or one list per global crop')
        self.global_pipelines = [_build_pipeline(pipeline) for pipeline in global_pipelines]
        self.local_pipeline = _build_pipeline(local_pipeline)

    def _sample_box(self, height: int, width: int, scale: Tuple[float, float]) -> np.ndarray:
        """Draw an ``(x1, y1, x2, y2)`` crop box in the style of RandomResizedCrop."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * np.random.uniform(*scale)
            aspect = math.exp(np.random.uniform(*log_ratio))
            crop_w = int(round(math.sqrt(target_area * aspect)))
            crop_h = int(round(math.sqrt(target_area / aspect)))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                x1 = np.random.randint(0, width - crop_w + 1)
                y1 = np.random.randint(0, height - crop_h + 1)
                return np.array([x1, y1, x1 + crop_w, y1 + crop_h], dtype=np.float32)
        # Fallback: the largest centred crop whose aspect ratio lies in ``ratio``.
        aspect = min(max(width / height, min(self.ratio)), max(self.ratio))
        crop_w = min(width, int(round(height * aspect)))
        crop_h = min(height, int(round(width / aspect)))
        x1, y1 = (width - crop_w) // 2, (height - crop_h) // 2
        return np.array([x1, y1, x1 + crop_w, y1 + crop_h], dtype=np.float32)

    def _sample_global_boxes(self, height: int, width: int) -> List[np.ndarray]:
        scale = self.global_crops['scale']
        boxes = []
        for _ in range(self.global_crops['num']):
            box = self._sample_box(height, width, scale)
            tries = 1
            while (self.require_overlap and boxes and tries < self.max_tries
                   and not boxes_overlap(boxes[0], box)):
                box = self._sample_box(height, width, scale)
                tries += 1
            boxes.append(box)
        return boxes

    def _make_view(self, img: np.ndarray, box: np.ndarray, size: Union[int, Tuple[int, int]],
                   flip: bool, pipeline: Compose) -> np.ndarray:
        out_h, out_w = (size, size) if isinstance(size, int) else size
        x1, y1, x2, y2 = box.astype(int)
        view = mmcv.imresize(img[y1:y2, x1:x2], (out_w, out_h), interpolation=self.interpolation)
        if flip:
            view = np.ascontiguousarray(mmcv.imflip(view, direction='horizontal'))
        return pipeline(dict(img=view, img_shape=view.shape[:2]))['img']

    def transform(self, results: dict) -> dict:
        img = results['img']
        height, width = img.shape[:2]
        boxes = self._sample_global_boxes(height, width)
        sizes = [self.global_crops['size']] * len(boxes)
        pipelines = list(self.global_pipelines)
        for _ in range(self.local_crops['num']):
            boxes.append(self._sample_box(height, width, self.local_crops['scale']))
            sizes.append(self.local_crops['size'])
            pipelines.append(self.local_pipeline)
        flips = np.random.rand(len(boxes)) < self.flip_prob
        if self.clean_global_copies:
            num_globals = self.global_crops['num']
            boxes += boxes[:num_globals]
            sizes += sizes[:num_globals]
            pipelines += [Compose([])] * num_globals
            flips = np.concatenate([flips, flips[:num_globals]])

        views = [
            self._make_view(img, box, size, flip, pipeline)
            for box, size, flip, pipeline in zip(boxes, sizes, flips, pipelines)
        ]
        results.setdefault('ori_shape', (height, width))
        results['img'] = views
        results['img_shape'] = views[0].shape[:2]
        results['crop_boxes'] = np.stack(boxes).astype(np.float32)
        results['flips'] = flips
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(global_crops={self.global_crops}, '
                f'local_crops={self.local_crops}, ratio={self.ratio}, '
                f'flip_prob={self.flip_prob}, require_overlap={self.require_overlap}, '
                f'max_tries={self.max_tries}, clean_global_copies={self.clean_global_copies}, '
                f'interpolation={self.interpolation!r})')
