"""Multi-crop view generation that records each view's crop geometry."""
import math
from typing import List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform, Compose
from mmengine.registry import DefaultScope
from PIL import Image

from mmdense.registry import TRANSFORMS
from mmdense.structures import intersection_area

GLOBAL_CROPS = dict(num=2, size=224, scale=(0.25, 1.0))
LOCAL_CROPS = dict(num=0, size=96, scale=(0.05, 0.25))
# PIL resampling filters by interpolation name. Except 'nearest', PIL widens the filter by the
# downscaling factor, so downscaled views are antialiased.
PIL_FILTERS = {
    'nearest': Image.Resampling.NEAREST,
    'bilinear': Image.Resampling.BILINEAR,
    'bicubic': Image.Resampling.BICUBIC,
    'area': Image.Resampling.BOX,
    'lanczos': Image.Resampling.LANCZOS,
}


def antialiased_resize(img: np.ndarray, out_w: int, out_h: int,
                       interpolation: str = 'bicubic') -> np.ndarray:
    """Resize ``img`` (H, W) or (H, W, C) to (out_h, out_w[, C]) with PIL's resampling filter.

    PIL stretches the filter by the scale factor when it shrinks an image (a bicubic output pixel
    of an s-times reduction weighs 4·s × 4·s input pixels), so the output averages what it
    shrinks instead of sampling it. This is the resize of torchvision's ``RandomResizedCrop`` on
    PIL images (DINO's, SlotCon's), so a uint8 view equals theirs bit for bit.

    uint8 (H, W, 3) images go through PIL as one RGB image (channel order does not matter: every
    channel is filtered alike); other uint8 images and float32 images (e.g. coordinate maps) are
    resized channel by channel as 8-bit or 32-bit float PIL images, with the same filter.
    Returns a new, writable array of ``img``'s dtype.
    """
    if img.dtype not in (np.uint8, np.float32):
        raise TypeError(f'antialiased_resize needs a uint8 or float32 image, got {img.dtype}')
    resample = PIL_FILTERS[interpolation]
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3:
        return np.array(Image.fromarray(img).resize((out_w, out_h), resample))
    channels = img if img.ndim == 3 else img[..., None]
    resized = np.stack([
        np.asarray(Image.fromarray(np.ascontiguousarray(channels[..., c])).resize(
            (out_w, out_h), resample)) for c in range(channels.shape[2])
    ], axis=2)
    return resized if img.ndim == 3 else resized[..., 0]


def _build_pipeline(transforms: Optional[Sequence[dict]]) -> Compose:
    """Compose transform configs, resolving names (nested ones too) in the mmdense scope."""
    with DefaultScope.overwrite_default_scope('mmdense'):
        return Compose(list(transforms or []))


