import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmpretrain.models import SelfSupDataPreprocessor
from PIL import Image

from mmdense.datasets.transforms.multi_crop import MultiCropWithGeometry
from mmdense.models.utils.alignment import align_to_boxes
from mmdense.registry import TRANSFORMS
from mmdense.structures import intersection_area, overlap_in_views
from helpers import ROOT

HEIGHT, WIDTH = 120, 160


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _run(transform, seed, img=None):
    np.random.seed(seed)
    img = _image() if img is None else img
    return transform(dict(img=img, ori_shape=img.shape[:2]))


def test_views_counts_and_sizes():
    transform = MultiCropWithGeometry(global_crops=dict(size=64), local_crops=dict(num=3, size=32))
    results = _run(transform, seed=0)
    views = results['img']
    assert [view.shape for view in views] == [(64, 64, 3)] * 2 + [(32, 32, 3)] * 3
    assert all(view.dtype == np.uint8 for view in views)
    assert results['crop_boxes'].shape == (5, 4) and results['crop_boxes'].dtype == np.float32
    assert results['flips'].shape == (5,) and results['flips'].dtype == bool
    assert tuple(results['img_shape']) == (64, 64)
    assert tuple(results['ori_shape']) == (HEIGHT, WIDTH)


def test_rectangular_view_size():
    transform = MultiCropWithGeometry(global_crops=dict(num=1, size=(40, 56)))
    assert _run(transform, seed=0)['img'][0].shape == (40, 56, 3)


@pytest.mark.parametrize('kwargs,scale', [
    (dict(global_crops=dict(num=4, size=8)), (0.25, 1.0)),
    (dict(global_crops=dict(num=0), local_crops=dict(num=4, size=8)), (0.05, 0.25)),
])
def test_boxes_respect_image_scale_and_ratio(kwargs, scale):
    transform = MultiCropWithGeometry(**kwargs)
    boxes = np.concatenate([_run(transform, seed)['crop_boxes'] for seed in range(50)])
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= WIDTH).all()
    assert (boxes[:, 3] <= HEIGHT).all() and (widths > 0).all() and (heights > 0).all()
    np.testing.assert_array_equal(boxes, np.round(boxes))
    tolerance = 0.06  # rounding the sides to whole pixels
    area = widths * heights / (HEIGHT * WIDTH)
    assert (area >= scale[0] * (1 - tolerance)).all() and (area <= scale[1] * (1 + tolerance)).all()
    aspect = widths / heights
    assert (aspect >= 3 / 4 * (1 - tolerance)).all() and (aspect <= 4 / 3 * (1 + tolerance)).all()


def test_centre_crop_fallback():
    """A strip too thin for any sampled crop falls back to a centred crop of maximal ratio."""
    transform = MultiCropWithGeometry(global_crops=dict(num=1, scale=(0.9, 1.0), size=8))
    results = _run(transform, seed=0, img=np.zeros((10, 200, 3), np.uint8))
    np.testing.assert_array_equal(results['crop_boxes'][0], [93, 0, 106, 10])


def test_views_match_boxes_and_flips():
    img = _image()
    unflipped = _run(MultiCropWithGeometry(global_crops=dict(size=48),
                                           local_crops=dict(num=2, size=24), flip_prob=0.0),
                     seed=3, img=img)
    flipped = _run(MultiCropWithGeometry(global_crops=dict(size=48),
                                         local_crops=dict(num=2, size=24), flip_prob=1.0),
                   seed=3, img=img)
    assert not unflipped['flips'].any() and flipped['flips'].all()
    np.testing.assert_array_equal(unflipped['crop_boxes'], flipped['crop_boxes'])
    for box, view, mirrored in zip(unflipped['crop_boxes'].astype(int), unflipped['img'],
                                   flipped['img']):
        x1, y1, x2, y2 = box
        size = view.shape[1], view.shape[0]
        expected = np.asarray(Image.fromarray(img[y1:y2, x1:x2]).resize(size, Image.BICUBIC))
        np.testing.assert_array_equal(view, expected)
        np.testing.assert_array_equal(mirrored, expected[:, ::-1])


def _overlap_fractions(transform, seeds):
    """Share of each further global crop's area that lies in the first crop, over ``seeds``."""
    fractions = []
    for seed in seeds:
        first, *others = _run(transform, seed)['crop_boxes']
        fractions += [intersection_area(first, box) / ((box[2] - box[0]) * (box[3] - box[1]))
                      for box in others]
    return np.array(fractions)


