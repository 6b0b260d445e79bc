import contextlib
import hashlib
import io
import json
import os
import os.path as osp
import runpy
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mmdense.datasets.toy_scenes import (CLASSES, IGNORE_INDEX, SEG_CLASSES, SEG_PALETTE,
                                         generate_toy_scenes, toy_scenes_exist)
from helpers import ROOT as REPO

NUM_TRAIN, NUM_VAL, SIZE = 12, 4, 128


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy'))
    generate_toy_scenes(root, num_train=NUM_TRAIN, num_val=NUM_VAL, img_size=SIZE, seed=3)
    return root


def _all_files(root):
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                found[osp.relpath(path, root)] = f.read()
    return found


def test_layout_and_determinism(toy_root, tmp_path):
    files = _all_files(toy_root)
    for split, count in (('train', NUM_TRAIN), ('val', NUM_VAL)):
        assert sum(p.startswith(f'images/{split}/') and p.endswith('.jpg') for p in files) == count
        assert sum(p.startswith(f'semantic/{split}/') and p.endswith('.png')
                   for p in files) == count
        listed = files[f'meta/{split}.txt'].decode().split()
        assert len(listed) == count and all(p in files for p in listed)
    classes = json.loads(files['meta/classes.json'])
    assert tuple(classes['classes']) == CLASSES and len(classes['palette']) == len(CLASSES)
    assert tuple(classes['seg_classes']) == SEG_CLASSES

    again = generate_toy_scenes(str(tmp_path), num_train=NUM_TRAIN, num_val=NUM_VAL,
                                img_size=SIZE, seed=3)
    assert _all_files(str(tmp_path)) == files
    assert again['splits']['train']['images'] == NUM_TRAIN
    other_seed = generate_toy_scenes(str(tmp_path / 'other'), num_train=2, num_val=1,
                                     img_size=SIZE, seed=4)
    assert other_seed['seed'] == 4
    assert (tmp_path / 'other/images/train/000000.jpg').read_bytes() != files[
        'images/train/000000.jpg']


def test_toy_scenes_exist(tmp_path):
    root = str(tmp_path)
    assert not toy_scenes_exist(root)
    generate_toy_scenes(root, num_train=3, num_val=1, img_size=64, seed=0)
    assert toy_scenes_exist(root)
    assert toy_scenes_exist(root, num_train=3, num_val=1, img_size=64, seed=0)
    assert not toy_scenes_exist(root, num_train=4)
    assert not toy_scenes_exist(root, seed=1)
    os.remove(osp.join(root, 'semantic', 'val', '000000.png'))
    assert not toy_scenes_exist(root)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='img_size'):
        generate_toy_scenes(str(tmp_path), num_train=1, num_val=1, img_size=8)
    with pytest.raises(ValueError, match='num_train'):
        generate_toy_scenes(str(tmp_path), num_train=0)


def test_cli_generates_then_skips(tmp_path, monkeypatch):
    out = str(tmp_path / 'cli')
    argv = ['make_toy_scenes.py', '--out', out, '--num-train', '2', '--num-val', '1',
            '--img-size', '64']
    outputs = []
    for extra in ([], [], ['--force']):
        monkeypatch.setattr(sys, 'argv', argv + extra)
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            runpy.run_path(osp.join(REPO, 'tools/misc/make_toy_scenes.py'), run_name='__main__')
        outputs.append(buffer.getvalue())
    assert 'wrote toy scenes' in outputs[0] and 'skipping' in outputs[1]
    assert 'wrote toy scenes' in outputs[2]
    assert toy_scenes_exist(out, num_train=2, num_val=1, img_size=64)


