"""Transfer to downstream libraries.

* :mod:`.keys`, :mod:`.checkpoints`: export pretraining checkpoints to mmdet / mmseg / mmpretrain
  / timm / torchvision backbone files, and import published checkpoints;
* :class:`ViTPyramid` and :class:`LayerDecayOptimWrapperConstructor`, registered in mmdet's and
  mmseg's registries when this package is imported: downstream configs use
  ``custom_imports=dict(imports=['mmdense.transfer'])``;
* :mod:`.check`: verify that a downstream backbone really starts from an exported file.

Importing this package imports mmdet and mmseg; ``mmdense`` itself does not import it.
"""
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMDET_CONSTRUCTORS
from mmseg.registry import MODELS as MMSEG_MODELS
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMSEG_CONSTRUCTORS

from .checkpoints import export_backbone, import_published, read_sidecar
from .layer_decay import LayerDecayOptimWrapperConstructor
from .vit_pyramid import ViTPyramid

for _registry in (MMDET_MODELS, MMSEG_MODELS):
    _registry.register_module(module=ViTPyramid)
for _registry in (MMDET_CONSTRUCTORS, MMSEG_CONSTRUCTORS):
    _registry.register_module(module=LayerDecayOptimWrapperConstructor)

__all__ = ['export_backbone', 'import_published', 'read_sidecar', 'ViTPyramid',
           'LayerDecayOptimWrapperConstructor']
