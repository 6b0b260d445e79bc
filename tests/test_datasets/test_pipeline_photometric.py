"""The cheaper photometric transforms and packing equal the originals they replace."""
import random

import cv2
import numpy as np
import pytest
import scipy.ndimage
import torch
from mmcv.transforms import RandomGrayscale as MMCVRandomGrayscale
from mmpretrain.datasets.transforms import ColorJitter as MMPretrainColorJitter
from mmpretrain.datasets.transforms import GaussianBlur as MMPretrainGaussianBlur
from mmpretrain.datasets.transforms import PackInputs

from mmdense.datasets.transforms import (ColorJitter, GaussianBlur, PackMultiViewInputs,
                                        RandomGrayscale)
from mmdense.registry import TRANSFORMS


def _photo(seed, height=37, width=53):
    """A smooth colour field with noise, so hue, contrast and grey levels vary over the image."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(field + rng.integers(-20, 21, field.shape), 0, 255).astype(np.uint8)


def _apply(transform, img, seed):
    np.random.seed(seed)
    random.seed(seed)
    return transform.transform(dict(img=img.copy()))['img']


def test_recipe_configs_build_the_cheaper_transforms_in_the_mmdense_scope():
    jitter = TRANSFORMS.build(dict(type='ColorJitter', brightness=0.4))
    grey = TRANSFORMS.build(dict(type='RandomGrayscale', prob=0.2))
    blur = TRANSFORMS.build(dict(type='GaussianBlur', radius=1.0))
    assert type(jitter) is ColorJitter and type(grey) is RandomGrayscale
    assert type(blur) is GaussianBlur and blur.backend == 'pillow'
    assert type(TRANSFORMS.build(dict(type='mmpretrain.ColorJitter'))) is MMPretrainColorJitter


@pytest.mark.parametrize('params', [
    dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1),  # BYOL, SlotCon, DSC, DINO
    dict(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2),  # CoTAP
    dict(hue=0.5),
    dict(contrast=(0.0, 0.2), saturation=(1.5, 2.0)),
])
def test_color_jitter_draws_and_pixels_equal_mmpretrain(params):
    fast, original = ColorJitter(**params), MMPretrainColorJitter(**params)
    for seed in range(40):
        img = _photo(seed, *((96, 96) if seed % 2 else (37, 53)))
        expected = _apply(original, img, seed)
        next_draw_original = np.random.rand()
        result = _apply(fast, img, seed)
        assert np.random.rand() == next_draw_original  # as many draws as the original
        assert result.dtype == np.uint8 and result.shape == img.shape
        np.testing.assert_array_equal(result, expected)


def test_color_jitter_changes_the_image():
    img = _photo(0)
    jittered = _apply(ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1), img, 0)
    assert np.abs(jittered.astype(int) - img).mean() > 2


def test_color_jitter_hands_float_images_to_mmpretrain():
    img = _photo(1).astype(np.float32)
    with pytest.raises(AssertionError, match='Pillow backend only support uint8'):
        _apply(ColorJitter(brightness=0.4), img, 0)


@pytest.mark.parametrize('keep_channels', [True, False])
@pytest.mark.parametrize('weights', [(0.114, 0.587, 0.2989), (1.0, 1.0, 1.0), (1.0, 2.0, 1.0)])
def test_random_grayscale_equals_mmcv(keep_channels, weights):
    fast = RandomGrayscale(prob=0.5, keep_channels=keep_channels, channel_weights=weights)
    original = MMCVRandomGrayscale(prob=0.5, keep_channels=keep_channels,
                                   channel_weights=weights)
    greyed = 0
    for seed in range(60):
        img = _photo(seed)
        expected = _apply(original, img, seed)
        next_draw_original = random.random()
        result = _apply(fast, img, seed)
        assert random.random() == next_draw_original
        assert result.dtype == expected.dtype and result.shape == expected.shape
        np.testing.assert_array_equal(result, expected)
        greyed += result.ndim == 2 or (result == result[..., :1]).all()
    assert 10 < greyed < 50  # both branches were compared


def test_random_grayscale_of_an_image_whose_grey_levels_sit_on_integers():
    # weights 1/4, 1/2, 1/4 of (4, 8, 0) -> exactly 5: truncation keeps 5, not 4
    img = np.tile(np.array([4, 8, 0], np.uint8), (3, 3, 1))
    result = _apply(RandomGrayscale(prob=1.0, keep_channels=True, channel_weights=(1, 2, 1)),
                    img, 0)
    assert result.shape == (3, 3, 3) and (result == 5).all()


@pytest.mark.parametrize('contiguous', [True, False])
def test_packed_views_equal_mmpretrain_packing(contiguous):
    views = [_photo(0, 16, 24), _photo(1, 8, 8)]
    if not contiguous:
        views = [view[..., ::-1] for view in views]
    packed = PackMultiViewInputs().transform(dict(img=views))['inputs']
    expected = PackInputs.format_input(views)
    for tensor, reference, view in zip(packed, expected, views):
        assert tensor.dtype == torch.uint8 and tensor.is_contiguous()
        assert tuple(tensor.shape) == (3, ) + view.shape[:2]
        torch.testing.assert_close(tensor, reference, rtol=0, atol=0)


BYOL_BLUR = dict(magnitude_range=(0.1, 2.0), magnitude_std='inf', prob=0.5)


def test_gaussian_blur_defaults_to_mmpretrains_pixels():
    fast, original = GaussianBlur(**BYOL_BLUR), MMPretrainGaussianBlur(**BYOL_BLUR)
    for seed in range(10):
        img = _photo(seed)
        np.testing.assert_array_equal(_apply(fast, img, seed), _apply(original, img, seed))


def test_cv2_gaussian_blur_is_the_sampled_gaussian_with_the_same_draws():
    fast = GaussianBlur(backend='cv2', **BYOL_BLUR)
    blurred = 0
    for seed in range(20):
        img = _photo(seed)
        result = _apply(fast, img, seed)
        np.random.seed(seed)
        if fast.random_disable():
            np.testing.assert_array_equal(result, img)
            continue
        blurred += 1
        sigma = fast.random_magnitude()
        expected = scipy.ndimage.gaussian_filter(img.astype(np.float64), (sigma, sigma, 0),
                                                 mode='nearest', radius=(int(np.ceil(3 * sigma)),
                                                                         int(np.ceil(3 * sigma)),
                                                                         0))
        assert result.dtype == np.uint8
        # OpenCV's 8-bit path rounds fixed-point kernel weights: within one grey level
        assert np.abs(result - expected).max() <= 1.0
    assert 5 < blurred < 15


def test_cv2_gaussian_blur_stays_close_to_pils_on_smooth_photos():
    """The stated cost of the opt-in: PIL's box approximation vs the Gaussian, same radius."""
    for radius in (0.5, 1.0, 2.0):
        img = _photo(0, 96, 96)
        pil = _apply(GaussianBlur(radius=radius, prob=1.0), img, 0).astype(int)
        gaussian = _apply(GaussianBlur(radius=radius, prob=1.0, backend='cv2'), img, 0)
        assert np.abs(pil - gaussian).max() <= 4 and np.abs(pil - gaussian).mean() < 1


def test_unknown_blur_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend must be 'pillow' or 'cv2', got 'torch'"):
        GaussianBlur(radius=1.0, backend='torch')
