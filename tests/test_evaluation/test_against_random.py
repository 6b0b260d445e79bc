"""mmdense.evaluation.against_random: a checkpoint scored against random inits of its model."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from helpers import ROOT
from mmdense.evaluation.against_random import (margins, other_branch, random_init_config,
                                               score_against_random_init, score_other_branch)

SLOTCON_DEMO = osp.join(ROOT, 'configs/demo/slotcon_r18-w16_toy-textures.py')
COTAP_DEMO = osp.join(ROOT, 'configs/demo/cotap_vit-ti_toy-textures.py')


def test_margins_are_in_standard_deviations_of_the_draws():
    results = {'pretrained': dict(knn=0.30, grid_ceiling=0.9),
               'random init 0': dict(knn=0.10, grid_ceiling=0.9),
               'random init 1': dict(knn=0.14, grid_ceiling=0.9),
               'random init 2': dict(knn=0.12, grid_ceiling=0.9)}
    summary = margins(results)
    assert list(summary) == ['knn']  # the grid ceiling is no score
    row = summary['knn']
    # draws 0.10, 0.14, 0.12 (in order): mean 0.12, sample std 0.02, max 0.14
    assert row['draws'] == [0.10, 0.14, 0.12]
    assert row['mean'] == pytest.approx(0.12) and row['std'] == pytest.approx(0.02)
    assert row['margin_over_max_std'] == pytest.approx((0.30 - 0.14) / 0.02)
    assert row['margin_over_mean_std'] == pytest.approx((0.30 - 0.12) / 0.02)
    below = margins({**results, 'pretrained': dict(knn=0.11)}, ['knn'])['knn']
    assert below['margin_over_max_std'] == pytest.approx(-1.5)


def test_margins_need_two_draws():
    with pytest.raises(ValueError, match='at least two random draws'):
        margins({'pretrained': dict(knn=0.3), 'random init 0': dict(knn=0.1)})


def test_a_random_draw_does_not_load_the_run_s_starting_checkpoint():
    cfg = Config.fromfile(COTAP_DEMO)
    assert 'backbone_checkpoint' in cfg.model  # CoTAP starts from DINO's backbone
    assert 'backbone_checkpoint' not in random_init_config(cfg).model
    assert 'backbone_checkpoint' in cfg.model  # the given config is left alone
    assert 'backbone_checkpoint' not in random_init_config(COTAP_DEMO).model


@pytest.fixture(scope='module')
def texture_splits(tmp_path_factory):
    from mmdense.datasets.toy_scenes import generate_toy_scenes
    from mmdense.evaluation import load_dataset_config, load_split
    root = str(tmp_path_factory.mktemp('toy_textures'))
    generate_toy_scenes(root, num_train=6, num_val=3, img_size=96, class_hues=False,
                        texture_period=(4, 8))
    data_cfg = load_dataset_config('toy', root)
    data_cfg['img_size'] = 96
    return data_cfg, load_split(data_cfg, 'train'), load_split(data_cfg, 'val')


def test_a_checkpoint_of_draw_one_scores_as_draw_one(texture_splits, tmp_path):
    """The checkpoint is loaded (not re-drawn) and each draw is its seed's init: a checkpoint
    holding the weights torch seed 1 draws scores exactly as ``random init 1``, and draws 0 and 1
    differ."""
    from mmdense.evaluation import load_model
    from mmdense.evaluation.protocols import grid_majority_scores
    data_cfg, train, val = texture_splits
    torch.manual_seed(1)
    model = load_model(SLOTCON_DEMO, 'random', log=lambda *_: None)
    checkpoint = str(tmp_path / 'seed1.pth')
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    calls = []
    results = score_against_random_init(
        SLOTCON_DEMO, checkpoint, train, val, num_classes=data_cfg['num_classes'],
        ignore_index=data_cfg['ignore_index'], num_draws=2, protocols=('knn', ),
        progress=lambda done, total: calls.append((done, total)))
    assert list(results) == ['pretrained', 'random init 0', 'random init 1']
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert results['pretrained'] == results['random init 1']
    assert results['random init 0']['knn'] != results['random init 1']['knn']
    # the R18-w16 cut after stage 3 has stride 8: a 12 x 12 grid on 96 px images
    assert results['pretrained']['grid_ceiling'] == pytest.approx(
        grid_majority_scores(val['labels'], (12, 12), data_cfg['num_classes'],
                             data_cfg['ignore_index'])['mIoU'])


def test_the_other_branch_is_the_one_not_transferred():
    for config, expected in ((SLOTCON_DEMO, 'student'), (COTAP_DEMO, 'student'),
                             (osp.join(ROOT, 'configs/demo/dsc_r18-w16_toy-textures.py'),
                              'teacher')):
        cfg = Config.fromfile(config)
        assert other_branch(cfg) == expected, config
        cfg.model.feat_branch = expected
        assert other_branch(cfg) != expected, config


def test_the_other_branch_scores_its_own_weights_against_the_same_draws(texture_splits, tmp_path):
    """A SlotCon checkpoint whose student holds the weights torch seed 1 draws and whose teacher
    holds seed 0's: the transferred teacher scores as ``random init 0``, the other branch (the
    student) as ``random init 1`` (both branches of a draw hold the same weights)."""
    from mmdense.evaluation import load_model
    data_cfg, train, val = texture_splits
    draws = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        draws[seed] = load_model(SLOTCON_DEMO, 'random', log=lambda *_: None).state_dict()
    mixed = {key: draws[0 if key.startswith('teacher.') else 1][key] for key in draws[0]}
    assert any(key.startswith('teacher.') for key in mixed)
    checkpoint = str(tmp_path / 'mixed.pth')
    torch.save(dict(state_dict=mixed), checkpoint)
    common = dict(num_classes=data_cfg['num_classes'], ignore_index=data_cfg['ignore_index'],
                  protocols=('knn', ))
    results = score_against_random_init(SLOTCON_DEMO, checkpoint, train, val, num_draws=2,
                                        **common)
    branch, scores = score_other_branch(SLOTCON_DEMO, checkpoint, train, val, **common)
    assert results['random init 0']['knn'] != results['random init 1']['knn']
    assert results['pretrained'] == results['random init 0']
    assert branch == 'student' and scores == results['random init 1']
