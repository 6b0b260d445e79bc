"""pytest plugin (``-p dense_byol_row``): the throwaway :class:`DenseBYOL` and its one row of
``tests/algorithm_table.py``, added before the test modules are collected, so that every shared
per-algorithm test parametrises over it too; ``test_adding_a_method.py`` runs those tests
with it."""
from algorithm_table import ALGORITHMS, Algorithm

import dense_byol  # noqa: F401 (registers DenseBYOL)


def shrink_dense_byol(cfg, toy_root):
    """SlotCon's toy config (two overlapping views with their crop geometry) with the model
    replaced by a 1/8-width ResNet-18 DenseBYOL; ``custom_imports`` registers the method in the
    processes that ``tools/train.py`` starts."""
    cfg.custom_imports = dict(imports=['dense_byol'], allow_failed_imports=False)
    cfg.train_dataloader.dataset.pipeline[1].global_crops.size = 64
    data_preprocessor = cfg.model.data_preprocessor
    cfg.model = dict(
        type='DenseBYOL',
        data_preprocessor=data_preprocessor,
        backbone=dict(type='ResNet', depth=18, out_indices=(3, ), stem_channels=8,
                      base_channels=8),
        neck=dict(type='ConvMLPProjector', in_channels=64, hidden_channels=32, out_channels=16),
        predictor=dict(type='ConvMLPProjector', in_channels=16, hidden_channels=32,
                       out_channels=16),
        loss=dict(type='CosineSimilarityLoss', shift_factor=2.0, scale_factor=2.0))


ALGORITHMS['DenseBYOL'] = Algorithm('configs/slotcon/r18_toy.py', shrink_dense_byol, 'resnet')
