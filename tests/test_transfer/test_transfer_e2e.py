"""End to end on the toy scenes: pretraining checkpoint → export → check → Mask R-CNN and
UperNet fine-tuned a few iterations and evaluated (tools/benchmarks/toy_transfer.py), and the
benchmark train.sh scripts (check first, then mmseg's training through train_downstream.py)."""
import json
import os
import os.path as osp
import subprocess
import sys

from helpers import ROOT, export, seg_config


def run_toy_transfer(*argv):
    sys.path.insert(0, osp.join(ROOT, 'tools/benchmarks'))
    try:
        import toy_transfer
    finally:
        sys.path.pop(0)
    return toy_transfer.main([str(a) for a in argv])


def test_toy_transfer_script(dino, toy_root, tmp_path):
    work_dir = tmp_path / 'toy'
    summary = run_toy_transfer(dino.path, '--work-dir', work_dir, '--data-root', toy_root,
                               '--iters', 3)
    with open(work_dir / 'toy_transfer.json') as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    assert (summary['algorithm'], summary['branch']) == ('DINO', 'teacher')
    assert summary['iters'] == dict(det=3, seg=3)
    det = summary['results']['pretrained']['det']['metrics']
    seg = summary['results']['pretrained']['seg']['metrics']
    assert 0.0 <= det['coco/bbox_mAP'] <= 1.0 and 0.0 <= det['coco/segm_mAP'] <= 1.0
    assert 0.0 < seg['mIoU'] <= 100.0
    assert [row['init'] for row in summary['table']] == ['pretrained']


def test_toy_transfer_script_with_a_resnet(slotcon, toy_root, tmp_path):
    """A ResNet checkpoint picks the ResNet toy configs, at its depth."""
    summary = run_toy_transfer(slotcon.path, '--work-dir', tmp_path, '--data-root', toy_root,
                               '--iters', 2, '--tasks', 'seg', '--random-baseline')
    assert summary['configs']['seg'].endswith('upernet_r18_toy.py')
    assert summary['backbone']['depth'] == 18
    assert [row['init'] for row in summary['table']] == ['pretrained', 'random']
    assert all(0.0 < row['mIoU'] <= 100.0 for row in summary['table'])


def run_train_sh(config, exported, work_dir, *extra):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(
        ['bash', osp.join(ROOT, 'tools/benchmarks/mmsegmentation/train.sh'), str(config),
         exported, '1', '--work-dir', str(work_dir), *extra], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=600)


def test_train_sh_checks_then_trains(dino, toy_root, tmp_path):
    cfg = seg_config()
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = toy_root
    cfg.train_cfg.update(max_iters=2, val_interval=2)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = None
    config = tmp_path / 'upernet_tiny.py'
    cfg.dump(str(config))

    refused = run_train_sh(config, export(dino, 'mmseg', branch='student'), tmp_path / 'no')
    assert refused.returncode == 1, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert 'check_transfer failed: not training' in refused.stderr
    assert not (tmp_path / 'no').exists()

    trained = run_train_sh(config, export(dino, 'mmseg'), tmp_path / 'yes')
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert 'transfer check: OK' in trained.stdout
    assert 'mIoU' in trained.stdout + trained.stderr