@TRANSFORMS.register_module()
class MultiCropWithGeometry(BaseTransform):
    """Global and local random-resized crops of one image, with their boxes and flips.

    Each view is a random crop (area fraction in ``scale``, log-uniform aspect ratio in ``ratio``,
    centre-crop fallback after 10 failed draws) resized to its size, flipped horizontally with
    ``flip_prob`` and passed through its photometric pipeline. Resizing is antialiased (see
    ``interpolation``). Crops and flips are drawn from
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
        require_overlap: draw each further global crop, up to ``max_tries`` times, until its
            intersection with the first global crop is positive and at least ``min_overlap``
            times its own target area (drawn area fraction × image area); a draw that does not
            fit the image counts as a try. If none qualifies, one unconditioned crop is drawn.
            With ``min_overlap=0.01`` this is the rule of the official SlotCon code.
        clean_global_copies: append, after all views, a copy of each global view with the same
            crop and flip but no photometric pipeline (for a teacher that sees un-jittered
            crops, as in CoTAP).
        max_tries: number of draws allowed per crop by ``require_overlap``.
        min_overlap: the fraction of a further global crop's area that must lie in the first
            one (``require_overlap``); 0 accepts any positive overlap.
        interpolation: the resampling filter, one of ``PIL_FILTERS``. Every view is resized
            by :func:`antialiased_resize` (PIL's filter, widened when it shrinks), which equals
            torchvision's ``RandomResizedCrop`` on PIL images.
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
                 min_overlap: float = 0.0,
                 clean_global_copies: bool = False,
                 interpolation: str = 'bicubic'):
        self.global_crops = {**GLOBAL_CROPS, **(global_crops or {})}
        self.local_crops = {**LOCAL_CROPS, **(local_crops or {})}
        self.ratio = ratio
        self.flip_prob = flip_prob
        self.require_overlap = require_overlap
        self.max_tries = max_tries
        self.min_overlap = min_overlap
        self.clean_global_copies = clean_global_copies
        self.interpolation = interpolation
        if not 0.0 <= min_overlap <= 1.0:
            raise ValueError(f'MultiCropWithGeometry: min_overlap must lie in [0, 1], got '
                             f'{min_overlap}')
        if interpolation not in PIL_FILTERS:
            raise ValueError(f'MultiCropWithGeometry: interpolation={interpolation!r} is not a '
                             f'PIL resampling filter; use one of {sorted(PIL_FILTERS)}')

        num_globals = self.global_crops['num']
        global_pipelines = global_pipelines or [[]]
        if len(global_pipelines) == 1:
            global_pipelines = list(global_pipelines) * num_globals
        if len(global_pipelines) != num_globals:
            raise ValueError(f'got {len(global_pipelines)} global pipelines for {num_globals} '
                             'global crops: give one shared list or one list per global crop')
        self.global_pipelines = [_build_pipeline(pipeline) for pipeline in global_pipelines]
        self.local_pipeline = _build_pipeline(local_pipeline)

    def _draw_box(self, height: int, width: int,
                  scale: Tuple[float, float]) -> Optional[Tuple[np.ndarray, float]]:
        """One RandomResizedCrop draw: an ``(x1, y1, x2, y2)`` box and its target area (drawn
        area fraction × image area, before rounding), or None if the drawn box does not fit."""
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        target_area = height * width * np.random.uniform(*scale)
        aspect = math.exp(np.random.uniform(*log_ratio))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if not (0 < crop_w <= width and 0 < crop_h <= height):
            return None
        x1 = np.random.randint(0, width - crop_w + 1)
        y1 = np.random.randint(0, height - crop_h + 1)
        return np.array([x1, y1, x1 + crop_w, y1 + crop_h], dtype=np.float32), target_area

    def _sample_box(self, height: int, width: int, scale: Tuple[float, float]) -> np.ndarray:
        """Draw an ``(x1, y1, x2, y2)`` crop box in the style of RandomResizedCrop: up to 10
        draws, then the largest centred crop whose aspect ratio lies in ``ratio``."""
        for _ in range(10):
            drawn = self._draw_box(height, width, scale)
            if drawn is not None:
                return drawn[0]
        aspect = min(max(width / height, min(self.ratio)), max(self.ratio))
        crop_w = min(width, int(round(height * aspect)))
        crop_h = min(height, int(round(width / aspect)))
        x1, y1 = (width - crop_w) // 2, (height - crop_h) // 2
        return np.array([x1, y1, x1 + crop_w, y1 + crop_h], dtype=np.float32)

    def _sample_overlapping_box(self, height: int, width: int, scale: Tuple[float, float],
                                first: np.ndarray) -> np.ndarray:
        """A crop box whose intersection with ``first`` is positive and at least ``min_overlap``
        × its own target area: up to ``max_tries`` draws (a draw that does not fit the image
        counts as one), then one unconditioned :meth:`_sample_box`."""
        for _ in range(self.max_tries):
            drawn = self._draw_box(height, width, scale)
            if drawn is None:
                continue
            box, target_area = drawn
            overlap = intersection_area(first, box)
            if overlap > 0 and overlap >= self.min_overlap * target_area:
                return box
        return self._sample_box(height, width, scale)

    def _sample_global_boxes(self, height: int, width: int) -> List[np.ndarray]:
        scale = self.global_crops['scale']
        boxes = []
        for _ in range(self.global_crops['num']):
            boxes.append(self._sample_overlapping_box(height, width, scale, boxes[0])
                         if self.require_overlap and boxes else
                         self._sample_box(height, width, scale))
        return boxes

    def _make_view(self, img: np.ndarray, box: np.ndarray, size: Union[int, Tuple[int, int]],
                   flip: bool, pipeline: Compose) -> np.ndarray:
        out_h, out_w = (size, size) if isinstance(size, int) else size
        x1, y1, x2, y2 = box.astype(int)
        view = antialiased_resize(img[y1:y2, x1:x2], out_w, out_h, self.interpolation)
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
                f'max_tries={self.max_tries}, min_overlap={self.min_overlap}, '
                f'clean_global_copies={self.clean_global_copies}, '
                f'interpolation={self.interpolation!r})')
