"""mmdense imports and builds its models beside a ``transformers`` that breaks mmpretrain's
multimodal models (as newer releases do on GPU machines)."""
import os
import subprocess
import sys

import pytest

CHECK = ('import warnings; warnings.simplefilter("always")\n'
         'import mmdense, mmpretrain.models\n'
         'from mmdense.utils import register_all_modules\n'
         'register_all_modules()\n'
         'from mmdense.registry import MODELS\n'
         'print("built", type(MODELS.build(dict(type="DINOHead", in_channels=8, '
         'hidden_channels=8, bottleneck_channels=4, out_channels=16))).__name__)\n')


@pytest.fixture
def broken_transformers(tmp_path):
    """A ``transformers`` 4.99 that is installed (metadata) but fails to import."""
    package = tmp_path / 'transformers'
    package.mkdir()
    (package / '__init__.py').write_text(
        "raise ImportError(\"cannot import name 'apply_chunking_to_forward'\")\n")
    info = tmp_path / 'transformers-4.99.0.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text('Metadata-Version: 2.1\nName: transformers\nVersion: 4.99.0\n')
    return str(tmp_path)


@pytest.mark.parametrize('first', ['import mmdense', 'import mmpretrain'])
def test_mmdense_models_build_beside_a_broken_transformers(broken_transformers, first):
    env = dict(os.environ, PYTHONPATH=broken_transformers)
    from mmpretrain.utils.dependency import satisfy_requirement
    result = subprocess.run([sys.executable, '-c', f'{first}\n{CHECK}'], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'built DINOHead' in result.stdout
    assert "mmpretrain's multimodal models are unavailable" in result.stderr
    assert 'apply_chunking_to_forward' in result.stderr
    assert satisfy_requirement('pycocotools'), 'the fake only matters where mmpretrain tries it'


def test_pretraining_and_export_import_without_mmdet_and_mmseg():
    """``pip install -e ".[lite]"`` installs neither: importing mmdense, registering its modules
    and the export API must not need them (a blocked import raises ImportError)."""
    code = ('import sys\n'
            'sys.modules["mmdet"] = None; sys.modules["mmseg"] = None\n'
            'import mmdense\n'
            'from mmdense.utils import register_all_modules\n'
            'register_all_modules()\n'
            'import mmdense.transfer\n'
            'from mmdense.transfer.checkpoints import export_backbone\n'
            'from mmdense.registry import MODELS\n'
            'print("ok", MODELS.get("SlotCon").__name__)\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'ok SlotCon' in result.stdout


@pytest.mark.parametrize('import_mmdense_first', [True, False])
def test_mmcv_lites_missing_ops_notice_is_hidden_once_mmdense_is_imported(import_mmdense_first):
    """mmcv-lite (the demo's environment) lacks ``mmcv.ops``; ``mmcv.cnn`` then warns that
    MultiScaleDeformableAttention is unavailable, two lines on every demo screen. Simulated here
    by making that module unimportable; without mmdense imported first the notice shows (so the
    simulation is real), after it the notice is gone and other warnings still show."""
    script = ('import sys, warnings\n'
              'sys.modules["mmcv.ops.multi_scale_deform_attn"] = None\n'
              + ('import mmdense\n' if import_mmdense_first else '') +
              'import mmcv.cnn.bricks.transformer\n'
              'warnings.warn("another notice")\n')
    result = subprocess.run([sys.executable, '-W', 'default', '-c', script],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'another notice' in result.stderr
    assert ('MultiScaleDeformableAttention' in result.stderr) is not import_mmdense_first
