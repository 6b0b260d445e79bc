"""mmdense registries, children of mmpretrain's.

Configs with ``default_scope='mmdense'`` find mmdense's own modules first and then fall back to
mmpretrain's (ViT, ResNet, transforms, ``CosineEMA``, ``LARS``) and mmengine's.

Each registry's ``locations`` are the modules of the packages that register into it, found from
their files without importing anything (:func:`modules_under`); mmengine imports them the first
time the registry looks a name up (``Registry.import_from_location``), and
:func:`mmdense.utils.register_all_modules` imports them all at once. So a new module registers by
being in its package's folder: no ``__init__.py`` has to import it (``__init__`` files list the
public names). A registry mmdense registers nothing into has no location.
``tests/test_utils/test_registry_locations.py`` checks that every module that registers into a
registry is among its locations, and that ``register_all_modules`` registers them in a fresh
interpreter.

``mmdense.transfer``'s ``ViTPyramid`` and ``LayerDecayOptimWrapperConstructor`` register into
mmdet's and mmseg's registries, not these: downstream configs import them with
``custom_imports=dict(imports=['mmdense.transfer'])``.
"""
from pathlib import Path
from typing import List

from mmengine.registry import Registry
from mmpretrain import registry as mmpretrain_registry

PACKAGE_DIR = Path(__file__).parent


def modules_under(package: str) -> List[str]:
    """Dotted names of every module in ``package`` (e.g. ``'mmdense.models'``) and its
    subpackages, read from the file names; nothing is imported."""
    folder = PACKAGE_DIR.joinpath(*package.split('.')[1:])
    files = [path for path in folder.rglob('*.py') if path.name != '__init__.py']
    relative = [path.relative_to(PACKAGE_DIR).with_suffix('').parts for path in files]
    return sorted('.'.join((PACKAGE_DIR.name, ) + parts) for parts in relative)


def _child(name: str, *packages: str) -> Registry:
    parent = getattr(mmpretrain_registry, name)
    locations = [module for package in packages for module in modules_under(package)]
    return Registry(parent.name, parent=parent, scope='mmdense', locations=locations)


# runtime
RUNNERS = _child('RUNNERS')
RUNNER_CONSTRUCTORS = _child('RUNNER_CONSTRUCTORS')
LOOPS = _child('LOOPS')
HOOKS = _child('HOOKS', 'mmdense.engine.hooks')
LOG_PROCESSORS = _child('LOG_PROCESSORS')
# optimisation
OPTIMIZERS = _child('OPTIMIZERS', 'mmdense.engine.optimizers')
OPTIM_WRAPPERS = _child('OPTIM_WRAPPERS', 'mmdense.engine.optimizers')
OPTIM_WRAPPER_CONSTRUCTORS = _child('OPTIM_WRAPPER_CONSTRUCTORS', 'mmdense.engine.optimizers')
PARAM_SCHEDULERS = _child('PARAM_SCHEDULERS')
# data
DATASETS = _child('DATASETS', 'mmdense.datasets')
DATA_SAMPLERS = _child('DATA_SAMPLERS', 'mmdense.datasets')
TRANSFORMS = _child('TRANSFORMS', 'mmdense.datasets.transforms')
# models
MODELS = _child('MODELS', 'mmdense.models')
MODEL_WRAPPERS = _child('MODEL_WRAPPERS')
WEIGHT_INITIALIZERS = _child('WEIGHT_INITIALIZERS', 'mmdense.models')
BATCH_AUGMENTS = _child('BATCH_AUGMENTS')
TASK_UTILS = _child('TASK_UTILS')
# evaluation and visualisation: mmdense registers none of its own (the dense protocols are
# classes of mmdense.evaluation, not mmengine metrics); configs use mmpretrain's and mmengine's
METRICS = _child('METRICS')
EVALUATORS = _child('EVALUATORS')
VISUALIZERS = _child('VISUALIZERS')
VISBACKENDS = _child('VISBACKENDS')

REGISTRIES = (RUNNERS, RUNNER_CONSTRUCTORS, LOOPS, HOOKS, LOG_PROCESSORS, OPTIMIZERS,
              OPTIM_WRAPPERS, OPTIM_WRAPPER_CONSTRUCTORS, PARAM_SCHEDULERS, DATASETS,
              DATA_SAMPLERS, TRANSFORMS, MODELS, MODEL_WRAPPERS, WEIGHT_INITIALIZERS,
              BATCH_AUGMENTS, TASK_UTILS, METRICS, EVALUATORS, VISUALIZERS, VISBACKENDS)
