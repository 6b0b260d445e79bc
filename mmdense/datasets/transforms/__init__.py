from .formatting import PackMultiViewInputs
from .loading import ImageLoadError, LoadRGBImage
from .multi_crop import MultiCropWithGeometry

__all__ = ['ImageLoadError', 'LoadRGBImage', 'MultiCropWithGeometry', 'PackMultiViewInputs']
