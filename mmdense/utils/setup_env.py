import datetime
import warnings

from mmengine import DefaultScope


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every mmdense module so that it is registered, and optionally make ``mmdense`` the
    default scope (as ``mmdet.utils.register_all_modules`` does for mmdet)."""
    import mmdense.datasets  # noqa: F401
    import mmdense.engine  # noqa: F401
    import mmdense.evaluation  # noqa: F401
    import mmdense.models  # noqa: F401
    import mmpretrain.utils

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
