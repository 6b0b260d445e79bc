"""mmdense registries are children of mmpretrain's: one default scope reaches both."""
import pytest
from mmengine.registry import DefaultScope

import mmdense
from mmdense import registry
from mmdense.utils import register_all_modules


@pytest.fixture(autouse=True)
def mmdense_scope():
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdense'):
        yield


@pytest.mark.parametrize('reg,name', [
    (registry.MODELS, 'VisionTransformer'),
    (registry.MODELS, 'ResNet'),
    (registry.MODELS, 'CosineEMA'),
    (registry.MODELS, 'DINO'),
    (registry.MODELS, 'DINOHead'),
    (registry.OPTIMIZERS, 'LARS'),
    (registry.OPTIMIZERS, 'AdamW'),
    (registry.TRANSFORMS, 'ColorJitter'),
    (registry.TRANSFORMS, 'MultiCropWithGeometry'),
    (registry.TRANSFORMS, 'LoadRGBImage'),
    (registry.DATASETS, 'UnlabeledImageDataset'),
    (registry.HOOKS, 'TeacherTempWarmupHook'),
    (registry.HOOKS, 'CheckpointHook'),
    (registry.PARAM_SCHEDULERS, 'CosineAnnealingWeightDecay'),
])
def test_names_resolve_from_the_mmdense_scope(reg, name):
    assert reg.get(name) is not None, f'{name} not found in {reg.name}'


def test_registries_are_scoped_children_of_mmpretrain():
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    assert registry.MODELS.scope == 'mmdense'
    assert registry.MODELS.parent is PRETRAIN_MODELS
    assert 'DINO' in registry.MODELS.module_dict
    assert 'DINO' not in PRETRAIN_MODELS.module_dict


def test_version_is_exposed():
    assert mmdense.__version__ == mmdense.version.__version__
    assert mmdense.version_info[:2] == tuple(int(x) for x in mmdense.__version__.split('.')[:2])


def test_version_check_message_names_package_and_fix():
    with pytest.raises(ImportError, match=r'mmcv>=2\.0\.0,<2\.2\.0.*make install'):
        mmdense._check_version('mmcv', '2.2.0', mmdense.MMCV_MIN, mmdense.MMCV_MAX)
