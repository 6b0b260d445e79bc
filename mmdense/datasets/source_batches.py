"""Batches drawn from one source dataset at a time, the same source on every rank."""
from typing import Iterator, List, Optional, Sequence

import torch
from mmengine.dataset import ConcatDataset
from torch.utils.data import BatchSampler, Sampler

from mmdense.registry import DATA_SAMPLERS


@DATA_SAMPLERS.register_module()
class SourceGroupedBatchSampler(BatchSampler):
    """Every batch holds samples of a single source of a ``ConcatDataset``, and at each step
    all ranks use the same source, so per-source loss terms (and their collectives) line up.

    Each epoch, every source is shuffled with a generator seeded by the wrapped sampler's
    ``seed`` and ``epoch`` (identical on all ranks) and cut into global batches of
    ``batch_size × world_size``; rank r takes the r-th slice of each. The order of the global
    batches over sources is shuffled by the same generator. A source contributes all of its
    complete global batches, or, with ``source_ratios``, as many as keep the given proportions
    with no source repeating within the epoch.

    Args:
        sampler: mmengine ``DefaultSampler`` over the ``ConcatDataset`` (gives dataset, seed,
            epoch, rank and world size; its own index order is not used).
        batch_size: per-rank batch size.
        source_ratios: relative number of batches per source, e.g. ``(1, 1)``; default: in
            proportion to the source sizes.
    """

    def __init__(self,
                 sampler: Sampler,
                 batch_size: int,
                 source_ratios: Optional[Sequence[float]] = None,
                 drop_last: bool = True) -> None:
        dataset = sampler.dataset
        if not isinstance(dataset, ConcatDataset):
            raise TypeError(f'{type(self).__name__} needs a ConcatDataset, got '
                            f'{type(dataset).__name__}')
        if not drop_last:
            raise ValueError(f'{type(self).__name__} only yields complete batches (drop_last)')
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.starts = [0] + list(dataset.cumulative_sizes[:-1])
        self.sizes = [len(d) for d in dataset.datasets]
        if source_ratios is not None and len(source_ratios) != len(self.sizes):
            raise ValueError(f'{type(self).__name__}: {len(source_ratios)} source_ratios for '
                             f'{len(self.sizes)} sources')
        self.source_ratios = source_ratios
        global_batch = batch_size * sampler.world_size
        if min(self.sizes) < global_batch:
            raise ValueError(f'{type(self).__name__}: a source has {min(self.sizes)} samples, '
                             f'fewer than one global batch ({global_batch})')

    def batches_per_source(self) -> List[int]:
        available = [size // (self.batch_size * self.sampler.world_size) for size in self.sizes]
        if self.source_ratios is None:
            return available
        total = sum(self.source_ratios)
        steps = min(a * total / r for a, r in zip(available, self.source_ratios) if r > 0)
        return [int(steps * r / total) for r in self.source_ratios]

    def __iter__(self) -> Iterator[List[int]]:
        generator = torch.Generator().manual_seed(self.sampler.seed + self.sampler.epoch)
        global_batch = self.batch_size * self.sampler.world_size
        rank_slice = slice(self.sampler.rank * self.batch_size,
                           (self.sampler.rank + 1) * self.batch_size)
        batches = []
        for start, size, count in zip(self.starts, self.sizes, self.batches_per_source()):
            order = torch.randperm(size, generator=generator) + start
            batches += [order[i * global_batch:(i + 1) * global_batch][rank_slice].tolist()
                        for i in range(count)]
        for i in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[i]

    def __len__(self) -> int:
        return sum(self.batches_per_source())
