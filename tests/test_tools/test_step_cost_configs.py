"""The step-cost configs (configs/benchmarks/step_cost/) compare like with like, and each one
runs a training step on the CPU (with its backbone and heads shrunk: the configs' full-size
models are exercised by tools/analysis_tools/benchmark_table.py)."""
import glob
import math
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from helpers import ROOT, ring_neighbours_file

sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
import benchmark  # noqa: E402
import benchmark_table  # noqa: E402

STEP_COST = osp.join(ROOT, 'configs', 'benchmarks', 'step_cost')
CONFIGS = sorted(osp.basename(p) for p in glob.glob(osp.join(STEP_COST, '*.py')))
TINY_VIT = dict(embed_dims=48, num_layers=2, num_heads=3, feedforward_channels=96)


def load(name):
    return Config.fromfile(osp.join(STEP_COST, name))


def image_dataset(cfg):
    dataset = cfg.train_dataloader.dataset
    return dataset.dataset if dataset.type == 'NeighbourPairDataset' else dataset


def views(cfg):
    """(global crops, local crops, query crops) of the config, as (num, size) pairs."""
    crops = image_dataset(cfg).pipeline[1]
    query = crops.get('query_crops')
    return ((crops.global_crops.num, crops.global_crops.size),
            (crops.local_crops.num, crops.local_crops.get('size')),
            None if query is None else (query.num, query.size))


def images_per_step(cfg):
    pairs = cfg.train_dataloader.dataset.type == 'NeighbourPairDataset'
    return cfg.train_dataloader.batch_size * (2 if pairs else 1)


def test_the_table_runs_every_config_and_nothing_else():
    assert sorted(e.config for e in benchmark_table.ENTRIES) == CONFIGS
    for entry in benchmark_table.ENTRIES:
        assert all(b in benchmark_table.BY_NAME and not benchmark_table.BY_NAME[b].baselines
                   for b in entry.baselines)


@pytest.mark.parametrize('group', benchmark_table.GROUPS)
def test_a_group_shares_backbone_views_and_batch(group):
    entries = [e for e in benchmark_table.ENTRIES if e.group == group]
    cfgs = {e.name: load(e.config) for e in entries}
    backbones = {name: (cfg.model.backbone.get('arch'), cfg.model.backbone.get('depth'),
                        cfg.model.backbone.get('patch_size')) for name, cfg in cfgs.items()}
    assert len(set(backbones.values())) == 1, backbones
    # ADCLR's local crops are its query crops (the student sees them as queries only)
    shared = {name: (views(cfg)[0], views(cfg)[2]) if name == 'adclr' else views(cfg)[:2]
              for name, cfg in cfgs.items()}
    assert len(set(shared.values())) == 1, shared
    assert {images_per_step(cfg) for cfg in cfgs.values()} == {8}
    assert {cfg.optim_wrapper.type for cfg in cfgs.values()} == {'OptimWrapper'}  # all fp32
    if group == 'ViT-S/16':
        assert shared['dino'] == ((2, 96), (4, 48))
        assert views(cfgs['adclr'])[1][0] == 0  # no DINO local views besides the queries
        assert cfgs['dino'].model.head.out_channels == 65536  # the recipes' heads, not toy ones
        assert cfgs['cotap'].model.patch_head.out_channels == 512
    else:
        assert shared['slotcon'] == ((2, 128), (0, None))
        assert {cfgs[n].model.type for n in ('densecl', 'byol')} == {'DenseCL', 'BYOL'}


def shrink(cfg):
    """A tiny backbone and heads, so that a step takes a second; the data path is unchanged."""
    model = cfg.model
    if model.type in ('DINO', 'ADCLR'):
        model.backbone.arch = TINY_VIT
        model.head.update(in_channels=48, hidden_channels=64, bottleneck_channels=32,
                          out_channels=128)
        model.loss.out_channels = 128
    elif model.type == 'CoTAP':
        model.backbone.update(arch=TINY_VIT, num_prototypes=4)
        for head in (model.patch_head, model.cls_head):
            head.update(in_channels=96, hidden_channels=64, bottleneck_channels=32,
                        out_channels=64)
    else:  # ResNet-50 -> ResNet-18 of 16 base channels (128 out), narrow MLPs
        model.backbone.update(depth=18, stem_channels=16, base_channels=16)
        if model.type == 'SlotCon':
            model.neck.update(in_channels=128, hidden_channels=64)
            model.head.num_prototypes = 8
            model.predictor.hidden_channels = 64
        elif model.type == 'BYOL':
            model.neck.update(in_channels=128, hid_channels=64)
            model.head.predictor.hid_channels = 64
        else:  # DSC, DenseCL
            model.neck.update(in_channels=128, hid_channels=64)
            model.queue_len = 64
            if model.type == 'DSC':
                model.num_classes = 8
    return cfg


