"""print_config, browse_dataset, analyze_logs and test_downstream run on the toy data."""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
from helpers import ROOT



def run_tool(*args, check=True):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_print_config_merges_bases_and_applies_options(tmp_path):
    saved = tmp_path / 'merged.py'
    result = run_tool('tools/misc/print_config.py', 'configs/slotcon/r18_toy.py', '--cfg-options',
                      'train_dataloader.batch_size=3', '--save-path', str(saved))
    # from the _base_ model file, overridden by r18_toy.py, then by the option
    assert "type='SlotCon'" in result.stdout
    assert 'depth=18' in result.stdout
    assert 'batch_size=3' in result.stdout
    from mmengine.config import Config
    cfg = Config.fromfile(str(saved))
    assert cfg.train_dataloader.batch_size == 3 and cfg.model.head.num_prototypes == 32


def test_print_config_names_a_missing_file():
    result = run_tool('tools/misc/print_config.py', 'configs/nope.py', check=False)
    assert result.returncode == 2
    assert 'configs/nope.py' in result.stderr


def test_browse_dataset_draws_every_view_and_its_crop_box(toy_root, tmp_path):
    out = tmp_path / 'views'
    result = run_tool('tools/misc/browse_dataset.py', 'configs/dino/vit-s_toy.py', '--out',
                      str(out), '--num-images', '2', '--tile', '64', '--cfg-options',
                      f'train_dataloader.dataset.data_root={toy_root}')
    files = sorted(os.listdir(out))
    assert files == ['000_000000.png', '001_000001.png']
    assert result.stdout.count('6 views with crop boxes') == 2  # 2 global + 4 local crops
    image = cv2.imread(str(out / files[0]))
    # the original at 2 x 64 px, then six framed 64 px views (+ 3 px border each side) with gaps
    assert image.shape[0] == 2 * 64
    assert image.shape[1] == 2 * 64 + 6 * (64 + 6) + 6 * 6
    # each view is framed in its own colour: the first view's frame is orange-yellow (BGR)
    left = 2 * 64 + 6
    assert tuple(int(c) for c in image[0, left + 20]) == (0, 200, 255)


def test_analyze_logs_plots_losses_of_a_work_dir(tmp_path):
    run_dir = tmp_path / 'work' / '20260101_000000' / 'vis_data'
    run_dir.mkdir(parents=True)
    records = [dict(step=s, loss=5.0 - s / 10, loss_group=2.0, lr=0.1) for s in (10, 20, 30)]
    records.append(dict(step=30, **{'dense_eval/knn_mIoU': 0.25}))
    (run_dir / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in records) + '\n')
    out = tmp_path / 'curves.png'
    result = run_tool('tools/analysis_tools/analyze_logs.py', str(tmp_path / 'work'), '--out',
                      str(out), '--legend', 'run')
    assert 'run loss: 4.0000 (iter 10) -> 2.0000 (iter 30)' in result.stdout
    assert 'dense_eval/knn_mIoU: 0.2500' in result.stdout
    assert 'lr' not in result.stdout.replace('wrote', '')  # not a default key
    image = cv2.imread(str(out))
    assert image is not None and image.std() > 0


def test_analyze_logs_names_unlogged_keys(tmp_path):
    path = tmp_path / 'scalars.json'
    path.write_text(json.dumps(dict(step=1, loss=1.0)) + '\n')
    result = run_tool('tools/analysis_tools/analyze_logs.py', str(path), '--out',
                      str(tmp_path / 'x.png'), '--keys', 'loss_cls', check=False)
    assert result.returncode == 2
    assert 'loss_cls' in result.stderr and 'logged keys are loss' in result.stderr


def test_test_downstream_scores_a_saved_segmentor(toy_root, tmp_path):
    """A checkpoint of the toy UperNet is evaluated on 2 toy val images: the metrics come from
    mmseg's IoUMetric and land in the JSON."""
    import torch
    from mmengine.config import Config
    from mmdense.transfer.downstream import build_model, set_backbone_init
    config = 'configs/benchmarks/mmsegmentation/toy/upernet_r18_toy.py'
    cfg = Config.fromfile(osp.join(ROOT, config))
    set_backbone_init(cfg, None)
    torch.manual_seed(0)
    checkpoint = tmp_path / 'segmentor.pth'
    torch.save(dict(state_dict=build_model(cfg).state_dict()), checkpoint)
    out = tmp_path / 'metrics.json'
    run_tool('tools/benchmarks/test_downstream.py', config, str(checkpoint), '--work-dir',
             str(tmp_path / 'work'), '--out', str(out), '--cfg-options',
             f'test_dataloader.dataset.data_root={toy_root}', 'test_dataloader.dataset.indices=2',
             'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False')
    metrics = json.loads(out.read_text())['metrics']
    assert 0 <= metrics['mIoU'] <= 100 and 0 <= metrics['aAcc'] <= 100


def test_test_downstream_refuses_a_missing_checkpoint(tmp_path):
    result = run_tool('tools/benchmarks/test_downstream.py',
                      'configs/benchmarks/mmsegmentation/toy/upernet_r18_toy.py',
                      str(tmp_path / 'none.pth'), check=False)
    assert result.returncode == 2 and 'none.pth' in result.stderr
