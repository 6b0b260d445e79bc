import mmcv
import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate
from mmpretrain.models import SelfSupDataPreprocessor

from mmdense.datasets.transforms.formatting import PackMultiViewInputs
from mmdense.datasets.transforms.multi_crop import MultiCropWithGeometry
from mmdense.models.utils.alignment import align_to_boxes
from mmdense.models.utils.crop_geometry import boxes_overlap, overlap_in_views
from mmdense.registry import TRANSFORMS

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
        expected = mmcv.imresize(img[y1:y2, x1:x2], size, interpolation='bicubic')
        np.testing.assert_array_equal(view, expected)
        np.testing.assert_array_equal(mirrored, expected[:, ::-1])


def test_require_overlap():
    # Small crops: about 30% of free draws miss the first crop, and 10 draws almost never do.
    kwargs = dict(global_crops=dict(num=3, scale=(0.1, 0.3), size=8))
    free = MultiCropWithGeometry(**kwargs)
    required = MultiCropWithGeometry(require_overlap=True, **kwargs)

    def overlapping(transform, seed):
        first, *others = _run(transform, seed)['crop_boxes']
        return all(boxes_overlap(first, box) for box in others)

    seeds = range(300)
    assert sum(not overlapping(free, seed) for seed in seeds) > 50
    assert all(overlapping(required, seed) for seed in seeds)


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