def test_require_overlap_resamples_until_the_overlap_share_is_reached():
    # Small crops: 18% of free draws miss the first crop and 38% share less than 20% of their
    # area with it (seeds 0-299); with the 20% rule 99% reach it, the rest being the
    # unconditioned draws after 10 failures.
    kwargs = dict(global_crops=dict(num=3, scale=(0.1, 0.3), size=8))
    seeds = range(300)
    free = _overlap_fractions(MultiCropWithGeometry(**kwargs), seeds)
    any_overlap = _overlap_fractions(MultiCropWithGeometry(require_overlap=True, **kwargs), seeds)
    share = _overlap_fractions(
        MultiCropWithGeometry(require_overlap=True, min_overlap=0.2, **kwargs), seeds)
    assert (free == 0).mean() > 0.15 and (free < 0.19).mean() > 0.3
    assert (any_overlap > 0).all() and (any_overlap < 0.19).mean() > 0.2
    # 0.19: the threshold is on the drawn target area, which rounding to pixels moves slightly
    assert (share >= 0.19).mean() > 0.97


def _scripted_draws(transform, draws):
    """Make ``transform._draw_box`` return ``draws`` (box, target area) in turn, or None."""
    calls = []

    def draw_box(height, width, scale):
        calls.append(scale)
        return draws[len(calls) - 1]

    transform._draw_box = draw_box
    return calls


def _square(x1, y1, side):
    return np.array([x1, y1, x1 + side, y1 + side], np.float32), float(side * side)


def test_overlap_threshold_is_one_percent_of_the_second_crops_area():
    transform = MultiCropWithGeometry(require_overlap=True, min_overlap=0.01)
    first = np.array([0, 0, 1000, 1000], np.float32)  # 1% of it would be 10000 px
    # a 100 x 100 crop sharing 90 px (0.9% of its area), then one sharing 100 px (1%)
    draws = [_square(991, 990, 100), _square(990, 990, 100)]
    calls = _scripted_draws(transform, draws + [None])
    box = transform._sample_overlapping_box(2000, 2000, (0.1, 1.0), first)
    np.testing.assert_array_equal(box, draws[1][0])
    assert len(calls) == 2


def test_after_max_tries_the_crop_is_drawn_without_condition(monkeypatch):
    transform = MultiCropWithGeometry(require_overlap=True, min_overlap=0.01, max_tries=10)
    first = np.array([0, 0, 50, 50], np.float32)
    # draws that do not fit the image (None) count as tries like disjoint ones
    calls = _scripted_draws(transform, [None, _square(60, 60, 30)] * 5)
    fallback = np.array([55, 0, 95, 40], np.float32)  # disjoint too: kept all the same
    monkeypatch.setattr(transform, '_sample_box', lambda height, width, scale: fallback)
    box = transform._sample_overlapping_box(100, 100, (0.1, 1.0), first)
    assert len(calls) == 10
    np.testing.assert_array_equal(box, fallback)


def test_bad_overlap_interpolation_or_dtype_are_clear_errors():
    with pytest.raises(ValueError, match='min_overlap must lie in \\[0, 1\\], got 2'):
        MultiCropWithGeometry(min_overlap=2)
    with pytest.raises(ValueError, match="interpolation='hamming' is not a PIL resampling"):
        MultiCropWithGeometry(interpolation='hamming')
    with pytest.raises(TypeError, match='needs a uint8 or float32 image, got float64'):
        _run(MultiCropWithGeometry(global_crops=dict(size=8)), 0,
             img=np.zeros((40, 40, 3), np.float64))


def _whole_image_view(img, size):
    transform = MultiCropWithGeometry(global_crops=dict(num=1, size=size, scale=(1.0, 1.0)),
                                      ratio=(1.0, 1.0), flip_prob=0.0)
    return _run(transform, 0, img=img)['img'][0]


def test_resize_averages_a_high_frequency_pattern():
    # a one-pixel checkerboard of 0 and 255 shrunk 256 -> 37 px: each output pixel covers about
    # 48 pixels, half black and half white, so an antialiased resize gives their mean, 127.5,
    # where a plain bicubic one (cv2's) samples the 4 x 4 pixels nearest each output pixel
    checkerboard = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    view = _whole_image_view(np.repeat(checkerboard[..., None], 3, axis=2), 37)
    assert view.dtype == np.uint8 and view.shape == (37, 37, 3)
    assert np.abs(view.astype(float) - 127.5).max() <= 1.0


def test_float_images_are_resized_per_channel_with_the_same_filter():
    img = np.random.default_rng(1).random((90, 90, 3), dtype=np.float32) * 255
    view = _whole_image_view(img, 30)
    assert view.dtype == np.float32 and view.shape == (30, 30, 3)
    for channel in range(3):
        expected = Image.fromarray(img[..., channel]).resize((30, 30), Image.BICUBIC)
        np.testing.assert_array_equal(view[..., channel], np.asarray(expected))


