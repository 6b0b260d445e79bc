from .toy_scenes import (CLASSES, IGNORE_INDEX, PALETTE, SEG_CLASSES, SEG_PALETTE,
                         generate_toy_scenes, toy_scenes_exist)
from .transforms import *  # noqa: F401,F403
from .unlabeled import UnlabeledImageDataset

__all__ = [
    'CLASSES', 'IGNORE_INDEX', 'PALETTE', 'SEG_CLASSES', 'SEG_PALETTE', 'generate_toy_scenes',
    'toy_scenes_exist', 'UnlabeledImageDataset'
]
from .skip_corrupt import SkipCorruptImages  # noqa: E402,F401
__all__ += ['SkipCorruptImages']
from .neighbour_pairs import NeighbourPairDataset, read_neighbours  # noqa: E402,F401
__all__ += ['NeighbourPairDataset', 'read_neighbours']
from .source_batches import SourceGroupedBatchSampler  # noqa: E402,F401
__all__ += ['SourceGroupedBatchSampler']
