"""Transfer to downstream libraries.

* :mod:`.keys`, :mod:`.checkpoints`: export pretraining checkpoints to mmdet / mmseg / mmpretrain
  / timm / torchvision backbone files, and import published checkpoints;
* :class:`ViTPyramid` and :class:`LayerDecayOptimWrapperConstructor`, registered in mmdet's and
  mmseg's registries when this package is imported: downstream configs use
  ``custom_imports=dict(imports=['mmdense.transfer'])``;
* :mod:`.check`: verify that a downstream backbone really starts from an exported file.

Importing this package registers those modules in mmdet and in mmseg, each where installed:
export and import need neither (``pip install -e ".[lite]"``); ``mmdense`` itself does not
import this package.
"""
import importlib

from .checkpoints import export_backbone, import_published, read_sidecar
from .layer_decay import LayerDecayOptimWrapperConstructor
from .vit_pyramid import ViTPyramid

for _library in ('mmdet', 'mmseg'):
    try:
        _registries = importlib.import_module(f'{_library}.registry')
    except ImportError:
        continue
    _registries.MODELS.register_module(module=ViTPyramid)
    _registries.OPTIM_WRAPPER_CONSTRUCTORS.register_module(module=LayerDecayOptimWrapperConstructor)

__all__ = ['export_backbone', 'import_published', 'read_sidecar', 'ViTPyramid',
           'LayerDecayOptimWrapperConstructor']
