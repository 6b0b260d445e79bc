from .formatting import PackMultiViewInputs
from .loading import ImageLoadError, LoadRGBImage
from .multi_crop import MultiCropWithGeometry

__all__ = ['ImageLoadError', 'LoadRGBImage', 'MultiCropWithGeometry', 'PackMultiViewInputs']
from .query_crops import MultiCropWithQueries  # noqa: E402

__all__ += ['MultiCropWithQueries']
