"""Dense feature stores, the input of every protocol (:mod:`.protocols`): on local disk
(:class:`FeatureStore`, any split size) or in RAM (:class:`MemoryFeatureStore`, small splits),
with one interface, filled from a ``DataLoader`` or from tensors.

With ``W`` processes (``torch.distributed``), rank ``r`` owns images ``r, r + W, r + 2W, ...`` of
a split and stores their features, labels and instance maps.
"""
import os
import os.path as osp
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.utils import ProgressBar
from torch import Tensor, nn

from mmdense.utils.dist import get_rank, get_world_size
from .features import check_channel_order, dense_features, model_inputs


def _read_rows(path: str, dtype: np.dtype, row_shape: Tuple[int, ...],
               positions: Sequence[int]) -> np.ndarray:
    """Rows ``positions`` (ascending) of a file of rows of ``row_shape``, one read per run of
    consecutive positions, without mapping the file into memory."""
    row_count = int(np.prod(row_shape))
    out = np.empty((len(positions), row_count), dtype)
    start = 0
    while start < len(positions):
        stop = start + 1
        while stop < len(positions) and positions[stop] == positions[stop - 1] + 1:
            stop += 1
        out[start:stop] = np.fromfile(
            path, dtype, count=(stop - start) * row_count,
            offset=int(positions[start]) * row_count * dtype.itemsize).reshape(stop - start, -1)
        start = stop
    return out.reshape(len(positions), *row_shape)


class StoreBase:
    """What the protocols read: the features ``(n, C, h, w)``, labels ``(n, L, L)`` and optional
    instance maps ``(n, L, L)`` of the ``n`` images one process owns, in the order they were
    appended, with their indices in the split (:attr:`indices`).

    A backend implements :meth:`append`, :meth:`_read_field` and :meth:`remove`; reads return
    ``feats`` float32, ``labels`` / ``instances`` long.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        self.indices: List[int] = []

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def feat_shape(self) -> Tuple[int, int, int]:
        """``(C, h, w)`` of the stored feature maps."""
        if 'feats' not in self.shapes:
            raise ValueError(f'feature store {self.name} is empty: this process was given no '
                             'images (more processes than images?)')
        return self.shapes['feats']

    @property
    def has_instances(self) -> bool:
        return 'instances' in self.shapes

    def _check_shapes(self, arrays: Dict[str, Tensor]) -> None:
        for name, tensor in arrays.items():
            shape = tuple(tensor.shape[1:])
            if self.shapes.setdefault(name, shape) != shape:
                raise ValueError(f'feature store {self.name}: {name} of shape {shape} after '
                                 f'{self.shapes[name]}')

    def append(self, feats: Tensor, labels: Tensor, indices: Tensor,
               instances: Optional[Tensor] = None) -> None:
        """Add a batch: ``feats (B, C, h, w)``, ``labels (B, L, L)``, the images' indices in
        the split ``(B,)`` and optionally ``instances (B, L, L)``."""
        raise NotImplementedError

    def _read_field(self, name: str, positions: List[int]) -> Tensor:
        raise NotImplementedError

    def read(self, positions: Sequence[int],
             fields: Sequence[str] = ('feats', 'labels', 'instances')) -> Dict[str, Tensor]:
        """The images at ``positions`` (ascending) of this store: ``dict(indices long)`` and of
        ``fields`` those stored: ``feats`` float32, ``labels`` long, ``instances`` long
        (``None`` when not stored)."""
        positions = list(positions)
        out = dict(indices=torch.tensor([self.indices[p] for p in positions], dtype=torch.long))
        for name in fields:
            out[name] = self._read_field(name, positions) if name in self.shapes else None
        return out

    def chunks(self, chunk_images: int,
               fields: Sequence[str] = ('feats', 'labels', 'instances')
               ) -> Iterator[Dict[str, Tensor]]:
        """:meth:`read` of consecutive blocks of ``chunk_images`` images."""
        for start in range(0, len(self), chunk_images):
            yield self.read(range(start, min(start + chunk_images, len(self))), fields)

    def remove(self) -> None:
        """Free what the store holds."""
        raise NotImplementedError


class FeatureStore(StoreBase):
    """The on-disk backend: each field appended in batches to a file under ``folder`` and read
    back by position (no memory map: a read holds the rows it returns only).

    Args:
        folder: directory for the files (created; :meth:`remove` deletes them).
        dtype: feature precision on disk, ``'float32'`` (exact) or ``'float16'`` (half the disk
            space; features are read back as float32).
    """
    FILES = dict(feats='feats.bin', labels='labels.bin', instances='instances.bin')
    DTYPES = dict(labels=np.dtype(np.int16), instances=np.dtype(np.int32))

    def __init__(self, folder: str, dtype: str = 'float32') -> None:
        if dtype not in ('float32', 'float16'):
            raise ValueError(f"FeatureStore dtype must be 'float32' or 'float16', got {dtype!r}")
        super().__init__(folder)
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.dtypes = dict(self.DTYPES, feats=np.dtype(dtype))
        for name in self.FILES:
            if osp.exists(self._path(name)):
                os.remove(self._path(name))

    def _path(self, name: str) -> str:
        return osp.join(self.folder, self.FILES[name])

    def append(self, feats: Tensor, labels: Tensor, indices: Tensor,
               instances: Optional[Tensor] = None) -> None:
        arrays = dict(feats=feats, labels=labels)
        if instances is not None:
            arrays['instances'] = instances
        self._check_shapes(arrays)
        for name, tensor in arrays.items():
            array = tensor.detach().cpu().numpy().astype(self.dtypes[name], copy=False)
            with open(self._path(name), 'ab') as f:
                f.write(np.ascontiguousarray(array).tobytes())
        self.indices.extend(int(i) for i in indices)

    def _read_field(self, name: str, positions: List[int]) -> Tensor:
        array = torch.from_numpy(_read_rows(self._path(name), self.dtypes[name],
                                            self.shapes[name], positions))
        return array.float() if name == 'feats' else array.long()

    def remove(self) -> None:
        for name in self.FILES:
            if osp.exists(self._path(name)):
                os.remove(self._path(name))
        if osp.isdir(self.folder) and not os.listdir(self.folder):
            os.rmdir(self.folder)


class MemoryFeatureStore(StoreBase):
    """The RAM backend: the appended batches kept as CPU tensors (features float32, labels and
    instance maps long), read back exactly. For splits that fit in memory (the toy set, the
    demo); :meth:`from_tensors` wraps tensors already in hand.
    """

    def __init__(self, name: str = 'in memory') -> None:
        super().__init__(name)
        self.batches: Dict[str, List[Tensor]] = {}
        self.rows: Dict[str, Tensor] = {}

    @classmethod
    def from_tensors(cls, feats: Tensor, labels: Tensor,
                     instances: Optional[Tensor] = None) -> 'MemoryFeatureStore':
        """A store of images ``0..N-1``: ``feats (N, C, h, w)``, ``labels (N, L, L)``,
        ``instances (N, L, L)`` or None."""
        store = cls()
        store.append(feats, labels, torch.arange(len(feats)), instances)
        return store

    def append(self, feats: Tensor, labels: Tensor, indices: Tensor,
               instances: Optional[Tensor] = None) -> None:
        arrays = dict(feats=feats, labels=labels)
        if instances is not None:
            arrays['instances'] = instances
        self._check_shapes(arrays)
        for name, tensor in arrays.items():
            tensor = tensor.detach().cpu()
            self.batches.setdefault(name, []).append(
                tensor.float() if name == 'feats' else tensor.long())
        self.rows.clear()
        self.indices.extend(int(i) for i in indices)

    def _read_field(self, name: str, positions: List[int]) -> Tensor:
        if name not in self.rows:  # one concatenation after the last append
            self.rows[name] = torch.cat(self.batches[name])
            self.batches[name] = [self.rows[name]]
        return self.rows[name][positions]

    def remove(self) -> None:
        self.batches.clear()
        self.rows.clear()


def shard_indices(num_samples: int, rank: Optional[int] = None,
                  world_size: Optional[int] = None) -> List[int]:
    """The samples rank ``rank`` of ``world_size`` owns: ``rank, rank + W, ...`` (no padding,
    so no sample is seen twice)."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    return list(range(rank, num_samples, world_size))