@pytest.mark.parametrize('name', CONFIGS)
def test_one_training_step(name, toy_root):
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    from mmdense.registry import MODELS
    from mmdense.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')

    cfg = shrink(load(name))
    image_dataset(cfg).data_root = toy_root
    pairs = cfg.train_dataloader.dataset.type == 'NeighbourPairDataset'
    if pairs:
        cfg.train_dataloader.dataset.neighbours_file = ring_neighbours_file(toy_root)
    cfg.train_dataloader.update(batch_size=2 if pairs else 4, num_workers=0)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    benchmark.start_momentum_schedule(model, 100)
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    assert benchmark.images_in(batch) == 4
    log_vars = model.train_step(batch, optim_wrapper)
    assert log_vars and all(math.isfinite(float(v.detach())) for v in log_vars.values())


def test_ring_neighbour_file_of_the_cotap_config(toy_root, tmp_path):
    cfg = load('cotap_vit-s16.py')
    assert cfg.ring_neighbours == 2  # benchmark.py writes its neighbours_file first
    image_dataset(cfg).data_root = toy_root
    cfg.train_dataloader.dataset.neighbours_file = str(tmp_path / 'step_cost' / 'ring.json')
    out = benchmark.write_config_ring_neighbours(cfg)
    assert out == cfg.train_dataloader.dataset.neighbours_file == str(tmp_path / 'step_cost' /
                                                                      'ring.json')
    from mmdense.datasets.neighbour_pairs import read_neighbours
    record = read_neighbours(out)
    assert record['neighbours'][0] == [1, 2] and record['neighbours'][-1] == [0, 1]
    assert len(record['images']) == 24


def fake_result(images_per_s, **extra):
    return dict(device='cpu', threads=2, median_s_per_iter=8 / images_per_s,
                images_per_s=images_per_s, gflops_per_image=3.0, peak_memory_mb=1000.0,
                peak_memory_kind='process_rss', **extra)


def test_markdown_table_ratios_and_targets():
    args = benchmark_table.parse_args(['--iters', '3', '--warmup', '1', '--threads', '2'])
    results = dict(dino=fake_result(10.0), cotap=fake_result(8.5), adclr=fake_result(8.0),
                   densecl=fake_result(4.0), byol=fake_result(5.0), slotcon=fake_result(4.0),
                   dsc=dict(error='exit status 1', log='dsc.log'))
    table = benchmark_table.markdown_table(results, args)
    lines = table.splitlines()
    row = {tuple(c.strip() for c in line.strip('|').split('|')[:2]): line for line in lines
           if line.startswith('| ') and 'algorithm' not in line}
    assert '| 1.18x | <= 1.25x | yes |' in row[('CoTAP', 'DINO')]  # 10 / 8.5
    assert '| 1.25x | <= 1.15x | no |' in row[('ADCLR', 'DINO')]
    assert '| 1.00x | <= 1.20x | yes |' in row[('SlotCon', 'DenseCL (mmpretrain)')]
    assert '| 1.25x | <= 1.20x | no |' in row[('SlotCon', 'BYOL (mmpretrain)')]
    assert 'failed: exit status 1' in row[('DSC', 'BYOL (mmpretrain)')]
    assert '(baseline)' in row[('DINO', '(baseline)')]
    assert 'median of 3 timed iteration(s) after 1 warm-up, fp32' in lines[-1]
    # without its baseline in the run, no ratio
    only = benchmark_table.markdown_table(dict(cotap=fake_result(8.5)), args)
    assert '| n/a | <= 1.25x | n/a |' in only
