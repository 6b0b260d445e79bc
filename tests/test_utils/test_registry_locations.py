"""Registration through the registries' ``locations`` (mmengine's lazy import): every module that
registers into an mmdense registry is one of its locations, a config build finds mmdense's
modules with nothing but ``import mmdense``, and ``register_all_modules`` registers them all."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import mmdense.registry as registry
from helpers import ROOT

PACKAGE_DIR = Path(ROOT) / 'mmdense'


def registrations() -> dict:
    """``{(registry name, module): [registered names]}`` read from the source: classes and
    functions decorated with ``@NAME.register_module(...)`` where ``NAME`` is imported from
    ``mmdense.registry`` (``name=`` overrides the class name)."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob('*.py')):
        tree = ast.parse(path.read_text(encoding='utf-8'))
        names = {alias.asname or alias.name for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module == 'mmdense.registry'
                 for alias in node.names}
        parts = ('mmdense', ) + path.relative_to(PACKAGE_DIR).with_suffix('').parts
        module = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        for node in ast.walk(tree):
            for decorator in getattr(node, 'decorator_list', []):
                call = decorator if isinstance(decorator, ast.Call) else None
                target = call.func if call else decorator
                if (isinstance(target, ast.Attribute) and target.attr == 'register_module'
                        and isinstance(target.value, ast.Name) and target.value.id in names):
                    keywords = {kw.arg: kw.value for kw in (call.keywords if call else [])}
                    name = (keywords['name'].value if 'name' in keywords else node.name)
                    found.setdefault((target.value.id, module), []).append(name)
    return found


def test_the_source_scan_finds_the_registrations():
    found = registrations()
    assert found[('MODELS', 'mmdense.models.algorithms.dino')] == ['DINO']
    assert found[('HOOKS', 'mmdense.engine.hooks.dense_eval_hook')] == ['DenseEvalHook']
    assert found[('WEIGHT_INITIALIZERS', 'mmdense.models.heads.dino_init')] == ['DINOInit']
    assert {key[0] for key in found} >= {'MODELS', 'HOOKS', 'OPTIMIZERS', 'OPTIM_WRAPPERS',
                                         'OPTIM_WRAPPER_CONSTRUCTORS', 'DATASETS',
                                         'DATA_SAMPLERS', 'TRANSFORMS', 'WEIGHT_INITIALIZERS'}


def test_every_registering_module_is_a_location_of_its_registry():
    missing = [f'{module} registers {names} into {name}, whose locations omit it'
               for (name, module), names in registrations().items()
               if module not in getattr(registry, name)._locations]
    assert not missing, '\n'.join(missing)


def test_locations_are_the_modules_of_the_registering_packages():
    assert registry.modules_under('mmdense.datasets.transforms') == sorted(
        f'mmdense.datasets.transforms.{path.stem}'
        for path in (PACKAGE_DIR / 'datasets' / 'transforms').glob('*.py')
        if path.name != '__init__.py')
    assert 'mmdense.models.algorithms.dino' in registry.MODELS._locations
    assert not registry.PARAM_SCHEDULERS._locations  # mmdense registers no scheduler
    assert all(module.startswith('mmdense.') for reg in registry.REGISTRIES
               for module in reg._locations)


BUILD = '''
import json, sys
import mmdense
from mmengine.registry import DATA_SAMPLERS, HOOKS, MODELS, TRANSFORMS, DefaultScope
before = sorted(name for name in ('mmdense.models', 'mmdense.engine', 'mmdense.datasets')
                if name in sys.modules)
DefaultScope.get_instance('check', scope_name='mmdense')  # what Runner.from_cfg sets
head = MODELS.build(dict(type='DINOHead', in_channels=8, hidden_channels=8,
                         bottleneck_channels=4, out_channels=16))
hook = HOOKS.build(dict(type='FreezeLastLayerHook', freeze_iters=1))
crop = TRANSFORMS.build(dict(type='PackMultiViewInputs'))
from mmdense.registry import REGISTRIES
from mmdense.utils import register_all_modules
register_all_modules()
print(json.dumps(dict(before=before, built=[type(x).__name__ for x in (head, hook, crop)],
                      registered={r.name: sorted(r.module_dict) for r in REGISTRIES})))
'''


def test_configs_build_through_the_locations_and_register_all_modules_registers_all():
    result = subprocess.run([sys.executable, '-c', BUILD], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['before'] == []  # `import mmdense` imports none of them
    assert report['built'] == ['DINOHead', 'FreezeLastLayerHook', 'PackMultiViewInputs']
    registered = report['registered']
    missing = [f'{name} {module} {names}' for (name, module), names in registrations().items()
               if not set(names) <= set(registered[getattr(registry, name).name])]
    assert not missing, missing
