"""tools/test_dense.py runs the named presets: listing, refusal of subsets, JSON + Markdown."""
import json
import os.path as osp
import subprocess
import sys

from mmdense.evaluation.presets import PRESETS
from helpers import ROOT

TOOL = osp.join(ROOT, 'tools', 'test_dense.py')


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_list_presets_prints_every_preset_with_its_source():
    result = run('--list-presets')
    assert result.returncode == 0, result.stderr[-2000:]
    for name in PRESETS:
        assert f'preset {name}:' in result.stdout
    assert result.stdout.count('source:') == len(PRESETS)


def test_preset_run_refuses_a_subset_then_reports_one(toy_root, tmp_path):
    common = ('configs/dino/vit-s_toy.py', 'random', '--preset', 'toy', '--data-root', toy_root,
              '--num-train', '8', '--num-val', '4', '--num-workers', '0')
    refused = run(*common, '--out', str(tmp_path / 'refused.json'))
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert 'error:' in refused.stderr and '--allow-subset' in refused.stderr
    assert not (tmp_path / 'refused.json').exists()

    out = tmp_path / 'toy.json'
    result = run(*common, '--allow-subset', '--out', str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record['subset'] is True and record['checkpoint'] == 'random'
    assert (tmp_path / 'toy.md').exists()


def test_a_preset_refuses_settings_it_fixes(toy_root):
    result = run('configs/dino/vit-s_toy.py', 'random', '--preset', 'toy', '--data-root',
                 toy_root, '--img-size', '64')
    assert result.returncode == 2 and 'fixes the dataset and the image size' in result.stderr


def test_preset_or_protocol_is_required():
    result = run('configs/dino/vit-s_toy.py', 'random')
    assert result.returncode == 2 and '--preset' in result.stderr
