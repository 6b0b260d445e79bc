"""Every shipped pretraining config parses, and its model and pipeline build."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p and 'benchmarks' not in p)


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
    Compose(cfg.train_dataloader.dataset.pipeline)
