"""Every transfer benchmark config builds its model; the model zoo metadata is consistent.
(The step-cost configs of configs/benchmarks/step_cost/ are tested in test_step_cost_configs.py.)"""
import glob
import os.path as osp

import pytest
import yaml
from mmengine.config import Config
from algorithm_table import ALGORITHMS
from helpers import ROOT

BENCHMARKS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'configs/benchmarks/**/*.py'), recursive=True)
    if '_base_' not in p and f'{osp.sep}step_cost{osp.sep}' not in p)


def test_the_listed_benchmarks_exist():
    expected = {
        'mmdetection/coco/mask-rcnn_r50-syncbn_fpn_ms-1x_coco.py',
        'mmdetection/coco/mask-rcnn_vit-s16_fpn_1x_coco.py',
        'mmdetection/toy/mask-rcnn_vit-s16_fpn_toy.py',
        'mmsegmentation/ade20k/upernet_vit-s16_160k_ade20k-512x512.py',
        'mmsegmentation/ade20k/fcn_r50-d8_80k_ade20k-512x512.py',
        'mmsegmentation/cityscapes/fcn-d6_r50_90k_cityscapes-769x769.py',
        'mmsegmentation/cityscapes/upernet_vit-s16_90k_cityscapes-769x769.py',
        'mmsegmentation/voc12aug/fcn-d6_r50_30k_voc12aug-513x513.py',
        'mmsegmentation/voc12aug/upernet_vit-s16_30k_voc12aug-513x513.py',
        'mmsegmentation/toy/upernet_vit-s16_toy.py',
        'mmdetection/toy/mask-rcnn_r18_fpn_toy.py',
        'mmsegmentation/toy/upernet_r18_toy.py',
    }
    assert {osp.relpath(p, 'configs/benchmarks') for p in BENCHMARKS} == expected


@pytest.mark.parametrize('config', BENCHMARKS)
def test_benchmark_config_builds(config):
    from mmdense.transfer.downstream import build_model, config_scope
    cfg = Config.fromfile(osp.join(ROOT, config))
    scope = config_scope(cfg, config)
    assert scope == ('mmdet' if 'mmdetection' in config else 'mmseg')
    assert cfg.model.get('pretrained') is None
    init_cfg = cfg.model.backbone.init_cfg
    assert init_cfg == dict(type='Pretrained', checkpoint=None)  # set from the export
    model = build_model(cfg)
    backbone = model.backbone
    if 'vit-s16' in config:
        assert type(backbone).__name__ == 'ViTPyramid'
        assert (backbone.embed_dims, backbone.num_layers, backbone.out_indices) == (
            384, 12, [3, 5, 7, 11])
        assert cfg.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    else:  # a plain ResNet stem, whatever mmseg's base used
        assert type(backbone).__name__ == 'ResNet'
        assert backbone.depth == (18 if 'r18' in config else 50)
        assert not hasattr(backbone, 'stem')


def test_protocol_details():
    def load(config):
        return Config.fromfile(osp.join(ROOT, 'configs/benchmarks', config))

    r50 = load('mmdetection/coco/mask-rcnn_r50-syncbn_fpn_ms-1x_coco.py')
    assert r50.model.backbone.norm_cfg.type == 'SyncBN' and r50.model.backbone.frozen_stages == -1
    assert r50.model.roi_head.bbox_head.type == 'Shared4Conv1FCBBoxHead'
    assert r50.train_pipeline[2].scales == [(1333, s) for s in range(640, 801, 32)]
    vit = load('mmdetection/coco/mask-rcnn_vit-s16_fpn_1x_coco.py')
    assert (vit.optim_wrapper.optimizer.lr, vit.optim_wrapper.type) == (5e-5, 'AmpOptimWrapper')
    city = load('mmsegmentation/cityscapes/fcn-d6_r50_90k_cityscapes-769x769.py')
    assert city.model.auxiliary_head is None and city.model.decode_head.dilation == 6
    assert city.model.backbone.strides == (1, 2, 2, 1)
    assert city.param_scheduler[0].milestones == [63000, 81000]
    voc = load('mmsegmentation/voc12aug/fcn-d6_r50_30k_voc12aug-513x513.py')
    assert voc.train_cfg.max_iters == 30000 and voc.optim_wrapper.optimizer.lr == 0.003
    assert all(d.pipeline[3].crop_size == (513, 513) for d in voc.train_dataloader.dataset.datasets)
    ade = load('mmsegmentation/ade20k/upernet_vit-s16_160k_ade20k-512x512.py')
    assert ade.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.9
    assert ade.model.test_cfg.stride == (341, 341) and ade.train_cfg.max_iters == 160000


def read_yaml(path):
    with open(osp.join(ROOT, path)) as f:
        return yaml.safe_load(f)


def test_model_index():
    metafiles = read_yaml('model-index.yml')['Import']
    assert sorted(metafiles) == sorted(record.path for record in ALGORITHMS.values())
    from mmdense.transfer.checkpoints import default_branch
    names = set()
    for metafile in metafiles:
        meta = read_yaml(metafile)
        collection = meta['Collections'][0]['Name']
        for model in meta['Models']:
            assert model['In Collection'] == collection
            assert model['Name'] not in names
            names.add(model['Name'])
            assert osp.isfile(osp.join(ROOT, model['Config'])), model['Config']
            assert 'Weights' in model and model['Weights'] is None  # until released
            assert model['Metadata']['Transfer Branch'] == default_branch(collection)
            for result in model['Results']:
                assert result['Source'] == 'paper' and result['Metrics']
                assert result.get('Protocol'), (f'{metafile}: {model["Name"]} {result["Task"]} '
                                                'says not which protocol gave the number')
                benchmark = result.get('Benchmark Config')
                assert benchmark is None or benchmark in BENCHMARKS
