"""Training pairs (image, one of its nearest neighbours) for cross-image objectives."""
import json
import logging
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log
from torch.utils.data import Dataset

from mmdense.registry import DATASETS
from mmdense.utils.errors import UserKeyError, UserValueError


def write_ring_neighbours(data_root: str, out: str, num_neighbours: int = 2) -> str:
    """Write a neighbour file pairing image i of ``data_root``'s ``meta/train.txt`` with images
    i+1, ..., i+k (mod N): pairs for checks and tests where which images pair does not matter
    (real runs take theirs from ``tools/misc/build_nn_pairs.py``). Returns ``out``."""
    with open(osp.join(data_root, 'meta', 'train.txt')) as f:
        images = [line.strip() for line in f if line.strip()]
    neighbours = [[(i + k) % len(images) for k in range(1, num_neighbours + 1)]
                  for i in range(len(images))]
    with open(out, 'w') as f:
        json.dump(dict(images=images, neighbours=neighbours), f)
    return out


def read_neighbours(path: str) -> dict:
    """The neighbour file written by ``tools/misc/build_nn_pairs.py``: ``images`` (relative
    paths) and ``neighbours`` (indices into ``images``, best first), with its provenance.

    The whole file is validated once: truncated JSON, a missing entry, an image that is not a
    path, or a neighbour index that is not an integer (``null``, ``true``, ``"3"``, ``1.5``), out
    of range or the image itself raise an error naming the file and the first bad entry. A file
    of the tool (it names its ``checkpoint``) that does not record ``model_input`` (the channel
    order, mean and std the embedding backbone saw) was written before the tool embedded RGB
    images: its neighbours are those of channel-swapped images, and a warning says to rebuild it.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'neighbour file {path!r} does not exist: build it with '
                                '`python tools/misc/build_nn_pairs.py CONFIG CKPT --out FILE`')
    try:
        with open(path) as f:
            record = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserValueError(f'neighbour file {path!r} is not valid JSON (truncated?): '
                             f'{error}') from None
    if not isinstance(record, dict):
        raise UserValueError(f'neighbour file {path!r} holds a JSON {type(record).__name__}, '
                             "not an object with 'images' and 'neighbours'")
    for key in ('images', 'neighbours'):
        if not isinstance(record.get(key), list):
            raise UserKeyError(f'neighbour file {path!r} has no {key!r} list')
    images, neighbours = record['images'], record['neighbours']
    if len(images) != len(neighbours):
        raise UserValueError(f'neighbour file {path!r}: {len(images)} images but '
                             f'{len(neighbours)} neighbour lists')
    for i, image in enumerate(images):
        if not isinstance(image, str):
            raise UserValueError(f'neighbour file {path!r}: images[{i}] is {image!r}, not a '
                                 'path')
    for i, row in enumerate(neighbours):
        problem = _neighbour_row_problem(row, i, len(images))
        if problem:
            raise UserValueError(f'neighbour file {path!r}: neighbours[{i}] (of '
                                 f'{images[i]!r}) {problem}')
    if 'checkpoint' in record and 'model_input' not in record:
        print_log(f'neighbour file {path!r} records no model_input: it was written by a '
                  'build_nn_pairs.py that embedded the BGR pipeline images as RGB, so its '
                  'neighbours are those of channel-swapped images; rebuild it with '
                  '`python tools/misc/build_nn_pairs.py`', logger='current', level=logging.WARNING)
    return record


def _neighbour_row_problem(row, i: int, num_images: int) -> Optional[str]:
    """Why ``row``, the neighbour list of image ``i``, is invalid, or None."""
    if not isinstance(row, list) or not row:
        return f'is {row!r}, not a non-empty list of indices'
    for rank, j in enumerate(row):
        if isinstance(j, bool) or not isinstance(j, int):
            return f'[{rank}] is {j!r}, not an integer index'
        if not 0 <= j < num_images:
            return f'[{rank}] is {j}, outside [0, {num_images - 1}]'
        if j == i:
            return f'[{rank}] is the image itself'
    return None


@DATASETS.register_module()
class NeighbourPairDataset(Dataset):
    """Each sample is an image and a random one of its top-k neighbours, both through the
    wrapped dataset's pipeline (e.g. multi-crop).

    The packed sample holds the image's views followed by the neighbour's views in ``inputs``;
    its data sample's ``crop_boxes`` / ``flips`` are concatenated the same way and it gains
    ``num_pair_views`` (views per image) and ``neighbour_idx``. The neighbour is drawn with
    ``np.random``, which mmengine seeds per worker, so runs are reproducible.

    Args:
        dataset: the image dataset (config or instance) whose ``img_path``\\ s the neighbour
            file lists relative to its ``img_dir`` (or ``data_root``).
        neighbours_file: JSON from ``tools/misc/build_nn_pairs.py``.
        num_neighbours: draw from the first k neighbours only (default: all in the file).
        loss_terms: names of the loss terms this source feeds, stored as ``loss_terms`` in each
            data sample (e.g. CoTAP's patch terms on COCO and CLS terms on ImageNet, with
            :class:`SourceGroupedBatchSampler`); default: all.

    To skip unreadable images, wrap this dataset (not the image dataset inside it) in
    :class:`SkipCorruptImages`: a pair whose image or neighbour cannot be loaded is then
    replaced by the next pair, and the file is logged. Substituting only the unreadable image
    would pair an image with one that is not its neighbour, so that wrapping is refused.
    """

    def __init__(self,
                 dataset: Union[dict, BaseDataset],
                 neighbours_file: str,
                 num_neighbours: Optional[int] = None,
                 loss_terms: Optional[Sequence[str]] = None) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        if not hasattr(self.dataset, 'get_data_info'):
            raise TypeError(
                f'{type(self).__name__} needs an image dataset with get_data_info (e.g. '
                f'UnlabeledImageDataset), got {type(self.dataset).__name__}; to skip unreadable '
                f"images wrap the pairs instead: dict(type='SkipCorruptImages', "
                f"dataset=dict(type='{type(self).__name__}', ...))")
        self.neighbours_file = neighbours_file
        self.loss_terms = None if loss_terms is None else tuple(loss_terms)
        record = read_neighbours(neighbours_file)
        available = min(len(n) for n in record['neighbours'])
        num_neighbours = num_neighbours or available
        if not 1 <= num_neighbours <= available:
            raise ValueError(f'{type(self).__name__}: num_neighbours={num_neighbours} but '
                             f'{neighbours_file!r} has {available} neighbours per image')
        self.neighbours = self._to_dataset_indices(record, num_neighbours)

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def _relative_paths(self) -> List[str]:
        root = getattr(self.dataset, 'img_dir', '') or self.dataset.data_root
        return [osp.relpath(self.dataset.get_data_info(i)['img_path'], root)
                for i in range(len(self.dataset))]

    def _to_dataset_indices(self, record: dict, num_neighbours: int) -> np.ndarray:
        file_index = {path: i for i, path in enumerate(record['images'])}
        paths = self._relative_paths()
        missing = [p for p in paths if p not in file_index]
        if missing:
            raise KeyError(f'{self.neighbours_file!r} has no neighbours for {len(missing)} '
                           f'image(s) of the dataset, e.g. {missing[:3]}: rebuild it for this '
                           'dataset')
        dataset_index = {file_index[p]: i for i, p in enumerate(paths)}
        neighbours = np.empty((len(paths), num_neighbours), dtype=np.int64)
        for i, path in enumerate(paths):
            for rank, j in enumerate(record['neighbours'][file_index[path]][:num_neighbours]):
                if j not in dataset_index:
                    raise KeyError(f'{self.neighbours_file!r}: neighbour '
                                   f'{record["images"][j]!r} of {path!r} is not in the dataset')
                neighbours[i, rank] = dataset_index[j]
        return neighbours

    def full_init(self) -> None:
        """Nothing left to load (the pairs are built in ``__init__``); ``ConcatDataset`` calls
        this on each of its datasets."""
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        neighbour_idx = int(self.neighbours[idx, np.random.randint(self.neighbours.shape[1])])
        image, neighbour = self.dataset[idx], self.dataset[neighbour_idx]
        sample = image['data_samples']
        other = neighbour['data_samples']
        sample.set_field(torch.cat([sample.crop_boxes, other.crop_boxes]), 'crop_boxes')
        sample.set_field(torch.cat([sample.flips, other.flips]), 'flips')
        sample.set_field(len(image['inputs']), 'num_pair_views', field_type='metainfo')
        sample.set_field(neighbour_idx, 'neighbour_idx', field_type='metainfo')
        if self.loss_terms is not None:
            sample.set_field(self.loss_terms, 'loss_terms', field_type='metainfo')
        return dict(inputs=list(image['inputs']) + list(neighbour['inputs']),
                    data_samples=sample)
