"""Opt-in skipping of unreadable images, logged per image and counted per epoch."""
import logging
import multiprocessing

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from mmdense.datasets.transforms.loading import ImageLoadError
from mmdense.registry import DATASETS


@DATASETS.register_module()
class SkipCorruptImages:
    """Wraps a dataset so that a sample whose image cannot be loaded (:class:`ImageLoadError`,
    raised by ``LoadRGBImage`` with the path and reason) is replaced by the next readable one.

    Opt in by wrapping the training dataset::

        train_dataloader = dict(dataset=dict(type='SkipCorruptImages', dataset=dict(...)))

    Every skip is logged as a warning naming the file; :class:`SkippedImagesHook` (a default
    hook) logs the number skipped at the end of each epoch. For CoTAP, wrap the
    ``NeighbourPairDataset`` (a pair is skipped when its image or its neighbour is unreadable);
    with several sources (``ConcatDataset`` and ``SourceGroupedBatchSampler``), wrap each
    source, so that a replacement comes from the same source. The count is shared with
    data-loading workers (``fork`` start method, mmdense's default). ``RuntimeError`` is raised
    when more than ``max_skips_in_a_row`` consecutive images fail (e.g. a wrong data root or a
    broken mount).

    Args:
        dataset (dict | BaseDataset): the dataset to wrap.
        max_skips_in_a_row (int): consecutive failures tolerated for one sample.
    """

    def __init__(self, dataset, max_skips_in_a_row: int = 16) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.max_skips_in_a_row = max_skips_in_a_row
        self._skipped = multiprocessing.Value('i', 0)
        # never reset: numbers every skip message, so that mmengine's logger (which drops a
        # WARNING identical to an earlier one) logs the same file again in a later epoch
        self._skipped_total = multiprocessing.Value('i', 0)

    @property
    def metainfo(self) -> dict:
        return getattr(self.dataset, 'metainfo', {})

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int):
        for attempt in range(self.max_skips_in_a_row + 1):
            index = (idx + attempt) % len(self.dataset)
            try:
                return self.dataset[index]
            except ImageLoadError as err:
                with self._skipped.get_lock():
                    self._skipped.value += 1
                with self._skipped_total.get_lock():
                    self._skipped_total.value += 1
                    total = self._skipped_total.value
                print_log(f'skip_corrupt: skipped sample {index}: {err} (skip {total} of this '
                          'run)', logger='current', level=logging.WARNING)
        raise RuntimeError(f'SkipCorruptImages: {self.max_skips_in_a_row + 1} images in a row '
                           f'from index {idx} could not be loaded; check the data root')

    def pop_skipped_count(self) -> int:
        """Images skipped since the last call."""
        with self._skipped.get_lock():
            count, self._skipped.value = self._skipped.value, 0
        return count

    def full_init(self) -> None:
        if isinstance(self.dataset, BaseDataset):
            self.dataset.full_init()


def skip_wrappers(dataset) -> list:
    """The :class:`SkipCorruptImages` in ``dataset`` and the datasets it wraps (``.dataset`` of
    wrappers such as ``NeighbourPairDataset``, ``.datasets`` of ``ConcatDataset``)."""
    found, stack, seen = [], [dataset], set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, SkipCorruptImages):
            found.append(current)
        stack.append(getattr(current, 'dataset', None))
        stack.extend(reversed(list(getattr(current, 'datasets', None) or [])))
    return found
