"""CoTAP's neighbour pairs come from the source model's CLS embedding (issue 19, item 11).

A DINO checkpoint in the official format (``teacher`` / ``student`` dicts in timm names) is
converted with ``import_weights``; ``build_nn_pairs.py`` on the CoTAP config's images with the
DINO config as ``--model-config`` must give exactly the neighbours that a plain mmpretrain
``VisionTransformer`` holding the teacher's weights gives (computed here independently, all
pairs at once). Without ``--model-config`` the tool falls back to the CoTAP config, whose
object prototypes the DINO file cannot initialise: that is refused.
"""
import json
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import default_collate
from algorithm_table import tiny_config
from helpers import ROOT, build_algorithm, four_block_dino, run_tool

from mmdense.registry import DATASETS
from mmdense.transfer.keys import to_layout

IMG_SIZE, TOPK = 64, 3


@pytest.fixture(scope='module')
def converted_dino(tmp_path_factory, toy_root):
    """The DINO config, the converted checkpoint, the teacher's mmpretrain-layout weights and a
    CoTAP config over the toy images."""
    folder = tmp_path_factory.mktemp('converted_dino')
    cfg, model = build_algorithm('configs/dino/vit-s_toy.py', four_block_dino)
    cfg.dump(str(folder / 'dino.py'))
    teacher = model.teacher.module.backbone.state_dict()
    student = model.backbone.state_dict()  # perturbed away from the teacher by build_algorithm
    published = dict(
        teacher={'backbone.' + k: v for k, v in to_layout(teacher, 'vit', 'timm').items()},
        student={'module.backbone.' + k: v for k, v in to_layout(student, 'vit', 'timm').items()})
    torch.save(published, folder / 'dino_published.pth')
    from mmdense.transfer import import_published
    import_published(str(folder / 'dino_published.pth'), str(folder / 'dino_mmdense.pth'), 'dino')
    tiny_config('CoTAP', toy_root, max_iters=1).dump(str(folder / 'cotap.py'))
    return dict(dino_config=str(folder / 'dino.py'), checkpoint=str(folder / 'dino_mmdense.pth'),
                cotap_config=str(folder / 'cotap.py'), teacher=teacher, backbone=cfg.model)


def plain_vit_neighbours(converted, toy_root):
    """Top-k neighbours by the CLS token of a plain ViT holding the teacher's weights."""
    from mmpretrain.models import VisionTransformer
    backbone_cfg = dict(converted['backbone'].backbone)
    backbone_cfg.pop('type')
    vit = VisionTransformer(**backbone_cfg)
    vit.load_state_dict(converted['teacher'])
    vit.eval()
    dataset = DATASETS.build(dict(
        type='UnlabeledImageDataset', data_root=toy_root, ann_file='meta/train.txt',
        pipeline=[dict(type='LoadRGBImage'),
                  dict(type='ResizeEdge', scale=IMG_SIZE, edge='short', backend='pillow',
                       interpolation='bicubic'),
                  dict(type='CenterCrop', crop_size=IMG_SIZE), dict(type='PackInputs')]))
    images = default_collate([dataset[i] for i in range(len(dataset))])['inputs'].float()
    preprocessor = converted['backbone'].data_preprocessor
    mean = torch.tensor(preprocessor.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocessor.std).view(1, 3, 1, 1)
    with torch.no_grad():
        cls = F.normalize(vit((images - mean) / std)[-1], dim=1)
    similarity = cls @ cls.T
    similarity.fill_diagonal_(-float('inf'))
    return similarity.topk(TOPK, dim=1).indices.tolist()


def test_neighbours_of_a_converted_dino_equal_those_of_a_plain_vit(converted_dino, toy_root,
                                                                   tmp_path):
    out = tmp_path / 'nn.json'
    assert run_tool('tools/misc/build_nn_pairs.py', converted_dino['cotap_config'],
                    converted_dino['checkpoint'], '--model-config',
                    converted_dino['dino_config'], '--out', out, '--topk', TOPK, '--img-size',
                    IMG_SIZE, '--num-workers', 0, '--data-root', toy_root) == 0
    with open(out) as f:
        record = json.load(f)
    assert len(record['neighbours']) == 24
    assert record['neighbours'] == plain_vit_neighbours(converted_dino, toy_root)


def test_uninitialised_object_prototypes_are_refused(converted_dino, toy_root, tmp_path,
                                                     capsys):
    """No --model-config: the converted file records no config, so the CoTAP config is used."""
    assert run_tool('tools/misc/build_nn_pairs.py', converted_dino['cotap_config'],
                    converted_dino['checkpoint'], '--out', tmp_path / 'nn.json', '--topk', TOPK,
                    '--img-size', IMG_SIZE, '--num-workers', 0, '--data-root', toy_root) == 2
    error = capsys.readouterr().err
    assert 'object prototypes of the backbone were never initialised' in error
    assert 'DINO config' in error
    assert not (tmp_path / 'nn.json').exists()


def test_the_cotap_recipe_builds_pairs_with_the_dino_config():
    with open(osp.join(ROOT, 'configs/cotap/README.md')) as f:
        recipe = f.read().split('## Recipe', 1)[1].split('```', 2)[1]
    assert '--model-config configs/dino/vit-s_coco.py' in ' '.join(recipe.split())
    assert Config.fromfile(osp.join(ROOT, 'configs/dino/vit-s_coco.py')).model.type == 'DINO'
