"""Keep ``import mmpretrain.models`` working when ``transformers`` beside it is incompatible.

mmpretrain 1.2.0 switches its multimodal code on (``WITH_MULTIMODAL`` in
``mmpretrain.utils.dependency``: BLIP, Flamingo, ... models, their tokenizers and datasets)
whenever ``transformers`` >= 4.28 and ``pycocotools`` are *installed*, and imports it from
``mmpretrain.models``. Newer ``transformers`` releases moved names that code imports, so the
import raises and takes every mmdense model down with it; GPU machines often have such a
release. mmdense uses none of the multimodal models. :func:`guard_mmpretrain_multimodal`
installs an import hook that

* after ``mmpretrain.utils.dependency`` runs, imports the ``transformers`` names mmpretrain's
  shared model utilities need, and switches ``WITH_MULTIMODAL`` off (with a warning) when that
  fails;
* makes a failing import of ``mmpretrain.models.multimodal`` itself (a break deeper in one of
  the models) leave that module empty, with a warning, instead of raising.

:func:`quiet_missing_mmcv_ops` hides the one notice ``mmcv-lite`` (no compiled ops; the demo's
environment) prints when ``mmcv.cnn`` is imported: that ``MultiScaleDeformableAttention`` is
unavailable. No mmdense module uses it (mmdet's Deformable DETR does, under the full install).
"""
import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

DEPENDENCY = 'mmpretrain.utils.dependency'
MULTIMODAL = 'mmpretrain.models.multimodal'
# what mmpretrain.models.utils imports from transformers when WITH_MULTIMODAL is on
TRANSFORMERS_NAMES = {
    'transformers': ('AutoConfig', 'PreTrainedModel', 'AutoTokenizer', 'BartTokenizer',
                     'BasicTokenizer', 'BertTokenizer', 'BertTokenizerFast', 'LlamaTokenizer',
                     'WordpieceTokenizer'),
    'transformers.models.auto.auto_factory': ('_BaseAutoModelClass', ),
}


def _unavailable(error: Exception) -> None:
    warnings.warn(
        f"mmpretrain's multimodal models are unavailable ({type(error).__name__}: {error}); the "
        'installed transformers release is probably incompatible with mmpretrain 1.2. mmdense '
        'does not use these models.', RuntimeWarning, stacklevel=3)


def _probe_transformers() -> None:
    """Raise what importing mmpretrain's ``transformers`` names raises."""
    for module_name, names in TRANSFORMERS_NAMES.items():
        module = importlib.import_module(module_name)
        for name in names:
            getattr(module, name)


def _switch_off_if_broken(dependency) -> None:
    """``WITH_MULTIMODAL = False`` in mmpretrain's dependency module if it is on but
    ``transformers`` cannot give mmpretrain what it imports."""
    if dependency.WITH_MULTIMODAL:
        try:
            _probe_transformers()
        except Exception as error:  # noqa: BLE001  whatever the broken release raises
            dependency.WITH_MULTIMODAL = False
            _unavailable(error)


class _GuardedLoader(importlib.abc.Loader):
    """Runs the real loader of one of the two guarded modules, then applies its guard."""

    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self.loader = loader
        self.name = name

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        if self.name == DEPENDENCY:
            self.loader.exec_module(module)
            _switch_off_if_broken(module)
            return
        try:
            self.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001
            for name in [n for n in sys.modules if n.startswith(MULTIMODAL + '.')]:
                del sys.modules[name]
            _unavailable(error)


class _Guard(importlib.abc.MetaPathFinder):

    def find_spec(self, fullname, path, target=None):
        if fullname not in (DEPENDENCY, MULTIMODAL):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _GuardedLoader(spec.loader, fullname)
        return spec


def guard_mmpretrain_multimodal() -> None:
    """Install the hook (once), before ``mmpretrain.models`` is first imported. (A plain
    ``import mmpretrain`` before it is fine: its dependency module is then checked at once.)"""
    if DEPENDENCY in sys.modules:
        _switch_off_if_broken(sys.modules[DEPENDENCY])
    if not any(isinstance(finder, _Guard) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Guard())


MISSING_MMCV_OPS_NOTICE = r'Fail to import ``MultiScaleDeformableAttention``'


def quiet_missing_mmcv_ops() -> None:
    """Ignore mmcv-lite's import-time ``UserWarning`` about ``MultiScaleDeformableAttention``
    (``mmcv/cnn/bricks/transformer.py``), and no other warning. Call it before ``mmcv.cnn`` is
    first imported."""
    warnings.filterwarnings('ignore', message=MISSING_MMCV_OPS_NOTICE, category=UserWarning)