def test_coco_annotations_and_semantic_maps(toy_root):
    coco = COCO(osp.join(toy_root, 'annotations', 'instances_train.json'))
    assert sorted(coco.getCatIds()) == list(range(1, len(CLASSES) + 1))
    assert len(coco.getImgIds()) == NUM_TRAIN
    seen_categories = set()
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        assert (info['height'], info['width']) == (SIZE, SIZE)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 2 <= len(anns) <= 6
        stem = osp.splitext(info['file_name'])[0]
        semantic = np.array(Image.open(osp.join(toy_root, 'semantic', 'train', stem + '.png')))
        assert semantic.shape == (SIZE, SIZE) and semantic.dtype == np.uint8
        covered = np.zeros((SIZE, SIZE), bool)
        for ann in anns:
            mask = coco.annToMask(ann).astype(bool)
            assert mask.sum() == ann['area'] > 0 and ann['iscrowd'] == 0
            assert not (covered & mask).any(), 'visible masks must not overlap'
            covered |= mask
            assert np.isin(semantic[mask], [ann['category_id'], IGNORE_INDEX]).all()
            assert (semantic[mask] == ann['category_id']).any()
            ys, xs = np.nonzero(mask)
            assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                   ys.max() - ys.min() + 1]
            seen_categories.add(ann['category_id'])
        assert np.isin(semantic[~covered], [0, IGNORE_INDEX]).all()
        assert (semantic == IGNORE_INDEX).mean() < 0.2
    assert len(seen_categories) >= 6


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_cocoeval_ground_truth_scores_perfectly(toy_root, iou_type):
    coco = COCO(osp.join(toy_root, 'annotations', 'instances_val.json'))
    key = 'bbox' if iou_type == 'bbox' else 'segmentation'
    detections = [
        dict(image_id=ann['image_id'], category_id=ann['category_id'], score=1.0,
             **{key: ann[key]}) for ann in coco.loadAnns(coco.getAnnIds())
    ]
    evaluator = COCOeval(coco, coco.loadRes(detections), iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_mmdet_coco_dataset_loads(toy_root):
    import mmdet.utils
    from mmdet.datasets import CocoDataset
    mmdet.utils.register_all_modules(init_default_scope=False)
    dataset = CocoDataset(
        data_root=toy_root, ann_file='annotations/instances_train.json',
        metainfo=dict(classes=CLASSES), data_prefix=dict(img='images/train/'),
        pipeline=[
            dict(type='mmdet.LoadImageFromFile'),
            dict(type='mmdet.LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='mmdet.PackDetInputs'),
        ])
    assert len(dataset) == NUM_TRAIN
    sample = dataset[0]
    assert tuple(sample['inputs'].shape) == (3, SIZE, SIZE)
    instances = sample['data_samples'].gt_instances
    masks = instances.masks.to_ndarray()
    assert 2 <= len(instances) <= 6 and masks.shape[1:] == (SIZE, SIZE)
    assert (masks.reshape(len(masks), -1).sum(1) > 0).all()
    assert set(instances.labels.tolist()) <= set(range(len(CLASSES)))


def test_mmseg_dataset_loads(toy_root):
    import mmseg.utils
    from mmseg.datasets import BaseSegDataset
    mmseg.utils.register_all_modules(init_default_scope=False)
    dataset = BaseSegDataset(
        data_root=toy_root, img_suffix='.jpg', seg_map_suffix='.png',
        metainfo=dict(classes=SEG_CLASSES, palette=SEG_PALETTE),
        data_prefix=dict(img_path='images/val', seg_map_path='semantic/val'),
        reduce_zero_label=False,
        pipeline=[
            dict(type='mmseg.LoadImageFromFile'),
            dict(type='mmseg.LoadAnnotations'),
            dict(type='mmseg.PackSegInputs'),
        ])
    assert len(dataset) == NUM_VAL
    for index in range(len(dataset)):
        sample = dataset[index]
        labels = sample['data_samples'].gt_sem_seg.data
        assert tuple(labels.shape) == (1, SIZE, SIZE)
        values = set(labels.unique().tolist())
        assert values <= set(range(len(CLASSES) + 1)) | {IGNORE_INDEX}
        assert len(values - {0, IGNORE_INDEX}) >= 1


def _instance_hues(root, split='train'):
    """Circular mean hue (OpenCV scale, 0..180) of the visible pixels of every instance, by
    class."""
    coco = COCO(osp.join(root, 'annotations', f'instances_{split}.json'))
    hues = {}
    for image_info in coco.dataset['images']:
        image = cv2.imread(osp.join(root, 'images', split, image_info['file_name']))
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        for ann in coco.imgToAnns[image_info['id']]:
            mask = mask_util.decode(ann['segmentation']).astype(bool)
            angles = hsv[..., 0][mask].astype(np.float64) * np.pi / 90  # hue as an angle
            mean = np.arctan2(np.sin(angles).mean(), np.cos(angles).mean()) * 90 / np.pi % 180
            hues.setdefault(ann['category_id'], []).append(mean)
    return hues


def _circular_distance(a, b):
    return np.minimum(np.abs(a - b), 180 - np.abs(a - b))


def test_colour_free_variant_decouples_hue_from_class(toy_root, tmp_path):
    class_hues = _instance_hues(toy_root)
    for category_id, hues in class_hues.items():
        # every instance of a class has nearly the same hue in the standard set
        assert max(_circular_distance(h, hues[0]) for h in hues) < 12, category_id
    root = str(tmp_path / 'free')
    summary = generate_toy_scenes(root, num_train=NUM_TRAIN, num_val=1, img_size=SIZE, seed=3,
                                  class_hues=False)
    assert summary['class_hues'] is False
    assert toy_scenes_exist(root, class_hues=False) and not toy_scenes_exist(root, class_hues=True)
    assert toy_scenes_exist(toy_root, class_hues=True)
    spreads = [max(_circular_distance(h, hues[0]) for h in hues)
               for hues in _instance_hues(root).values() if len(hues) >= 3]
    assert spreads and min(spreads) > 20  # instances of one class get unrelated hues


def _instance_extents(root, split='train'):
    """Largest side of every instance's visible mask box, from the COCO RLEs (pycocotools)."""
    with open(osp.join(root, 'annotations', f'instances_{split}.json')) as f:
        annotations = json.load(f)['annotations']
    extents = []
    for ann in annotations:
        mask = mask_util.decode(ann['segmentation'])
        ys, xs = np.nonzero(mask)
        extents.append(max(xs.max() - xs.min(), ys.max() - ys.min()) + 1)
    return np.array(extents)


def _object_share(root, split='train'):
    """Fraction of the labelled pixels (PIL-read semantic maps) that belong to an object."""
    labels = np.stack([np.asarray(Image.open(osp.join(root, 'semantic', split, name)))
                       for name in sorted(os.listdir(osp.join(root, 'semantic', split)))])
    labelled = labels[labels != IGNORE_INDEX]
    return (labelled > 0).mean()


def test_object_radius_sets_the_object_sizes(tmp_path):
    common = dict(num_train=24, num_val=1, img_size=96, seed=0, class_hues=False,
                  texture_period=(4, 8))
    roots = {name: str(tmp_path / name) for name in ('default', 'small', 'large')}
    generate_toy_scenes(roots['default'], **common)
    small = generate_toy_scenes(roots['small'], object_radius=(0.05, 0.1), **common)
    generate_toy_scenes(roots['large'], object_radius=(0.25, 0.3), **common)
    assert small['object_radius'] == [0.05, 0.1]
    # a circumradius r spans at most 2r + 1 px (the cross's corner reaches 1.06 r)
    bound = 2 * 1.06 * 0.1 * 96 + 1
    assert _instance_extents(roots['small']).max() <= bound
    assert _instance_extents(roots['default']).max() > bound  # radii up to 0.3 x 96 px
    shares = {name: _object_share(root) for name, root in roots.items()}
    assert shares['small'] < shares['default'] / 2 and shares['large'] > 2 * shares['default']
    period = dict(texture_period=(4, 8))
    assert toy_scenes_exist(roots['small'], object_radius=(0.05, 0.1), **period)
    assert not toy_scenes_exist(roots['small'], **period) and not toy_scenes_exist(
        roots['default'], object_radius=(0.05, 0.1), **period)
    with pytest.raises(ValueError, match='object_radius'):
        generate_toy_scenes(str(tmp_path / 'bad'), object_radius=(0.3, 0.1), **common)


def test_default_object_radius_leaves_the_set_unchanged(tmp_path):
    """The set the demo and the tests were built on, before ``object_radius`` existed: the
    SHA-256 of its PIL-read label maps and COCO files as the code of 04bf00c wrote them."""
    root = str(tmp_path)
    generate_toy_scenes(root, num_train=6, num_val=2, img_size=96, seed=0, class_hues=False,
                        texture_period=(4, 8))
    digest = hashlib.sha256()
    for split in ('train', 'val'):
        for name in sorted(os.listdir(osp.join(root, 'semantic', split))):
            digest.update(np.asarray(Image.open(osp.join(root, 'semantic', split, name)))
                          .tobytes())
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'rb') as f:
            digest.update(f.read())
    assert digest.hexdigest() == (
        'ace62d8237594c602d817e891ffdb1d21bb9bd08fb1bef689c684386cdfd4143')


def test_cli_object_radius(tmp_path, monkeypatch):
    out = str(tmp_path / 'cli')
    monkeypatch.setattr(sys, 'argv', ['make_toy_scenes.py', '--out', out, '--num-train', '2',
                                      '--num-val', '1', '--img-size', '64',
                                      '--object-radius', '0.05', '0.1'])
    with contextlib.redirect_stdout(io.StringIO()):
        runpy.run_path(osp.join(REPO, 'tools/misc/make_toy_scenes.py'), run_name='__main__')
    assert toy_scenes_exist(out, object_radius=(0.05, 0.1)) and not toy_scenes_exist(out)
