from .neighbour_pairs import NeighbourPairDataset, read_neighbours
from .skip_corrupt import SkipCorruptImages
from .source_batches import SourceGroupedBatchSampler
from .toy_scenes import (CLASSES, IGNORE_INDEX, PALETTE, SEG_CLASSES, SEG_PALETTE,
                         generate_toy_scenes, toy_scenes_exist)
from .transforms import *  # noqa: F401,F403
from .unlabeled import UnlabeledImageDataset

__all__ = [
    'CLASSES', 'IGNORE_INDEX', 'PALETTE', 'SEG_CLASSES', 'SEG_PALETTE', 'NeighbourPairDataset',
    'SkipCorruptImages', 'SourceGroupedBatchSampler', 'UnlabeledImageDataset',
    'generate_toy_scenes', 'read_neighbours', 'toy_scenes_exist'
]
