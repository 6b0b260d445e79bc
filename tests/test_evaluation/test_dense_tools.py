"""tools/test_dense.py and tools/analysis_tools/visualize_dense.py on a tiny ViT and toy set."""
import json
import os.path as osp
import runpy
import sys

import cv2
import pytest
import torch
from mmengine.config import Config

from mmdense.evaluation import DATASET_CONFIGS, load_dataset_config, load_model, load_split
from helpers import ROOT

TEST_DENSE = osp.join(ROOT, 'tools/test_dense.py')
VISUALIZE = osp.join(ROOT, 'tools/analysis_tools/visualize_dense.py')


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    """A tiny DINO ViT config and a checkpoint of its (random) weights."""
    folder = tmp_path_factory.mktemp('tiny_dino')
    cfg = Config.fromfile(osp.join(ROOT, 'configs/dino/vit-s_toy.py'))
    cfg.model.backbone.update(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                        feedforward_channels=64), img_size=64)
    cfg.model.head.update(in_channels=32, hidden_channels=64, bottleneck_channels=32,
                          out_channels=64)
    cfg.model.loss.out_channels = 64
    config = str(folder / 'tiny_dino.py')
    cfg.dump(config)
    checkpoint = str(folder / 'tiny.pth')
    torch.save(dict(state_dict=load_model(config, 'random').state_dict()), checkpoint)
    return config, checkpoint


def run_tool(path, *args):
    """Run a tool's ``__main__`` in this process; user errors propagate (``--debug``)."""
    argv = sys.argv
    sys.argv = [path, *map(str, args), '--debug']
    try:
        runpy.run_path(path, run_name='__main__')
    except SystemExit as exit:
        if exit.code not in (0, None):
            raise
    finally:
        sys.argv = argv


def test_test_dense_prints_a_table_and_writes_json(tiny_model, toy_root, tmp_path, capsys):
    config, checkpoint = tiny_model
    out = tmp_path / 'result.json'
    run_tool(TEST_DENSE, config, checkpoint, '--protocol', 'linear', 'knn', 'cluster',
             'dispersion', '--data-root', toy_root, '--num-train', 4, '--num-val', 3,
             '--img-size', 64, '--num-clusters', 9, 20, '--linear-epochs', 3, '--out', out)
    printed = capsys.readouterr().out
    assert 'protocol' in printed and 'K=20 majority' in printed and 'intra_instance' in printed
    result = json.loads(out.read_text())
    rows = {(r['protocol'], r['setting']): r['metrics'] for r in result['results']}
    assert set(rows) == {('linear', '3 epochs'), ('knn', 'k=10'), ('cluster', 'K=9 hungarian'),
                         ('cluster', 'K=20 majority'), ('dispersion', '')}
    for (protocol, _), metrics in rows.items():
        if protocol == 'dispersion':
            assert set(metrics) == {'intra_class', 'inter_class', 'class_gap', 'intra_instance'}
        else:
            assert 0 <= metrics['mIoU'] <= 1 and 0 <= metrics['pAcc'] <= 1
    assert result['num_train'] == 4 and result['num_val'] == 3 and result['img_size'] == 64


def test_random_baseline_is_reproducible_per_seed(tiny_model, toy_root, tmp_path):
    config, _ = tiny_model
    scores = {}
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        out = tmp_path / f'{name}.json'
        run_tool(TEST_DENSE, config, 'random', '--protocol', 'dispersion', '--data-root',
                 toy_root, '--num-val', 3, '--img-size', 64, '--seed', seed, '--out', out)
        result = json.loads(out.read_text())
        assert result['seed'] == seed
        scores[name] = result['results'][0]['metrics']
    assert scores['a'] == scores['b']
    assert scores['a'] != scores['c']  # another draw of the random init


def test_test_dense_reports_bad_input(tiny_model, toy_root, tmp_path, capsys):
    config, checkpoint = tiny_model
    with pytest.raises(FileNotFoundError, match='checkpoint not found: .*missing.pth'):
        run_tool(TEST_DENSE, config, tmp_path / 'missing.pth', '--protocol', 'knn',
                 '--data-root', toy_root)
    with pytest.raises(FileNotFoundError, match='dataset path not found: .*nowhere'):
        run_tool(TEST_DENSE, config, checkpoint, '--protocol', 'knn', '--data-root',
                 tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match="unknown dense-eval dataset 'imagenet'"):
        run_tool(TEST_DENSE, config, checkpoint, '--protocol', 'knn', '--dataset', 'imagenet')
    with pytest.raises(SystemExit):
        run_tool(TEST_DENSE, config, checkpoint, '--protocol', 'segformer')
    assert "invalid choice: 'segformer'" in capsys.readouterr().err


def test_visualize_dense_writes_a_png_grid(tiny_model, toy_root, tmp_path):
    config, checkpoint = tiny_model
    run_tool(VISUALIZE, config, checkpoint, '--data-root', toy_root, '--num-images', 3,
             '--img-size', 64, '--points', '0.5,0.5', '0.2,0.8', '--tile', 64, '--out-dir',
             tmp_path)
    grid = cv2.imread(str(tmp_path / 'dense_grid.png'))
    # 3 rows x 6 tiles (image, GT, PCA, clusters, 2 heatmaps) of 64 px + 4 px gaps + a header
    assert grid.shape == (22 + 3 * 68, 6 * 68, 3)
    assert grid.std() > 10


@pytest.mark.parametrize('name', sorted(DATASET_CONFIGS))
def test_dataset_configs_load_and_name_missing_data(name, tmp_path):
    data_cfg = load_dataset_config(name)
    assert data_cfg['num_classes'] in (9, 19, 21, 27, 150)
    if name == 'toy':
        return
    with pytest.raises(FileNotFoundError, match=f'dataset path not found: {tmp_path}'):
        load_split(load_dataset_config(name, str(tmp_path)), 'val', 1)


def test_toy_split_has_labels_and_instances(toy_root):
    data = load_split(load_dataset_config('toy', toy_root), 'val', 2)
    assert data['images'].shape == (2, 3, 224, 224) and data['images'].dtype == torch.uint8
    assert set(data['labels'].unique().tolist()) <= set(range(9)) | {255}
    assert data['instances'].shape == (2, 224, 224) and data['instances'].max() >= 2


def test_random_model_has_its_teacher_synced_to_the_initialised_student(tiny_model):
    model = load_model(tiny_model[0], 'random')
    student = model.backbone.state_dict()
    teacher = model.teacher['backbone'].state_dict()
    assert all(torch.equal(student[k], teacher[k]) for k in student)
    with pytest.raises(FileNotFoundError, match='config not found: .*nope.py'):
        load_model('nope.py', 'random')
