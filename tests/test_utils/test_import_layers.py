"""The import contract (``tests/import_layers.py``): mmdense's imports point down its layers and
never form a cycle; the checker names file, line and layers of what breaks it."""
import textwrap
from pathlib import Path

import pytest
from import_layers import LAYERS, check, layer_of

from helpers import ROOT

PACKAGE_DIR = Path(ROOT) / 'mmdense'


def test_mmdense_imports_follow_the_layers_without_cycles():
    violations = check(PACKAGE_DIR)
    assert not violations, '\n'.join(violations)


def write_package(root, files: dict):
    """A package tree under ``root`` from ``{relative path: source}``."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root / 'mmdense'


@pytest.fixture
def package(tmp_path):
    """A small mmdense tree that follows the layers: engine and models import utils."""
    return {
        'mmdense/__init__.py': 'from . import utils\n',
        'mmdense/utils/__init__.py': 'from .setup_env import register_all_modules\n',
        'mmdense/utils/setup_env.py': '''\
            import datetime


            def register_all_modules():
                return datetime.date.today()
            ''',
        'mmdense/models/__init__.py': 'from .dino import DINO\n',
        'mmdense/models/dino.py': 'from mmdense.utils import register_all_modules\n\nDINO = 1\n',
        'mmdense/engine/__init__.py': 'from mmdense.models import DINO\n',
    }


def test_a_package_that_follows_the_layers_passes(tmp_path, package):
    assert check(write_package(tmp_path, package)) == []


def test_an_upward_import_inside_a_function_is_named_with_its_layers(tmp_path, package):
    """The reintroduced cycle of issue 31: utils' register_all_modules importing engine inside
    the function (engine imports utils at module level)."""
    package['mmdense/utils/setup_env.py'] = '''\
        import datetime


        def register_all_modules():
            import mmdense.engine  # noqa: F401
            return datetime.date.today()
        '''
    root = write_package(tmp_path, package)
    violations = check(root)
    setup_env = root / 'utils' / 'setup_env.py'
    assert violations[0] == (
        f'{setup_env}:5: upward import (inside a function): mmdense.utils.setup_env (layer 2, '
        'mmdense.utils) imports mmdense.engine (layer 8, mmdense.engine)')
    assert violations[1] == (
        'import cycle through 5 modules, e.g. mmdense.engine -> mmdense.models -> '
        'mmdense.models.dino -> mmdense.utils -> mmdense.utils.setup_env -> mmdense.engine: '
        f'{root / "engine" / "__init__.py"}:1: mmdense.engine imports mmdense.models; '
        f'{root / "models" / "__init__.py"}:1: mmdense.models imports mmdense.models.dino; '
        f'{root / "models" / "dino.py"}:1: mmdense.models.dino imports mmdense.utils; '
        f'{root / "utils" / "__init__.py"}:1: mmdense.utils imports mmdense.utils.setup_env; '
        f'{setup_env}:5: mmdense.utils.setup_env imports mmdense.engine')
    assert len(violations) == 2


def test_relative_and_from_imports_resolve_to_the_module(tmp_path, package):
    package['mmdense/models/dino.py'] = 'from ..engine import hooks\n\nDINO = 1\n'
    package['mmdense/engine/hooks.py'] = ''
    violations = check(write_package(tmp_path, package))
    assert any('mmdense.models.dino (layer 5, mmdense.models) imports mmdense.engine.hooks '
               '(layer 8, mmdense.engine)' in message for message in violations), violations


def test_a_cycle_inside_one_layer_is_named(tmp_path, package):
    """Two modules of one package that import each other, one of them inside a method."""
    package['mmdense/models/data.py'] = '''\
        class Dataset:
            def __init__(self):
                from .data_check import check
                check()
        '''
    package['mmdense/models/data_check.py'] = 'from .data import Dataset\n'
    root = write_package(tmp_path, package)
    assert check(root) == [
        'import cycle through 2 modules, e.g. mmdense.models.data -> mmdense.models.data_check -> '
        f'mmdense.models.data: {root / "models" / "data.py"}:3: mmdense.models.data imports '
        f'mmdense.models.data_check; {root / "models" / "data_check.py"}:1: '
        'mmdense.models.data_check imports mmdense.models.data']


def test_importing_a_subpackage_runs_the_packages_above_it(tmp_path, package):
    """``import mmdense.engine.hooks`` runs ``mmdense/engine/__init__.py`` first: a cycle
    through that ``__init__`` counts although the import names a module below it."""
    package['mmdense/engine/hooks.py'] = ''
    package['mmdense/engine/__init__.py'] = 'from .runner import run\n'
    package['mmdense/engine/runner.py'] = 'from mmdense.evaluation.metric import score\nrun = 1\n'
    package['mmdense/evaluation/__init__.py'] = ''
    package['mmdense/evaluation/metric.py'] = (
        'def score():\n    from mmdense.engine.hooks import hook\n')
    violations = check(write_package(tmp_path, package))
    assert len(violations) == 2, violations
    assert 'upward import (inside a function): mmdense.evaluation.metric (layer 7' in violations[0]
    assert violations[1].startswith(
        'import cycle through 3 modules, e.g. mmdense.engine -> mmdense.engine.runner -> '
        'mmdense.evaluation.metric -> mmdense.engine:')


def test_a_package_in_no_layer_is_named(tmp_path, package):
    package['mmdense/widgets/__init__.py'] = ''
    root = write_package(tmp_path, package)
    assert check(root) == [f'{root / "widgets" / "__init__.py"}: mmdense.widgets is in no layer: '
                           'add it to LAYERS (import_layers.py)']


def test_layer_table():
    assert layer_of('mmdense') == (1, 'mmdense')  # the root sits with utils
    assert layer_of('mmdense.utils.cli') == (1, 'mmdense.utils')
    assert layer_of('mmdense.registry') == (0, 'mmdense.registry')
    assert layer_of('mmdense.fileio.checkpoint') == (2, 'mmdense.fileio')
    assert layer_of('mmdense.engine.hooks.dense_eval_hook') == (7, 'mmdense.engine')
    with pytest.raises(KeyError):
        layer_of('mmdense.widgets')  # the root holds only itself
    names = [name for layer in LAYERS for name in layer]
    assert len(names) == len(set(names))
    packages = {path.name for path in PACKAGE_DIR.iterdir()
                if (path / '__init__.py').exists()}
    assert {f'mmdense.{name}' for name in packages} <= set(names)
