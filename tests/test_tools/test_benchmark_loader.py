"""tools/analysis_tools/benchmark_loader.py: one worker's images/s for a recipe pipeline."""
import json
import os.path as osp
import subprocess
import sys

from helpers import ROOT


def test_reports_images_per_worker_and_workers_needed(tmp_path):
    out = tmp_path / 'loader.json'
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools/analysis_tools/benchmark_loader.py'),
         'configs/slotcon/r50_coco-800e.py', 'configs/cotap/vit-s_coco.py', '--images', '3',
         '--image-size', '320', '240', '--step-rate', '100', '--out', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [row['config'] for row in rows] == ['configs/slotcon/r50_coco-800e.py',
                                               'configs/cotap/vit-s_coco.py']
    for row in rows:
        assert row['images_per_s_per_worker'] > 0 and row['images_per_cpu_s'] > 0
        assert row['workers_needed'] * row['images_per_s_per_worker'] >= 100
        assert (row['workers_needed'] - 1) * row['images_per_s_per_worker'] < 100
