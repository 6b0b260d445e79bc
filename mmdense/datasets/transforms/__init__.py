from .formatting import PackMultiViewInputs
from .loading import ImageLoadError, LoadRGBImage
from .multi_crop import MultiCropWithGeometry
from .photometric import ColorJitter, GaussianBlur, RandomGrayscale

__all__ = [
    'ColorJitter', 'GaussianBlur', 'ImageLoadError', 'LoadRGBImage', 'MultiCropWithGeometry',
    'PackMultiViewInputs', 'RandomGrayscale'
]
from .query_crops import MultiCropWithQueries  # noqa: E402

__all__ += ['MultiCropWithQueries']
from .block_masks import BlockwisePatchMasks  # noqa: E402

__all__ += ['BlockwisePatchMasks']
