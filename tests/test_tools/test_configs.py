"""Every shipped pretraining config parses, and its model and pipeline build."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from helpers import ROOT

CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p and 'benchmarks' not in p)


def pipelines(dataset_cfg):
    """The pipelines of a dataset config and of the datasets it wraps."""
    if 'pipeline' in dataset_cfg:
        yield dataset_cfg.pipeline
    for inner in [dataset_cfg.get('dataset')] + list(dataset_cfg.get('datasets', [])):
        if inner is not None:
            yield from pipelines(inner)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_config_builds(path):
    from mmcv.transforms import Compose

    from mmdense.registry import MODELS
    from mmdense.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')

    cfg = Config.fromfile(path)
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    found = list(pipelines(cfg.train_dataloader.dataset))
    assert found, f'{path}: no training pipeline'
    for pipeline in found:
        Compose(pipeline)
