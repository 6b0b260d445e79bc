"""tools/analysis_tools/gpu_check.py: its CPU dry run (``--device cpu --tiny``) runs the same
code as the GPU check, so the script cannot rot between GPU runs."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest

from algorithm_table import ALGORITHMS, tiny_config
from helpers import ROOT

SCRIPT = osp.join(ROOT, 'tools', 'analysis_tools', 'gpu_check.py')


def load_tool():
    spec = importlib.util.spec_from_file_location('gpu_check', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_the_tiny_dry_run_checks_the_tests_tiny_model(algorithm, toy_root, tmp_path):
    """One definition of tiny: ``--tiny`` builds the model of the tests' ``tiny_config`` (the
    record's ``Tiny`` cfg-options), ViTs 4 blocks deep for the export check's pyramid."""
    tool = load_tool()
    args = SimpleNamespace(tiny=True, batch_size=2, device='cpu', data_root=toy_root)
    checked = tool.check_config(algorithm, args, str(tmp_path))
    expected = tiny_config(algorithm, toy_root, max_iters=1).model
    if ALGORITHMS[algorithm].backbone_family == 'vit':
        expected.backbone.arch.num_layers = 4
    assert checked.model.to_dict() == expected.to_dict()


def test_help_describes_every_check():
    result = subprocess.run([sys.executable, SCRIPT, '--help'], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    for check in load_tool().CHECKS:
        assert check in result.stdout


@pytest.mark.parametrize('algorithms', [['DINO', 'SlotCon']])
def test_cpu_dry_run_trains_resumes_and_transfers(algorithms, toy_root, tmp_path):
    out = tmp_path / 'result.json'
    result = subprocess.run(
        [sys.executable, SCRIPT, '--device', 'cpu', '--tiny', '--data-root', toy_root,
         '--algorithms', *algorithms, '--work-dir', str(tmp_path / 'work'), '--out', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    table = json.loads(out.read_text())['results']
    assert list(table) == algorithms
    for algorithm, row in table.items():
        assert row['fp16']['status'] == 'n/a'  # needs CUDA
        for check in ('bf16', 'ddp_syncbn', 'resume', 'export'):
            assert row[check]['status'] == 'ok', (algorithm, check, row[check])
    assert table['SlotCon']['channels_last']['status'] == 'ok'
    assert table['DINO']['channels_last']['status'] == 'n/a'
    assert 'bit-identical' in table['DINO']['resume']['detail']
    assert '| SlotCon | n/a | ok | ok | ok | ok | ok |' in result.stdout


def test_a_failing_check_is_reported_and_exits_non_zero(toy_root, tmp_path, monkeypatch,
                                                        capsys):
    tool = load_tool()
    monkeypatch.setitem(tool.RECIPES, 'DINO', replace(tool.RECIPES['DINO'],
                                                      toy_config='configs/dino/missing.py'))
    code = tool.main(['--device', 'cpu', '--tiny', '--data-root', toy_root, '--algorithms',
                      'DINO', '--checks', 'bf16', 'resume', '--work-dir', str(tmp_path)])
    assert code == 1
    out = capsys.readouterr().out
    assert '| DINO | error | error |' in out and 'missing.py' in out


def test_missing_toy_data_is_a_usage_error(tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, '--device', 'cpu', '--tiny', '--data-root',
                             str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert 'make toy-data' in result.stderr
