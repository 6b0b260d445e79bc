"""Images without labels, for self-supervised pretraining."""
import json
import os
import os.path as osp
from typing import List, Sequence, Union

from mmengine.dataset import BaseDataset

from mmdense.registry import DATASETS

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')


@DATASETS.register_module()
class UnlabeledImageDataset(BaseDataset):
    """Image paths from a folder (searched recursively) or from a list file.

    Folder mode (no ``ann_file``): every file under ``data_root/data_prefix`` whose extension is in
    ``extensions`` (case-insensitive), sorted by path, e.g. COCO ``train2017/`` or ImageNet
    ``train/``. List mode: ``ann_file`` names one image a line, relative to
    ``data_root/data_prefix``; blank lines and lines starting with ``#`` are skipped and a trailing
    integer label (ImageNet ``meta/train.txt`` style: ``n01440764/x.JPEG 0``) is ignored. A
    ``.json`` ``ann_file`` is read as a COCO annotation file (``images[*].file_name``). The toy
    set is ``data_root='data/toy_scenes', ann_file='meta/train.txt'``.

    Each data info holds ``img_path``; ``get_data_info`` adds ``sample_idx``. Problems with the
    inputs raise when the dataset is built: ``FileNotFoundError`` for a missing data root, image
    folder, list file or listed image (unless ``check_files=False``, which skips the per-image
    check of long lists), ``ValueError`` when no image is found.

    Args:
        data_root (str): Root joined with relative ``ann_file`` and ``data_prefix``.
        ann_file (str): Optional list file; empty for folder mode.
        data_prefix (str | dict): Image folder, as a string or ``dict(img_path=...)``.
        extensions (Sequence[str]): Image extensions accepted in folder mode.
        check_files (bool): In list mode, check that every listed image exists.
        **kwargs: Other :class:`mmengine.dataset.BaseDataset` arguments (``pipeline``, ...).
    """

    def __init__(self,
                 data_root: str = '',
                 ann_file: str = '',
                 data_prefix: Union[str, dict] = '',
                 extensions: Sequence[str] = IMG_EXTENSIONS,
                 check_files: bool = True,
                 **kwargs):
        if isinstance(data_prefix, str):
            data_prefix = dict(img_path=data_prefix)
        self.extensions = tuple(ext.lower() for ext in extensions)
        self.check_files = check_files
        super().__init__(ann_file=ann_file, data_root=data_root, data_prefix=data_prefix,
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        if self.data_root and not osp.isdir(self.data_root):
            raise FileNotFoundError(f'{type(self).__name__}: data root {self.data_root!r} '
                                    'does not exist or is not a directory')
        relative_paths = self._read_list_file() if self.ann_file else self._scan_folder()
        return [dict(img_path=osp.join(self.img_dir, path)) for path in relative_paths]

    @property
    def img_dir(self) -> str:
        """Folder the image paths are relative to."""
        return self.data_prefix.get('img_path', '') or self.data_root

    def _read_list_file(self) -> List[str]:
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(
                f'{type(self).__name__}: list file {self.ann_file!r} does not exist')
        paths = self._read_coco_json() if self.ann_file.endswith('.json') else self._read_lines()
        if not paths:
            raise ValueError(f'{type(self).__name__}: list file {self.ann_file!r} names no images')
        if self.check_files:
            missing = [p for p in paths if not osp.isfile(osp.join(self.img_dir, p))]
            if missing:
                raise FileNotFoundError(
                    f'{type(self).__name__}: {len(missing)} of {len(paths)} images named in '
                    f'{self.ann_file!r} do not exist under {self.img_dir!r}, e.g. '
                    f'{osp.join(self.img_dir, missing[0])!r}')
        return paths

    def _read_lines(self) -> List[str]:
        paths = []
        with open(self.ann_file) as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith('#'):
                    continue
                parts = line.rsplit(maxsplit=1)
                paths.append(parts[0] if len(parts) == 2 and parts[1].isdigit() else line)
        return paths

    def _read_coco_json(self) -> List[str]:
        """``file_name`` of every entry of a COCO annotation file's ``images``."""
        try:
            with open(self.ann_file) as f:
                images = json.load(f)['images']
            return [image['file_name'] for image in images]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f'{type(self).__name__}: {self.ann_file!r} is not a COCO annotation '
                             f'file with images[*].file_name ({error!r})') from error

    def _scan_folder(self) -> List[str]:
        img_dir = self.img_dir
        if not osp.isdir(img_dir):
            raise FileNotFoundError(f'{type(self).__name__}: image folder {img_dir!r} does not '
                                    'exist or is not a directory')
        paths = []
        for folder, subfolders, files in os.walk(img_dir, followlinks=True):
            subfolders.sort()
            relative_folder = osp.relpath(folder, img_dir)
            paths += [
                osp.normpath(osp.join(relative_folder, name)) for name in sorted(files)
                if name.lower().endswith(self.extensions)
            ]
        if not paths:
            raise ValueError(f'{type(self).__name__}: no images with extensions '
                             f'{self.extensions} found under {img_dir!r}')
        return paths
