"""Image + semantic-map samples for dense evaluation, read through mmseg dataset definitions.

A dense-eval dataset config (``configs/_base_/datasets/dense_eval_*.py``) defines
``dense_eval_data = dict(num_classes, ignore_index, img_size, label_lut, train, val)`` where
``train``/``val`` are mmseg dataset configs (they list the files and carry ``label_map`` /
``reduce_zero_label``), optionally with ``instance_ann_file`` (COCO instances json, relative to
``data_root``) for the intra-instance statistic. Images are resized (shorter side) and centre
cropped to ``img_size``; labels use nearest interpolation.
"""
import contextlib
import copy
import io
import os.path as osp
from typing import Dict, Optional

import cv2
import numpy as np
import torch

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
                      '_base_', 'datasets')
DATASET_CONFIGS = {
    'toy': 'dense_eval_toy.py',
    'coco_stuff27': 'dense_eval_coco_stuff27.py',
    'voc12': 'dense_eval_voc12.py',
    'ade20k': 'dense_eval_ade20k.py',
    'cityscapes': 'dense_eval_cityscapes.py',
}

# COCO-Stuff coarse categories: 12 "things" then 15 "stuff" supercategories.
COCO_STUFF_27_CLASSES = (
    'electronic', 'appliance', 'food-things', 'furniture-things', 'indoor', 'kitchen',
    'accessory', 'animal', 'outdoor', 'person', 'sports', 'vehicle', 'ceiling', 'floor',
    'food-stuff', 'furniture-stuff', 'raw-material', 'textile', 'wall', 'window', 'building',
    'ground', 'plant', 'sky', 'solid', 'structural', 'water')
_COCO_STUFF_SUPERCATEGORIES = {
    'electronic': 'tv laptop mouse remote keyboard cell_phone',
    'appliance': 'microwave oven toaster sink refrigerator',
    'food-things': 'banana apple sandwich orange broccoli carrot hot_dog pizza donut cake',
    'furniture-things': 'chair couch potted_plant bed dining_table toilet',
    'indoor': 'book clock vase scissors teddy_bear hair_drier toothbrush',
    'kitchen': 'bottle wine_glass cup fork knife spoon bowl',
    'accessory': 'backpack umbrella handbag tie suitcase',
    'animal': 'bird cat dog horse sheep cow elephant bear zebra giraffe',
    'outdoor': 'traffic_light fire_hydrant stop_sign parking_meter bench',
    'person': 'person',
    'sports': 'frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard '
              'surfboard tennis_racket',
    'vehicle': 'bicycle car motorcycle airplane bus train truck boat',
    'ceiling': 'ceiling-other ceiling-tile',
    'floor': 'carpet floor-marble floor-other floor-stone floor-tile floor-wood',
    'food-stuff': 'food-other fruit salad vegetable',
    'furniture-stuff': 'cabinet counter cupboard desk-stuff door-stuff furniture-other light '
                       'mirror-stuff shelf stairs table',
    'raw-material': 'cardboard metal paper plastic',
    'textile': 'banner blanket cloth clothes curtain mat napkin pillow rug textile-other towel',
    'wall': 'wall-brick wall-concrete wall-other wall-panel wall-stone wall-tile wall-wood',
    'window': 'window-blind window-other',
    'building': 'bridge building-other house roof skyscraper tent',
    'ground': 'dirt gravel ground-other mud pavement platform playingfield railroad road sand '
              'snow',
    'plant': 'branch bush flower grass leaves moss plant-other straw tree',
    'sky': 'clouds sky-other',
    'solid': 'hill mountain rock solid-other stone wood',
    'structural': 'cage fence net railing structural-other',
    'water': 'fog river sea water-other waterdrops',
}


def coco_stuff_171_to_27() -> np.ndarray:
    """Lookup table (256,) from mmseg's 171 COCO-Stuff class indices to the 27 coarse classes
    (:data:`COCO_STUFF_27_CLASSES`); 255 stays 255."""
    from mmseg.datasets import COCOStuffDataset
    coarse_of = {
        name.replace('_', ' '): COCO_STUFF_27_CLASSES.index(coarse)
        for coarse, names in _COCO_STUFF_SUPERCATEGORIES.items() for name in names.split()
    }
    lut = np.full(256, 255, np.uint8)
    for index, name in enumerate(COCOStuffDataset.METAINFO['classes']):
        lut[index] = coarse_of[name]
    return lut


LABEL_LUTS = {'coco_stuff_171_to_27': coco_stuff_171_to_27}


def resolve_dataset_config(name_or_path: str) -> str:
    """Config file of a dataset given by name (:data:`DATASET_CONFIGS`) or path."""
    if name_or_path in DATASET_CONFIGS:
        return osp.join(CONFIG_DIR, DATASET_CONFIGS[name_or_path])
    if osp.isfile(name_or_path):
        return name_or_path
    raise FileNotFoundError(f'unknown dense-eval dataset {name_or_path!r}: use one of '
                            f'{sorted(DATASET_CONFIGS)} or a config file path')


