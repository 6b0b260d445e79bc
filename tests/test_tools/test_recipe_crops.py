"""``benchmark_table.py --recipe-crops`` runs every step-cost config at the views and batch of
the recipe it is cut from (the GPU table of the issue: ResNet-50 2 x 224 px at 64 images, ViT-S/16
2 x 224 + 10 x 96 px at 32 images)."""
import os.path as osp
import sys
from types import SimpleNamespace

import pytest
from mmengine.config import Config

from algorithm_table import ALGORITHMS
from helpers import ROOT

sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
import benchmark  # noqa: E402
import benchmark_table  # noqa: E402


def crops(cfg):
    """{name: (num, size)} of the crops of the config's multi-crop transform (num > 0)."""
    dataset = cfg.train_dataloader.dataset
    while 'pipeline' not in dataset:
        dataset = dataset.dataset
    return {name: (spec.num, spec.size) for name, spec in dataset.pipeline[1].items()
            if name.endswith('_crops') and spec.get('num')}


@pytest.mark.parametrize('entry', benchmark_table.ENTRIES, ids=lambda e: e.name)
def test_recipe_views_turn_a_step_cost_config_into_its_recipe_views(entry):
    cfg = Config.fromfile(osp.join(benchmark_table.CONFIG_DIR, entry.config))
    benchmark.set_views(cfg, entry.recipe_views)
    expected = {'global_crops': (2, 224)}
    if entry.group == 'ViT-S/16':
        expected['query_crops' if entry.name == 'adclr' else 'local_crops'] = (
            (1, 96) if entry.name == 'adclr' else (10, 96))
    assert crops(cfg) == expected
    images_per_step = entry.recipe_batch * (2 if entry.pairs else 1)
    assert images_per_step == (32 if entry.group == 'ViT-S/16' else 64)


@pytest.mark.parametrize('record', [r for r in ALGORITHMS.values() if r.step_cost],
                         ids=lambda r: r.folder)
def test_recipe_views_are_those_of_the_recipe_config(record):
    """A record's step-cost ``Recipe Views`` are the crops of its ``Recipe Config``."""
    entry = benchmark_table.BY_NAME[record.folder]
    step_cost = Config.fromfile(osp.join(benchmark_table.CONFIG_DIR, entry.config))
    benchmark.set_views(step_cost, entry.recipe_views)
    assert crops(step_cost) == crops(Config.fromfile(osp.join(ROOT, record.recipe_config)))


def test_recipe_crops_reach_the_benchmark_command():
    args = SimpleNamespace(iters=1, warmup=0, threads=1, amp=False, channels_last=False,
                           device=None, recipe_crops=True, out_dir='out')
    cmd = benchmark_table.benchmark_command(benchmark_table.BY_NAME['cotap'], args, 'x.json')
    assert cmd[cmd.index('--batch-size') + 1] == '16'
    views = cmd[cmd.index('--views') + 1:cmd.index('--views') + 3]
    assert views == ['global_crops=2x224', 'local_crops=10x96']


def test_a_view_the_pipeline_lacks_is_an_error_naming_it():
    cfg = Config.fromfile(osp.join(benchmark_table.CONFIG_DIR, 'slotcon_r50.py'))
    with pytest.raises(SystemExit, match='query_crops'):
        benchmark.set_views(cfg, ['query_crops=4x96'])