def test_views_equal_torchvision_resized_crops_of_pil_images():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resized_crop
    img = _image(3)
    transform = MultiCropWithGeometry(global_crops=dict(size=(24, 40)), flip_prob=0.0)
    results = _run(transform, 5, img=img)
    for view, (x1, y1, x2, y2) in zip(results['img'], results['crop_boxes'].astype(int)):
        expected = resized_crop(Image.fromarray(img), y1, x1, y2 - y1, x2 - x1, [24, 40],
                                InterpolationMode.BICUBIC)
        np.testing.assert_array_equal(view, np.asarray(expected))
        assert view.flags.writeable


def test_deterministic_under_seed():
    transform = MultiCropWithGeometry(global_crops=dict(size=32), local_crops=dict(num=2, size=16))
    first, second, other = _run(transform, 7), _run(transform, 7), _run(transform, 8)
    np.testing.assert_array_equal(first['crop_boxes'], second['crop_boxes'])
    np.testing.assert_array_equal(first['flips'], second['flips'])
    for view_a, view_b in zip(first['img'], second['img']):
        np.testing.assert_array_equal(view_a, view_b)
    assert not np.array_equal(first['crop_boxes'], other['crop_boxes'])


def _byol_pipeline(blur_prob, solarize_prob):
    return [
        dict(type='RandomApply',
             transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.2,
                              hue=0.1)],
             prob=0.8),
        dict(type='RandomGrayscale', prob=0.2, keep_channels=True, channel_weights=(0.114, 0.587,
                                                                                    0.299)),
        dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf',
             prob=blur_prob),
        dict(type='Solarize', thr=128, prob=solarize_prob),
    ]


def test_mmpretrain_photometric_pipelines():
    transform = TRANSFORMS.build(
        dict(type='MultiCropWithGeometry',
             global_crops=dict(size=48),
             local_crops=dict(num=2, size=24),
             global_pipelines=[_byol_pipeline(1.0, 0.0), _byol_pipeline(0.1, 0.2)],
             local_pipeline=[dict(type='RandomGrayscale', prob=1.0, keep_channels=True)]))
    for seed in range(5):
        views = _run(transform, seed)['img']
        assert [view.shape for view in views] == [(48, 48, 3)] * 2 + [(24, 24, 3)] * 2
        assert all(view.dtype == np.uint8 for view in views)
        for local_view in views[2:]:  # grayscale kept as three equal channels
            assert (local_view == local_view[..., :1]).all()


def test_global_pipelines_per_view():
    transform = MultiCropWithGeometry(
        global_crops=dict(size=32),
        global_pipelines=[[dict(type='RandomGrayscale', prob=1.0, keep_channels=True)], []])
    first, second = _run(transform, 0)['img']
    assert (first == first[..., :1]).all() and not (second == second[..., :1]).all()
    with pytest.raises(ValueError):
        MultiCropWithGeometry(global_crops=dict(num=2), global_pipelines=[[], [], []])


def test_packing_and_batching_reach_the_model():
    pipeline = [
        TRANSFORMS.build(
            dict(type='MultiCropWithGeometry', global_crops=dict(size=32),
                 local_crops=dict(num=3, size=16), require_overlap=True,
                 global_pipelines=[_byol_pipeline(1.0, 0.0)])),
        TRANSFORMS.build(dict(type='PackMultiViewInputs')),
    ]
    np.random.seed(0)
    samples = []
    for index in range(4):
        results = dict(img=_image(index), ori_shape=(HEIGHT, WIDTH), sample_idx=index)
        for transform in pipeline:
            results = transform(results)
        samples.append(results)

    preprocessor = SelfSupDataPreprocessor(mean=(123.675, 116.28, 103.53),
                                           std=(58.395, 57.12, 57.375), to_rgb=True)
    batch = preprocessor(default_collate(samples), training=True)
    inputs, data_samples = batch['inputs'], batch['data_samples']
    assert [tuple(view.shape) for view in inputs] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 3
    assert all(view.dtype == torch.float32 for view in inputs)
    assert len(data_samples) == 4
    for data_sample in data_samples:
        assert data_sample.crop_boxes.shape == (5, 4)
        assert data_sample.crop_boxes.dtype == torch.float32
        assert data_sample.flips.shape == (5,) and data_sample.flips.dtype == torch.bool
        assert tuple(data_sample.img_shape) == (32, 32)
        assert tuple(data_sample.ori_shape) == (HEIGHT, WIDTH)

    boxes = torch.stack([data_sample.crop_boxes for data_sample in data_samples])  # (B, V, 4)
    flips = torch.stack([data_sample.flips for data_sample in data_samples])  # (B, V)
    _, _, valid = overlap_in_views(boxes[:, 0], flips[:, 0], boxes[:, 1], flips[:, 1])
    assert valid.all()