def load_dataset_config(name_or_path: str, data_root: Optional[str] = None) -> dict:
    """The ``dense_eval_data`` dict of a dataset config, with ``data_root`` overridden if given."""
    from mmengine.config import Config
    path = resolve_dataset_config(name_or_path)
    cfg = Config.fromfile(path)
    if 'dense_eval_data' not in cfg:
        raise KeyError(f'{path} defines no `dense_eval_data`')
    data_cfg = cfg.dense_eval_data.to_dict()
    if data_root is not None:
        for split in ('train', 'val'):
            data_cfg[split]['data_root'] = data_root
    return data_cfg


def _check_paths(split_cfg: dict) -> None:
    root = split_cfg.get('data_root', '')
    paths = [osp.join(root, p) for p in split_cfg.get('data_prefix', {}).values()]
    for key in ('ann_file', 'instance_ann_file'):
        if split_cfg.get(key):
            paths.append(osp.join(root, split_cfg[key]))
    for path in paths:
        if not osp.exists(path):
            raise FileNotFoundError(f'dense-eval dataset path not found: {path} '
                                    f"(data_root={root!r}, dataset type {split_cfg.get('type')})")


def build_seg_dataset(split_cfg: dict):
    """An mmseg dataset (file lists, label_map) from ``split_cfg``, without its pipeline."""
    import mmseg.datasets  # noqa: F401  (registers the mmseg dataset classes)
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS
    cfg = copy.deepcopy(split_cfg)
    cfg.pop('instance_ann_file', None)
    _check_paths(split_cfg)
    cfg['pipeline'] = []
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(cfg)


def _resize_crop(array: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    h, w = array.shape[:2]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    array = cv2.resize(array, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return array[top:top + size, left:left + size]


def _instance_maps(ann_file: str, img_paths, shapes) -> np.ndarray:
    """Per-image instance id maps (1..n in annotation order, 0 = none) from COCO instances."""
    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
        coco = COCO(ann_file)
    id_of = {osp.basename(img['file_name']): img['id'] for img in coco.dataset['images']}
    maps = []
    for path, shape in zip(img_paths, shapes):
        instance_map = np.zeros(shape, np.int32)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=id_of[osp.basename(path)]))
        for number, ann in enumerate(anns, 1):
            instance_map[coco.annToMask(ann) > 0] = number
        maps.append(instance_map)
    return maps


def load_split(data_cfg: dict, split: str, num_samples: Optional[int] = None) -> Dict:
    """The first ``num_samples`` samples of ``split`` as tensors.

    Returns ``dict(images (N, 3, S, S) uint8 RGB, labels (N, S, S) long, instances (N, S, S)
    long or None, img_paths)`` with ``S = data_cfg['img_size']``.
    """
    if split not in data_cfg:
        raise KeyError(f'dense-eval dataset config has no split {split!r}')
    split_cfg = data_cfg[split]
    dataset = build_seg_dataset(split_cfg)
    count = len(dataset) if num_samples is None else min(num_samples, len(dataset))
    if count == 0:
        raise ValueError(f"no samples found for split {split!r} under {split_cfg.get('data_root')}")
    size, ignore_index = data_cfg['img_size'], data_cfg.get('ignore_index', 255)
    lut = LABEL_LUTS[data_cfg['label_lut']]() if data_cfg.get('label_lut') else None
    images, labels, raw_shapes, img_paths = [], [], [], []
    for index in range(count):
        info = dataset.get_data_info(index)
        image = cv2.imread(info['img_path'], cv2.IMREAD_COLOR)
        label = cv2.imread(info['seg_map_path'], cv2.IMREAD_UNCHANGED)
        if image is None or label is None:
            raise FileNotFoundError(f"cannot read {info['img_path']} or {info['seg_map_path']}")
        label = label.astype(np.int64)
        if info.get('reduce_zero_label'):
            label = np.where(label == 0, ignore_index, label - 1)
            label[label == ignore_index - 1] = ignore_index
        for old, new in (info.get('label_map') or {}).items():
            label[label == old] = new
        if lut is not None:
            label = lut[np.clip(label, 0, 255)].astype(np.int64)
        raw_shapes.append(label.shape)
        img_paths.append(info['img_path'])
        images.append(_resize_crop(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), size,
                                   cv2.INTER_LINEAR))
        labels.append(_resize_crop(label.astype(np.int32), size, cv2.INTER_NEAREST))
    instances = None
    if split_cfg.get('instance_ann_file'):
        ann_file = osp.join(split_cfg.get('data_root', ''), split_cfg['instance_ann_file'])
        instances = torch.as_tensor(np.stack([
            _resize_crop(m, size, cv2.INTER_NEAREST)
            for m in _instance_maps(ann_file, img_paths, raw_shapes)
        ])).long()
    return dict(
        images=torch.as_tensor(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        labels=torch.as_tensor(np.stack(labels)).long(),
        instances=instances,
        img_paths=img_paths)
