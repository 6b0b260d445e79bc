from .block_masks import BlockwisePatchMasks
from .formatting import PackMultiViewInputs
from .loading import ImageLoadError, LoadRGBImage
from .multi_crop import MultiCropWithGeometry
from .photometric import ColorJitter, GaussianBlur, RandomGrayscale
from .query_crops import MultiCropWithQueries

__all__ = [
    'BlockwisePatchMasks', 'ColorJitter', 'GaussianBlur', 'ImageLoadError', 'LoadRGBImage',
    'MultiCropWithGeometry', 'MultiCropWithQueries', 'PackMultiViewInputs', 'RandomGrayscale'
]
