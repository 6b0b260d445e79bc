"""tools/analysis_tools/visualize_slots.py on a checkpoint trained by tools/train.py."""
import os.path as osp
import subprocess
import sys

import numpy as np
from PIL import Image
from algorithm_table import tiny_config
from helpers import ROOT, run_train


def test_writes_assignment_pngs_from_a_trained_checkpoint(toy_root, tmp_path):
    config = tmp_path / 'slotcon.py'
    tiny_config('SlotCon', toy_root, max_iters=2).dump(str(config))
    run_train(str(config), str(tmp_path / 'work'))
    out = tmp_path / 'vis'
    images = osp.join(toy_root, 'images', 'val')
    cmd = [sys.executable, osp.join(ROOT, 'tools/analysis_tools/visualize_slots.py'),
           str(config), str(tmp_path / 'work' / 'iter_2.pth'), images, '--out', str(out),
           '--size', '96', '--max-images', '4', '--rows', '3', '--top-k', '2']
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    assignments = sorted((out / 'assignments').glob('*.png'))
    assert len(assignments) == 4
    panel = np.asarray(Image.open(assignments[0]))
    assert panel.ndim == 3 and panel.shape[1] > panel.shape[0]  # image | assignment side by side
    left, right = np.split(panel[:, :panel.shape[1] // 2 * 2], 2, axis=1)
    assert not np.array_equal(left, right)  # the overlay differs from the plain image
    assert (out / 'top_images_per_prototype.png').exists()
