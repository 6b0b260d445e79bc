"""DenseEvalHook: streamed metrics equal the in-memory protocol, and reach the logs of a toy DINO
pretraining run through tools/train.py."""
import json
import os.path as osp
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub, MMLogger
from helpers import ROOT



def tiny_dino_config(toy_root, work_dir):
    cfg = Config.fromfile(osp.join(ROOT, 'configs/dino/vit-s_toy.py'))
    cfg.model.backbone.arch = dict(embed_dims=32, num_layers=2, num_heads=2,
                                   feedforward_channels=64)
    cfg.model.head.update(in_channels=32, hidden_channels=64, bottleneck_channels=32,
                          out_channels=64)
    cfg.model.loss.out_channels = 64
    cfg.train_dataloader.dataset.data_root = toy_root
    cfg.train_dataloader.update(batch_size=4, num_workers=0, persistent_workers=False)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=4)
    cfg.param_scheduler = []
    cfg.custom_hooks = [
        dict(type='DenseEvalHook', dataset='toy', data_root=toy_root, protocol='knn',
             interval=2, num_train=4, num_val=2, img_size=64)
    ]
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=100)
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    cfg.work_dir = str(work_dir)
    return cfg


def test_hook_logs_knn_metrics_during_pretraining(toy_root, tmp_path):
    config = tmp_path / 'dino_dense_eval.py'
    tiny_dino_config(toy_root, tmp_path / 'work').dump(str(config))
    result = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'dense eval (iter 2): dense_eval/knn_mIoU=' in log
    assert 'loss: ' in log and 'dense_eval/knn_mIoU: ' in log  # LoggerHook's line has both

    (scalars_file, ) = (tmp_path / 'work').glob('*/vis_data/scalars.json')
    with open(scalars_file) as f:
        records = [json.loads(line) for line in f]
    evaluations = {r['step']: r for r in records if 'dense_eval/knn_mIoU' in r}
    assert sorted(evaluations) == [2, 4]  # no stale value at step 3
    for record in evaluations.values():
        assert 0.0 <= record['dense_eval/knn_mIoU'] <= 1.0
        assert 0.0 <= record['dense_eval/knn_pAcc'] <= 1.0
    assert any('loss' in r for r in records)


def test_hook_rejects_bad_settings():
    from mmdense.engine.hooks import DenseEvalHook
    with pytest.raises(ValueError, match='unknown dense protocol'):
        DenseEvalHook(protocol='segformer')
    with pytest.raises(ValueError, match='interval'):
        DenseEvalHook(interval=0)


def stub_runner(model):
    logged = []
    return SimpleNamespace(
        model=model, iter=9, logged=logged,
        message_hub=MessageHub.get_instance(f'dense-hook-{uuid.uuid4().hex}'),
        visualizer=SimpleNamespace(add_scalars=lambda scalars, step: logged.append((step,
                                                                                    scalars))),
        logger=MMLogger.get_instance(f'dense-hook-{uuid.uuid4().hex}'))


def test_hook_on_a_preset_subset_gives_the_ram_backend_result(toy_root, tmp_path):
    from mmpretrain.models import VisionTransformer

    from mmdense.engine.hooks import DenseEvalHook
    from mmdense.evaluation import (Clustering, MemoryFeatureStore, extract_features,
                                    get_preset, load_split, preset_data_cfg)
    torch.manual_seed(0)
    vit = VisionTransformer(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                      feedforward_channels=64), img_size=64, patch_size=16)
    hook = DenseEvalHook(preset='toy', protocol='cluster', num_val=4, img_size=64,
                         data_root=toy_root, cache_dir=str(tmp_path), num_workers=1,
                         protocol_cfg=dict(num_iters=5))
    assert hook.protocol_cfg == dict(num_clusters=9, matching='hungarian', num_iters=5)
    runner = stub_runner(vit)
    hook.before_train(runner)
    metrics = hook.evaluate(runner)

    data_cfg = dict(preset_data_cfg(get_preset('toy'), toy_root), img_size=64)
    val = load_split(data_cfg, 'val', 4)
    feats = extract_features(vit, val['images'], channel_order='rgb')
    expected = Clustering(num_clusters=9, num_iters=5)(
        None, MemoryFeatureStore.from_tensors(feats, val['labels']), 9)
    assert {k: metrics[k] for k in expected} == pytest.approx(expected, abs=1e-9)
    assert runner.logged == [(10, {f'dense_eval/cluster_{k}': v for k, v in metrics.items()})]
    assert runner.message_hub.get_scalar('train/dense_eval/cluster_mIoU').current() == \
        metrics['mIoU']
    assert list(tmp_path.iterdir()) == []  # the feature stores are gone
    with pytest.raises(ValueError, match="preset coco_stuff27 has no 'knn' protocol"):
        DenseEvalHook(preset='coco_stuff27', protocol='knn')
