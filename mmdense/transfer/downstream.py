"""Downstream (mmdet / mmseg) configs: their scope, the backbone init, and building the model."""
from typing import Optional

import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope, init_default_scope

from mmdense.utils.errors import UserValueError

SCOPES = ('mmdet', 'mmseg')


def config_scope(cfg: Config, path: str = 'the config') -> str:
    """``'mmdet'`` or ``'mmseg'``: the ``default_scope`` of a downstream config."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise UserValueError(f'{path}: default_scope is {scope!r}; a downstream config inherits '
                             f'{" or ".join(SCOPES)} bases (default_scope one of {SCOPES})')
    return scope


def register_scope(scope: str) -> None:
    """Register ``scope``'s modules in ``scope`` (this package registered its transfer modules,
    ``ViTPyramid`` and ``LayerDecayOptimWrapperConstructor``, when it was imported)."""
    # mmdet and mmseg are optional (pip install -e ".[lite]" has neither): imported when used
    if scope == 'mmdet':
        from mmdet.utils import register_all_modules
    else:
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)


def activate_scope(scope: str) -> None:
    """:func:`register_scope`, then make ``scope`` the default scope (for a Runner)."""
    register_scope(scope)
    init_default_scope(scope)


def set_backbone_init(cfg: Config, checkpoint: Optional[str]) -> None:
    """Initialise the backbone of ``cfg.model`` from an exported file (``None``: random init).

    A ``prefix`` already in the backbone's ``Pretrained`` init is kept. A ``pretrained`` entry
    (mmseg's ``fcn_r50-d8`` base sets ``pretrained='open-mmlab://resnet50_v1c'``) is refused:
    it would load another model's weights, and mmseg forbids it next to an ``init_cfg``.
    """
    model = cfg.model
    for owner, where in ((model, 'model'), (model.backbone, 'model.backbone')):
        if owner.get('pretrained'):
            raise UserValueError(
                f'{where}.pretrained={owner.pretrained!r} is set (it loads those weights, and '
                f'mmseg asserts when an init_cfg is set next to it): set {where}.pretrained=None, '
                "and for mmseg's ResNetV1c bases use type='ResNet' (an SSL ResNet has no deep "
                'stem)')
    if checkpoint is None:
        model.backbone.init_cfg = None
        return
    init_cfg = dict(type='Pretrained', checkpoint=checkpoint)
    current = model.backbone.get('init_cfg')
    if isinstance(current, dict) and current.get('type') == 'Pretrained' and current.get('prefix'):
        init_cfg['prefix'] = current['prefix']
    model.backbone.init_cfg = init_cfg


def build_model(cfg: Config) -> nn.Module:
    """``cfg.model`` built in the config's scope (weights not initialised yet); the caller's
    default scope is left as it was."""
    scope = config_scope(cfg)
    register_scope(scope)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg.model)
