"""mmdense registries, children of mmpretrain's.

Configs with ``default_scope='mmdense'`` find mmdense's own modules first and then fall back to
mmpretrain's (ViT, ResNet, transforms, ``CosineEMA``, ``LARS``) and mmengine's.
"""
from mmengine.registry import Registry
from mmpretrain import registry as mmpretrain_registry


def _child(name: str, folder: str = None) -> Registry:
    parent = getattr(mmpretrain_registry, name)
    locations = [f'mmdense.{folder}'] if folder else []
    return Registry(parent.name, parent=parent, scope='mmdense', locations=locations)


# runtime
RUNNERS = _child('RUNNERS')
RUNNER_CONSTRUCTORS = _child('RUNNER_CONSTRUCTORS')
LOOPS = _child('LOOPS')
HOOKS = _child('HOOKS', 'engine.hooks')
LOG_PROCESSORS = _child('LOG_PROCESSORS')
# optimisation
OPTIMIZERS = _child('OPTIMIZERS', 'engine')
OPTIM_WRAPPERS = _child('OPTIM_WRAPPERS', 'engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child('OPTIM_WRAPPER_CONSTRUCTORS', 'engine')
PARAM_SCHEDULERS = _child('PARAM_SCHEDULERS', 'engine')
# data
DATASETS = _child('DATASETS', 'datasets')
DATA_SAMPLERS = _child('DATA_SAMPLERS', 'datasets')
TRANSFORMS = _child('TRANSFORMS', 'datasets.transforms')
# models
MODELS = _child('MODELS', 'models')
MODEL_WRAPPERS = _child('MODEL_WRAPPERS', 'models')
WEIGHT_INITIALIZERS = _child('WEIGHT_INITIALIZERS', 'models')
BATCH_AUGMENTS = _child('BATCH_AUGMENTS', 'models')
TASK_UTILS = _child('TASK_UTILS', 'models')
# evaluation and visualisation: mmdense registers none of its own (the dense protocols are
# functions, not mmengine metrics); configs use mmpretrain's and mmengine's
METRICS = _child('METRICS')
EVALUATORS = _child('EVALUATORS')
VISUALIZERS = _child('VISUALIZERS')
VISBACKENDS = _child('VISBACKENDS')
