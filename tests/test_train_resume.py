"""tools/train.py end to end on the toy scenes: train 2 iterations, resume to 4."""
import json
import os.path as osp
import subprocess
import sys

from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def tiny_run_config(config, toy_root, max_iters):
    """A shipped toy config on ``toy_root``, iteration-based, logging every iteration."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.train_dataloader.dataset.data_root = toy_root
    cfg.train_dataloader.update(batch_size=4, num_workers=0, persistent_workers=False)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
    cfg.param_scheduler = []
    cfg.custom_hooks = []
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=2)
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    return cfg


def tiny_dino_config(toy_root, max_iters):
    cfg = tiny_run_config('configs/dino/vit-s_toy.py', toy_root, max_iters)
    cfg.model.backbone.arch = dict(embed_dims=48, num_layers=2, num_heads=3,
                                   feedforward_channels=96)
    cfg.model.head.update(in_channels=48, hidden_channels=64, bottleneck_channels=32,
                          out_channels=128)
    cfg.model.loss.out_channels = 128
    cfg.custom_hooks = [dict(type='TeacherTempWarmupHook', warmup_iters=3)]
    return cfg


def tiny_slotcon_config(toy_root, max_iters):
    cfg = tiny_run_config('configs/slotcon/r18_toy.py', toy_root, max_iters)
    cfg.train_dataloader.dataset.pipeline[1].global_crops.size = 96
    cfg.model.neck.hidden_channels = 64
    cfg.model.head.num_prototypes = 8
    cfg.model.predictor.hidden_channels = 64
    return cfg


def ring_neighbours_file(toy_root, num_neighbours=2):
    """A neighbour file for ``toy_root`` pairing image i with images i+1, i+2, ..."""
    from mmdense.datasets.neighbour_pairs import write_ring_neighbours
    path = osp.join(toy_root, 'meta', f'ring_neighbours_{num_neighbours}.json')
    return write_ring_neighbours(toy_root, path, num_neighbours)


def tiny_cotap_config(toy_root, max_iters):
    cfg = tiny_run_config('configs/cotap/vit-s_toy.py', toy_root, max_iters)
    pairs = cfg.train_dataloader.dataset
    pairs.pop('data_root')
    pairs.neighbours_file = ring_neighbours_file(toy_root)
    pairs.dataset.data_root = toy_root
    cfg.train_dataloader.batch_size = 2
    cfg.model.backbone.update(arch=dict(embed_dims=48, num_layers=2, num_heads=3,
                                        feedforward_channels=96), num_prototypes=4)
    for head in (cfg.model.patch_head, cfg.model.cls_head):
        head.update(in_channels=96, hidden_channels=64, bottleneck_channels=32, out_channels=64)
    cfg.model.backbone_checkpoint = None
    return cfg


def tiny_adclr_config(toy_root, max_iters):
    cfg = tiny_run_config('configs/adclr/vit-s_toy.py', toy_root, max_iters)
    cfg.model.backbone.arch = dict(embed_dims=48, num_layers=2, num_heads=3,
                                   feedforward_channels=96)
    cfg.model.head.update(in_channels=48, hidden_channels=64, bottleneck_channels=32,
                          out_channels=128)
    cfg.model.loss.out_channels = 128
    cfg.train_dataloader.dataset.pipeline[1].query_crops.num = 3
    cfg.custom_hooks = [dict(type='TeacherTempWarmupHook', warmup_iters=3,
                             attributes=('teacher_temp', 'query_teacher_temp'))]
    return cfg


def run_train(config_path, work_dir, *extra):
    cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'), config_path, '--work-dir', work_dir,
           *extra]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def logged_steps(work_dir):
    steps = []
    for run in sorted(p for p in work_dir.iterdir() if (p / 'vis_data/scalars.json').exists()):
        with open(run / 'vis_data/scalars.json') as f:
            steps.append([json.loads(line)['step'] for line in f if 'loss' in line])
    return steps


def test_train_two_iterations_then_resume_to_four(toy_root, tmp_path):
    work_dir = tmp_path / 'work'
    first = tmp_path / 'first.py'
    tiny_dino_config(toy_root, max_iters=2).dump(str(first))
    run_train(str(first), str(work_dir))
    assert (work_dir / 'iter_2.pth').exists()

    second = tmp_path / 'second.py'
    tiny_dino_config(toy_root, max_iters=4).dump(str(second))
    log = run_train(str(second), str(work_dir), '--resume')
    assert 'resumed epoch: 0, iter: 2' in log.lower() or 'resumed' in log.lower(), log[-2000:]
    assert (work_dir / 'iter_4.pth').exists()
    assert logged_steps(work_dir)[-2:] == [[1, 2], [3, 4]]

    import torch
    ckpt = torch.load(work_dir / 'iter_4.pth', map_location='cpu')  # safe loading
    assert ckpt['meta']['iter'] == 4
    assert int(ckpt['state_dict']['teacher.steps']) == 4


def tiny_dsc_config(toy_root, max_iters):
    """DSC-KM on 64 px views (2x2 pixels) of a 1/8-width ResNet-18; the 20-key queue wraps
    around during a 6-iteration run (8 keys per iteration)."""
    cfg = tiny_run_config('configs/dsc/r18_toy.py', toy_root, max_iters)
    cfg.train_dataloader.dataset.pipeline[1].global_crops.size = 64
    cfg.model.backbone.update(stem_channels=8, base_channels=8)
    cfg.model.neck.update(in_channels=64, hid_channels=32, out_channels=16)
    cfg.model.update(queue_len=20, num_neighbours=1, num_classes=4)
    return cfg
