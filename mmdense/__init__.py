"""mmdense: dense self-supervised pretraining for the OpenMMLab 2.x ecosystem."""
import mmcv
import mmengine
from mmengine.utils import digit_version

from .version import __version__, version_info

MMENGINE_MIN, MMENGINE_MAX = '0.10.0', '1.0.0'
MMCV_MIN, MMCV_MAX = '2.0.0', '2.2.0'
MMPRETRAIN_MIN, MMPRETRAIN_MAX = '1.0.0', '2.0.0'


def _check_version(name: str, installed: str, minimum: str, maximum: str) -> None:
    if not digit_version(minimum) <= digit_version(installed) < digit_version(maximum):
        raise ImportError(
            f'mmdense {__version__} needs {name}>={minimum},<{maximum}, but {name}=={installed} '
            'is installed. Run `make install`, or see "Install into an existing environment" in '
            'the README.')


_check_version('mmengine', mmengine.__version__, MMENGINE_MIN, MMENGINE_MAX)
_check_version('mmcv', mmcv.__version__, MMCV_MIN, MMCV_MAX)

try:
    import mmpretrain
except ImportError as e:
    raise ImportError(f'mmdense needs mmpretrain>={MMPRETRAIN_MIN},<{MMPRETRAIN_MAX}: {e}. '
                      'Run `make install`, or pip install -e ".[lite]" (README).') from e
_check_version('mmpretrain', mmpretrain.__version__, MMPRETRAIN_MIN, MMPRETRAIN_MAX)

# (after the checks: mmdense.utils imports mmpretrain's registries; `import mmpretrain` does not
# import mmpretrain.models, which the guard must precede)
from .utils import compat, optional_imports  # noqa: E402

optional_imports.guard_mmpretrain_multimodal()
optional_imports.quiet_missing_mmcv_ops()
compat.apply_all()

__all__ = ['__version__', 'version_info']
