"""The file listing of a dense-eval split: its mmseg parts, its data root, its samples.

Only file lists are read here (mmseg's dataset definitions and the optional ``img_list``);
:func:`.data_check.check_data` checks that the files exist, and :class:`.data.DenseEvalDataset`
reads them.
"""
import copy
import os.path as osp
from typing import List, Optional, Tuple

from mmengine.fileio import list_dir_or_file
from mmengine.registry import DefaultScope


def split_parts(split_cfg: dict) -> List[dict]:
    """The mmseg dataset configs of one split: ``split_cfg['datasets']`` for a
    ``dict(type='ConcatDataset', datasets=[...])`` (its parts' samples in that order, as in
    mmseg's ``pascal_voc12_aug.py``), else ``[split_cfg]``."""
    if split_cfg.get('type') == 'ConcatDataset':
        return list(split_cfg['datasets'])
    return [split_cfg]


def split_root(split_cfg: dict) -> str:
    """A split's data root: its first part's ``data_root``."""
    return split_parts(split_cfg)[0].get('data_root', '')


_DATASET_ONLY_KEYS = ('instance_ann_file', 'img_list')  # ours, not the mmseg dataset's


class FolderSegFiles:
    """The file list of a plain ``BaseSegDataset`` part (no ``metainfo``, no ``ann_file``),
    listed the way mmseg 1.x lists it, for environments without mmseg (the ``lite`` install:
    ``mmseg.datasets`` imports compiled mmcv ops that ``mmcv-lite`` lacks). The images are the
    files under ``data_root/data_prefix.img_path`` ending in ``img_suffix`` (sub-folders
    included), sorted by path; each one's map is the same relative name with ``seg_map_suffix``
    under ``seg_map_path``. ``tests/test_evaluation/test_dense_presets.py`` checks it against
    mmseg's own listing."""

    def __init__(self, part_cfg: dict) -> None:
        root = part_cfg.get('data_root', '')
        prefix = part_cfg.get('data_prefix', {})
        self.img_dir = osp.join(root, prefix.get('img_path', ''))
        self.seg_dir = osp.join(root, prefix.get('seg_map_path', ''))
        self.img_suffix = part_cfg.get('img_suffix', '.jpg')
        self.seg_map_suffix = part_cfg.get('seg_map_suffix', '.png')
        self.reduce_zero_label = part_cfg.get('reduce_zero_label', False)
        names = list_dir_or_file(self.img_dir, list_dir=False, suffix=self.img_suffix,
                                 recursive=True) if osp.isdir(self.img_dir) else []
        self.names = sorted(names, key=lambda name: osp.join(self.img_dir, name))

    def __len__(self) -> int:
        return len(self.names)

    def get_data_info(self, index: int) -> dict:
        name = self.names[index]
        seg_name = name[:-len(self.img_suffix)] + self.seg_map_suffix
        return dict(img_path=osp.join(self.img_dir, name),
                    seg_map_path=osp.join(self.seg_dir, seg_name), label_map=None,
                    reduce_zero_label=self.reduce_zero_label, seg_fields=[], sample_idx=index)


def build_seg_dataset(part_cfg: dict):
    """An mmseg dataset (file lists, label_map) from one part of a split
    (:func:`split_parts`), without its pipeline. Its folders and ``ann_file`` must exist
    (:func:`.data_check.check_data` says which do not). Without mmseg, a plain
    ``BaseSegDataset`` part is listed by :class:`FolderSegFiles` (the toy sets); any other part
    is one error saying what to install."""
    try:
        # mmseg is optional ([lite] has none): imported when used; importing mmseg.datasets
        # registers its dataset classes
        import mmseg.datasets  # noqa: F401
    except ImportError as error:
        plain = (part_cfg.get('type') == 'BaseSegDataset'
                 and not {'metainfo', 'ann_file'} & set(part_cfg))
        if plain:
            return FolderSegFiles(part_cfg)
        raise ImportError(f"dense-eval data of type {part_cfg.get('type')!r} is read through "
                          f'mmsegmentation, which cannot be imported here ({error}): run '
                          '`make install` (the full environment with the compiled mmcv)') from error
    from mmseg.registry import DATASETS
    cfg = copy.deepcopy(part_cfg)
    for key in _DATASET_ONLY_KEYS:
        cfg.pop(key, None)
    cfg['pipeline'] = []
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(cfg)


def read_image_list(path: str) -> List[str]:
    """Image ids (file names without the dataset's image suffix) listed one per line in ``path``;
    blank lines are skipped."""
    with open(path) as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f'image list {path} is empty')
    return ids


def image_list_path(split_cfg: dict) -> Optional[str]:
    """The split's ``img_list`` file (relative paths from ``data_root``), or None."""
    if not split_cfg.get('img_list'):
        return None
    return osp.join(split_root(split_cfg), split_cfg['img_list'])


def list_samples(split_cfg: dict) -> Tuple[List[dict], List[str]]:
    """The samples of a split, as ``(infos, unlisted)``.

    ``infos``: the mmseg ``get_data_info`` dicts of every part (:func:`split_parts`) in order,
    each with ``part`` (its index) and ``sample_id`` (the image file name without the part's
    image suffix); restricted to and ordered by the split's ``img_list`` when it has one.
    ``unlisted``: the image file names (id + the first part's image suffix) of the ids in
    ``img_list`` that no part has (empty without a list). Nothing is read but the file lists;
    whether the files exist is :func:`.data_check.check_data`'s job.
    """
    infos, suffixes = [], []
    for index, part in enumerate(split_parts(split_cfg)):
        dataset = build_seg_dataset(part)
        suffixes.append(dataset.img_suffix)
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            info.update(part=index,
                        sample_id=osp.basename(info['img_path'])[:-len(dataset.img_suffix)])
            infos.append(info)
    list_file = image_list_path(split_cfg)
    if list_file is None:
        return infos, []
    by_id = {info['sample_id']: info for info in infos}
    ids = read_image_list(list_file)
    return ([by_id[i] for i in ids if i in by_id],
            [f'{i}{suffixes[0]}' for i in ids if i not in by_id])
