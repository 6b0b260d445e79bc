"""mmdense registries, children of mmpretrain's.

Configs with ``default_scope='mmdense'`` find mmdense's own modules first and then fall back to
mmpretrain's (ViT, ResNet, transforms, ``CosineEMA``, ``LARS``) and mmengine's.
"""
from mmengine.registry import Registry
from mmpretrain.registry import DATA_SAMPLERS as MMPRETRAIN_DATA_SAMPLERS
from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS
from mmpretrain.registry import HOOKS as MMPRETRAIN_HOOKS
from mmpretrain.registry import METRICS as MMPRETRAIN_METRICS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMPRETRAIN_OPTIM_WRAPPER_CONSTRUCTORS
from mmpretrain.registry import OPTIM_WRAPPERS as MMPRETRAIN_OPTIM_WRAPPERS
from mmpretrain.registry import OPTIMIZERS as MMPRETRAIN_OPTIMIZERS
from mmpretrain.registry import PARAM_SCHEDULERS as MMPRETRAIN_PARAM_SCHEDULERS
from mmpretrain.registry import TRANSFORMS as MMPRETRAIN_TRANSFORMS
from mmpretrain.registry import VISUALIZERS as MMPRETRAIN_VISUALIZERS
from mmpretrain.registry import VISBACKENDS as MMPRETRAIN_VISBACKENDS


def _child(name: str, parent: Registry, folder: str) -> Registry:
    return Registry(name, parent=parent, scope='mmdense', locations=[f'mmdense.{folder}'])


MODELS = _child('model', MMPRETRAIN_MODELS, 'models')
DATASETS = _child('dataset', MMPRETRAIN_DATASETS, 'datasets')
DATA_SAMPLERS = _child('data sampler', MMPRETRAIN_DATA_SAMPLERS, 'datasets')
TRANSFORMS = _child('transform', MMPRETRAIN_TRANSFORMS, 'datasets.transforms')
HOOKS = _child('hook', MMPRETRAIN_HOOKS, 'engine.hooks')
METRICS = _child('metric', MMPRETRAIN_METRICS, 'evaluation')
OPTIMIZERS = _child('optimizer', MMPRETRAIN_OPTIMIZERS, 'engine')
OPTIM_WRAPPERS = _child('optim_wrapper', MMPRETRAIN_OPTIM_WRAPPERS, 'engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor',
                                    MMPRETRAIN_OPTIM_WRAPPER_CONSTRUCTORS, 'engine')
PARAM_SCHEDULERS = _child('parameter scheduler', MMPRETRAIN_PARAM_SCHEDULERS, 'engine')
VISUALIZERS = _child('visualizer', MMPRETRAIN_VISUALIZERS, 'visualization')
VISBACKENDS = _child('vis_backend', MMPRETRAIN_VISBACKENDS, 'visualization')
