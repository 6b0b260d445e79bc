from types import SimpleNamespace

import pytest
from mmengine.dataset import BaseDataset, ConcatDataset

from mmdense.datasets import SourceGroupedBatchSampler


class Indices(BaseDataset):

    def __init__(self, size):
        self.size = size
        super().__init__()

    def load_data_list(self):
        return [dict(index=i) for i in range(self.size)]


def batch_sampler(sizes, rank, world_size, epoch=0, **kwargs):
    dataset = ConcatDataset([Indices(n) for n in sizes])
    sampler = SimpleNamespace(dataset=dataset, seed=7, epoch=epoch, rank=rank,
                              world_size=world_size)
    return SourceGroupedBatchSampler(sampler, batch_size=3, **kwargs)


def source_of(index, sizes):
    return 0 if index < sizes[0] else 1


def test_batches_are_single_source_and_ranks_agree():
    sizes = (20, 50)
    ranks = [list(batch_sampler(sizes, rank, 2)) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 20 // 6 + 50 // 6 == len(batch_sampler(sizes, 0, 2))
    for batch_0, batch_1 in zip(*ranks):
        sources = {source_of(i, sizes) for i in batch_0 + batch_1}
        assert len(sources) == 1  # one source per step, the same on both ranks
        assert len(batch_0) == len(batch_1) == 3
    seen = [i for batches in ranks for batch in batches for i in batch]
    assert len(seen) == len(set(seen))  # no sample twice in an epoch, over all ranks


def test_epochs_reshuffle_deterministically():
    sizes = (12, 12)
    assert list(batch_sampler(sizes, 0, 1, epoch=0)) == list(batch_sampler(sizes, 0, 1, epoch=0))
    assert list(batch_sampler(sizes, 0, 1, epoch=0)) != list(batch_sampler(sizes, 0, 1, epoch=1))


def test_source_ratios_balance_unequal_sources():
    sizes = (9, 300)
    batches = list(batch_sampler(sizes, 0, 1, source_ratios=(1, 1)))
    counts = [sum(source_of(b[0], sizes) == s for b in batches) for s in (0, 1)]
    assert counts == [3, 3]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match='fewer than one global batch'):
        batch_sampler((2, 30), 0, 1)
    with pytest.raises(TypeError, match='ConcatDataset'):
        SourceGroupedBatchSampler(SimpleNamespace(dataset=Indices(10), world_size=1), 3)