def build_loader(dataset, batch_size: int = 8, num_workers: int = 2,
                 pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over this rank's shard of ``dataset`` (:func:`shard_indices`), in order."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=shard_indices(len(dataset)),
        num_workers=num_workers, pin_memory=pin_memory)


@torch.no_grad()
def extract_to_store(model: nn.Module, loader, store: StoreBase, *, channel_order: str,
                     grid: Optional[Tuple[int, int]] = None, progress: bool = False) -> None:
    """Append :func:`~.features.dense_features` of every batch of ``loader`` (items of
    :class:`~.data.DenseEvalDataset`: 0-255 ``image`` whose channels are in ``channel_order``,
    ``'rgb'`` for that dataset; see :func:`~.features.model_inputs`) to ``store``, computed on
    the model's device.

    ``grid``: resample the feature maps (bilinear) to this ``(h, w)`` when the backbone's own
    grid differs (e.g. a stride-32 ResNet evaluated on a preset's stride-16 grid).
    ``progress`` shows an mmengine progress bar on rank 0 (counting all ranks' images).
    """
    check_channel_order(channel_order)
    device = next(model.parameters()).device
    bar = ProgressBar(len(loader.dataset)) if progress and get_rank() == 0 else None
    for batch in loader:
        images = batch['image'].to(device, non_blocking=True)
        feats = dense_features(model, model_inputs(model, images, channel_order=channel_order))
        if grid is not None and tuple(feats.shape[-2:]) != tuple(grid):
            feats = F.interpolate(feats, size=tuple(grid), mode='bilinear', align_corners=False)
        store.append(feats, batch['label'], batch['index'], batch.get('instances'))
        if bar is not None:
            for _ in range(min(len(images) * get_world_size(), bar.task_num - bar.completed)):
                bar.update()
    if bar is not None:
        print(flush=True)