def test_views_align_on_shared_region():
    """Views of a position-encoding image, aligned to their overlap, show the same positions."""
    ys, xs = np.mgrid[0:200, 0:200]
    img = np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    transform = MultiCropWithGeometry(global_crops=dict(size=64, scale=(0.3, 1.0)),
                                      require_overlap=True, interpolation='bilinear')
    views, boxes, flips = [], [], []
    for seed in range(16):
        results = _run(transform, seed, img)
        views.append(np.stack(results['img']))
        boxes.append(results['crop_boxes'])
        flips.append(results['flips'])
    views = torch.from_numpy(np.stack(views)).permute(1, 0, 4, 2, 3).float()  # (V, B, C, H, W)
    boxes, flips = torch.from_numpy(np.stack(boxes)), torch.from_numpy(np.stack(flips))
    overlap_a, overlap_b, valid = overlap_in_views(boxes[:, 0], flips[:, 0], boxes[:, 1],
                                                   flips[:, 1])
    assert valid.all() and flips.any() and not flips.all()
    aligned_a = align_to_boxes(views[0], overlap_a, flips[:, 0], 8)
    aligned_b = align_to_boxes(views[1], overlap_b, flips[:, 1], 8)
    # Within a pixel of the original image apart from resampling at the border cells.
    torch.testing.assert_close(aligned_a[..., 1:-1, 1:-1], aligned_b[..., 1:-1, 1:-1], rtol=0,
                               atol=1.0)
    torch.testing.assert_close(aligned_a, aligned_b, rtol=0, atol=3.0)


def test_clean_global_copies_share_crop_and_flip_without_jitter():
    grayscale = [dict(type='RandomGrayscale', prob=1.0, keep_channels=True)]
    jittered = MultiCropWithGeometry(global_crops=dict(size=32), local_crops=dict(num=1, size=16),
                                     global_pipelines=[grayscale], clean_global_copies=True,
                                     flip_prob=0.5)
    plain = MultiCropWithGeometry(global_crops=dict(size=32), local_crops=dict(num=1, size=16),
                                  flip_prob=0.5)
    for seed in range(4):
        results = _run(jittered, seed)
        reference = _run(plain, seed)  # same draws, no photometric pipeline
        views = results['img']
        assert len(views) == 5
        np.testing.assert_array_equal(results['crop_boxes'][3:], results['crop_boxes'][:2])
        np.testing.assert_array_equal(results['flips'][3:], results['flips'][:2])
        for g in range(2):
            assert (views[g] == views[g][..., :1]).all()
            np.testing.assert_array_equal(views[3 + g], reference['img'][g])


# Every multi-crop pipeline of the recipes: the pipeline bases and the DINO recipe configs.
MULTI_CROP_CONFIGS = [
    'configs/_base_/pipelines/adclr_query_crops.py',
    'configs/_base_/pipelines/cotap_multicrop.py',
    'configs/_base_/pipelines/dino_multicrop.py',
    'configs/_base_/pipelines/two_view_geometry.py',
    'configs/dino/vit-s_in1k-100e.py',
    'configs/dino/vit-s_in1k-300e.py',
    'configs/dino/vit-s_coco.py',
]


@pytest.mark.parametrize('config', MULTI_CROP_CONFIGS)
def test_pipeline_views_equal_dinos_pil_resized_crops(config):
    """Each view of the config's multi-crop transform, photometric pipelines left out, equals
    DINO's ``RandomResizedCrop(interpolation=BICUBIC)`` on a PIL image (torchvision crops, then
    PIL resizes with its antialiased filter) of the same box, within one grey level. The image
    is uint8 noise: every pixel differs from its neighbours, so a resize that samples instead of
    averaging (cv2's bicubic) misses by tens of grey levels when it shrinks."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resized_crop
    crop = Config.fromfile(osp.join(ROOT, config)).train_pipeline[1]
    photometric = [key for key in ('global_pipelines', 'local_pipeline', 'query_pipeline')
                   if key in crop]
    transform = TRANSFORMS.build(dict(crop, **{key: None for key in photometric}))
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    results = _run(transform, 0, img=img)
    assert len(results['img']) >= 2
    for view, (x1, y1, x2, y2), flip in zip(results['img'], results['crop_boxes'].astype(int),
                                            results['flips']):
        expected = np.asarray(resized_crop(Image.fromarray(img), y1, x1, y2 - y1, x2 - x1,
                                           list(view.shape[:2]), InterpolationMode.BICUBIC))
        if flip:
            expected = expected[:, ::-1]
        assert np.abs(view.astype(int) - expected).max() <= 1, (x1, y1, x2, y2)
