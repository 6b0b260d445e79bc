import datetime
import warnings

import mmpretrain.utils
from mmengine import DefaultScope

from mmdense.registry import REGISTRIES


def register_all_modules(init_default_scope: bool = True) -> None:
    """Register every mmdense module (each registry imports its ``locations``, see
    :mod:`mmdense.registry`) and mmpretrain's, and optionally make ``mmdense`` the default scope
    (as ``mmdet.utils.register_all_modules`` does for mmdet)."""
    for registry in REGISTRIES:
        registry.import_from_location()
    mmpretrain.utils.register_all_modules(init_default_scope=False)
    if not init_default_scope:
        return
    current = DefaultScope.get_current_instance()
    if current is None:
        DefaultScope.get_instance('mmdense', scope_name='mmdense')
    elif current.scope_name != 'mmdense':
        warnings.warn(f'The current default scope "{current.scope_name}" is not "mmdense"; '
                      '`register_all_modules` creates a new default scope named '
                      f'"mmdense-{datetime.datetime.now()}"')
        new_name = f'mmdense-{datetime.datetime.now()}'
        DefaultScope.get_instance(new_name, scope_name='mmdense')
