"""Image + semantic-map samples for dense evaluation, read through mmseg dataset definitions.

A dense-eval dataset config (``configs/_base_/datasets/dense_eval_*.py``) defines
``dense_eval_data = dict(num_classes, ignore_index, img_size, label_lut, train, val)`` where
``train``/``val`` are mmseg dataset configs (they list the files and carry ``label_map`` /
``reduce_zero_label``), optionally with ``instance_ann_file`` (COCO instances json, relative to
``data_root``) for the intra-instance statistic and ``img_list`` (a text file of image ids, one
per line, e.g. a curated split; relative paths are taken from ``data_root``). Images are resized
to ``img_size`` by ``crop``: ``'center'`` (shorter side to ``img_size``, then the centre square,
the default) or ``'resize'`` (straight to ``img_size x img_size``, aspect not kept). Labels follow
with nearest interpolation, then go (nearest) to ``label_size`` when it is given: the resolution
at which predictions are scored.
"""
import contextlib
import io
import os.path as osp
from typing import Dict, Optional

import cv2
import numpy as np
import torch
from mmengine.config import Config
from PIL import Image
from pycocotools.coco import COCO

from .data_check import check_data
from .data_files import split_parts, split_root

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
                      '_base_', 'datasets')
DATASET_CONFIGS = {
    'toy': 'dense_eval_toy.py',
    'coco_stuff27': 'dense_eval_coco_stuff27.py',
    'voc12': 'dense_eval_voc12.py',
    'voc12aug': 'dense_eval_voc12aug.py',
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
    from mmseg.datasets import COCOStuffDataset  # mmseg is optional ([lite]): imported when used
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
    """The ``dense_eval_data`` dict of a dataset config, with ``data_root`` overridden if given
    (in every part of a split)."""
    path = resolve_dataset_config(name_or_path)
    cfg = Config.fromfile(path)
    if 'dense_eval_data' not in cfg:
        raise KeyError(f'{path} defines no `dense_eval_data`')
    data_cfg = cfg.dense_eval_data.to_dict()
    if data_root is not None:
        for split in ('train', 'val'):
            for part in split_parts(data_cfg[split]):
                part['data_root'] = data_root
    return data_cfg


CROP_MODES = ('center', 'resize')


def _resize_crop(array: np.ndarray, size: int, interpolation: int,
                 crop: str = 'center') -> np.ndarray:
    """``array`` (H, W[, 3]) → (size, size): see the module docstring for ``crop``."""
    if crop == 'resize':
        return cv2.resize(array, (size, size), interpolation=interpolation)
    h, w = array.shape[:2]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    array = cv2.resize(array, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return array[top:top + size, left:left + size]


def _read_label(path: str) -> np.ndarray:
    """A label PNG as stored (palette indices for palette PNGs such as VOC's), int64 (H, W)."""
    try:
        with Image.open(path) as image:
            label = np.array(image)
    except OSError as error:
        raise FileNotFoundError(f'cannot read label map {path}: {error}') from None
    if label.ndim != 2:
        raise ValueError(f'label map {path} has shape {label.shape}; expected one channel '
                         '(class indices)')
    return label.astype(np.int64)


class DenseEvalDataset(torch.utils.data.Dataset):
    """One split of a dense-eval dataset, read one sample at a time (for a ``DataLoader``).

    Item ``i``: ``dict(image (3, S, S) uint8 RGB, label (L, L) long, index i)`` and, when the
    split has ``instance_ann_file``, ``instances (L, L) long`` (ids 1..n in annotation order,
    0 = none), with ``S = img_size``, ``L = label_size`` (default ``S``).

    Args:
        data_cfg: a ``dense_eval_data`` dict (:func:`load_dataset_config`).
        split: ``'train'`` or ``'val'``.
        num_samples: keep the first ``num_samples`` samples (of the image list when given).
    """

    def __init__(self, data_cfg: dict, split: str, num_samples: Optional[int] = None) -> None:
        if split not in data_cfg:
            raise KeyError(f'dense-eval dataset config has no split {split!r}')
        self.split_cfg = data_cfg[split]
        root = split_root(self.split_cfg)
        check = check_data(data_cfg, {split: num_samples})
        if not check.complete:
            raise check.error()
        infos = check.samples[split]
        self.num_available = check.num_listed[split]  # before num_samples
        self.infos = infos
        if not self.infos:
            raise ValueError(f'no samples found for split {split!r} under {root}')
        self.img_size = data_cfg['img_size']
        self.label_size = data_cfg.get('label_size') or self.img_size
        self.crop = data_cfg.get('crop', 'center')
        if self.crop not in CROP_MODES:
            raise ValueError(f'dense-eval crop must be one of {CROP_MODES}, got {self.crop!r}')
        self.ignore_index = data_cfg.get('ignore_index', 255)
        self.lut = LABEL_LUTS[data_cfg['label_lut']]() if data_cfg.get('label_lut') else None
        ann_file = self.split_cfg.get('instance_ann_file')
        self.instance_ann_file = osp.join(root, ann_file) if ann_file else None
        self._coco = None  # loaded on first use, in the process that reads

    def __len__(self) -> int:
        return len(self.infos)

    def _label(self, info: dict) -> np.ndarray:
        label = _read_label(info['seg_map_path'])
        if info.get('reduce_zero_label'):
            label = np.where(label == 0, self.ignore_index, label - 1)
            label[label == self.ignore_index - 1] = self.ignore_index
        for old, new in (info.get('label_map') or {}).items():
            label[label == old] = new
        if self.lut is not None:
            label = self.lut[np.clip(label, 0, 255)].astype(np.int64)
        return label

    def _to_label_grid(self, array: np.ndarray) -> torch.Tensor:
        array = _resize_crop(array.astype(np.int32), self.img_size, cv2.INTER_NEAREST, self.crop)
        if self.label_size != self.img_size:
            array = cv2.resize(array, (self.label_size, self.label_size),
                               interpolation=cv2.INTER_NEAREST)
        return torch.as_tensor(array).long()

    def _instance_map(self, img_path: str, shape) -> np.ndarray:
        """Instance ids (1..n in annotation order, 0 = none) of one image from COCO instances."""
        if self._coco is None:
            with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
                coco = COCO(self.instance_ann_file)
            self._coco = (coco, {osp.basename(img['file_name']): img['id']
                                 for img in coco.dataset['images']})
        coco, id_of = self._coco
        instance_map = np.zeros(shape, np.int32)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=id_of[osp.basename(img_path)]))
        for number, ann in enumerate(anns, 1):
            instance_map[coco.annToMask(ann) > 0] = number
        return instance_map

    def __getitem__(self, index: int) -> dict:
        info = self.infos[index]
        image = cv2.imread(info['img_path'], cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read image {info['img_path']}")
        label = self._label(info)
        image = _resize_crop(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), self.img_size,
                             cv2.INTER_LINEAR, self.crop)
        item = dict(image=torch.as_tensor(image).permute(2, 0, 1).contiguous(),
                    label=self._to_label_grid(label), index=index)
        if self.instance_ann_file:
            item['instances'] = self._to_label_grid(
                self._instance_map(info['img_path'], label.shape))
        return item


def load_split(data_cfg: dict, split: str, num_samples: Optional[int] = None) -> Dict:
    """The first ``num_samples`` samples of ``split`` as tensors, all in memory.

    Returns ``dict(images (N, 3, S, S) uint8 RGB, labels (N, L, L) long, instances (N, L, L)
    long or None, img_paths)`` (:class:`DenseEvalDataset` items stacked). For splits too large
    for memory use the on-disk :class:`mmdense.evaluation.FeatureStore`.
    """
    dataset = DenseEvalDataset(data_cfg, split, num_samples)
    items = [dataset[i] for i in range(len(dataset))]
    return dict(
        images=torch.stack([item['image'] for item in items]),
        labels=torch.stack([item['label'] for item in items]),
        instances=torch.stack([item['instances'] for item in items])
        if dataset.instance_ann_file else None,
        img_paths=[info['img_path'] for info in dataset.infos])
