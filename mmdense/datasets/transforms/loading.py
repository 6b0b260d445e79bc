"""Robust image loading for unlabeled pretraining data."""
import io
from typing import Optional

import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image, ImageOps, UnidentifiedImageError

from mmdense.registry import TRANSFORMS

_SIXTEEN_BIT_MODES = ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N')


class ImageLoadError(OSError):
    """An image file could not be read or decoded."""


class UnsupportedImageError(ValueError):
    """A decodable image whose pixels have no defined conversion to 8-bit RGB."""


def _to_rgb(image: Image.Image) -> np.ndarray:
    """8-bit RGB array of any PIL image (grey, palette, alpha, CMYK, 16-bit...).

    Alpha is dropped (as ``cv2.imread`` does); 16-bit grey is scaled from [0, 65535] to [0, 255].
    Floating-point images (mode ``F``) are refused: their value range is not defined, and PIL's
    conversion would clip e.g. [0, 1] data to black.
    """
    if image.mode == 'F':
        raise UnsupportedImageError("32-bit floating-point pixels (PIL mode 'F') have no "
                                    'defined range: convert the file to 8-bit')
    if image.mode in _SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 257
        return np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(image.convert('RGB'))


@TRANSFORMS.register_module()
class LoadRGBImage(BaseTransform):
    """Load ``results['img_path']`` with PIL as an 8-bit **BGR** ``HxWx3`` array.

    "RGB" in the name says that every image becomes three colour channels: EXIF orientation is
    applied, and grey, palette, alpha, CMYK and 16-bit images become 8-bit three-channel images.
    The array is in **BGR** order (:attr:`channel_order`), like ``mmcv.imread``, because that is
    what OpenMMLab data preprocessors expect: the configs' ``to_rgb=True`` turns it back into
    RGB before the mean/std. Code that feeds these images to a model without the runner's data
    preprocessor passes ``channel_order=LoadRGBImage.channel_order`` to
    :func:`mmdense.evaluation.features.model_inputs`. Adds ``img``, ``img_shape`` and
    ``ori_shape`` (both ``(h, w)``).

    Raises:
        ImageLoadError: the file is missing, empty, truncated, not a decodable image, larger
            than PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) or has floating-point
            pixels; the message names the path and the reason.

    Args:
        backend_args (dict, optional): mmengine file backend arguments (e.g. for remote storage).
    """

    channel_order = 'bgr'

    def __init__(self, backend_args: Optional[dict] = None):
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        path = results['img_path']
        try:
            data = fileio.get(path, backend_args=self.backend_args)
        except OSError as err:
            raise ImageLoadError(f'cannot load image {path!r}: reading failed ({err})') from err
        if not data:
            raise ImageLoadError(f'cannot load image {path!r}: the file is empty (0 bytes)')
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                rgb = _to_rgb(ImageOps.exif_transpose(image))
        except UnidentifiedImageError as err:
            raise ImageLoadError(f'cannot load image {path!r}: not a recognised image format '
                                 f'({len(data)} bytes)') from err
        except Image.DecompressionBombError as err:
            raise ImageLoadError(f'cannot load image {path!r}: refused as a possible '
                                 f'decompression bomb ({err})') from err
        except UnsupportedImageError as err:
            raise ImageLoadError(f'cannot load image {path!r}: {err}') from err
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageLoadError(f'cannot load image {path!r}: decoding failed ({err}; '
                                 f'{len(data)} bytes)') from err
        results['img'] = np.ascontiguousarray(rgb[..., ::-1])
        results['img_shape'] = results['ori_shape'] = rgb.shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(backend_args={self.backend_args})'
