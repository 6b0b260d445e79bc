"""CoTAP's neighbour pairs come from the source model's CLS embedding (issue 19, item 11).

A DINO checkpoint in the official format (``teacher`` / ``student`` dicts in timm names) is
converted with ``import_weights``; ``build_nn_pairs.py`` on the CoTAP config's images with the
DINO config as ``--model-config`` must give exactly the neighbours that a plain mmpretrain
``VisionTransformer`` holding the teacher's weights gives (computed here independently, all
pairs at once, on the images read with PIL as RGB, resized with PIL and normalised by hand:
nothing of the project's pipeline). Without ``--model-config`` the tool falls back to the CoTAP
config, whose object prototypes the DINO file cannot initialise: that is refused.
"""
import json
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from algorithm_table import tiny_config
from helpers import ROOT, build_algorithm, four_block_dino, run_tool
from PIL import Image

from mmdense.transfer.keys import to_layout

IMG_SIZE, TOPK = 64, 3
IMAGENET_MEAN_RGB = np.array([123.675, 116.28, 103.53])
IMAGENET_STD_RGB = np.array([58.395, 57.12, 57.375])


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


def pil_rgb_inputs(toy_root, swap_red_blue=False):
    """The toy training images as the DINO teacher was trained to see them: read with PIL as
    RGB, resized to IMG_SIZE (bicubic; the toy images are square, so no crop), ``(x - mean) /
    std`` with ImageNet's RGB statistics. ``swap_red_blue``: what treating BGR as RGB gives."""
    with open(osp.join(toy_root, 'meta', 'train.txt')) as f:
        paths = [osp.join(toy_root, line.strip()) for line in f if line.strip()]
    pixels = []
    for path in paths:
        with Image.open(path) as image:
            assert image.width == image.height, path
            rgb = image.convert('RGB').resize((IMG_SIZE, IMG_SIZE), Image.BICUBIC)
        pixels.append(np.asarray(rgb, np.float64))
    pixels = np.stack(pixels)
    if swap_red_blue:
        pixels = pixels[..., ::-1]
    normalised = (pixels - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB
    return torch.from_numpy(normalised).permute(0, 3, 1, 2).float()


def plain_vit_neighbours(converted, toy_root, swap_red_blue=False):
    """Top-k neighbours by the CLS token of a plain ViT holding the teacher's weights, on
    :func:`pil_rgb_inputs`."""
    from mmpretrain.models import VisionTransformer
    backbone_cfg = dict(converted['backbone'].backbone)
    backbone_cfg.pop('type')
    vit = VisionTransformer(**backbone_cfg)
    vit.load_state_dict(converted['teacher'])
    vit.eval()
    preprocessor = converted['backbone'].data_preprocessor
    assert preprocessor.to_rgb
    np.testing.assert_allclose(preprocessor.mean, IMAGENET_MEAN_RGB)
    np.testing.assert_allclose(preprocessor.std, IMAGENET_STD_RGB)
    with torch.no_grad():
        cls = F.normalize(vit(pil_rgb_inputs(toy_root, swap_red_blue))[-1], dim=1)
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
    expected = plain_vit_neighbours(converted_dino, toy_root)
    swapped = plain_vit_neighbours(converted_dino, toy_root, swap_red_blue=True)
    assert swapped != expected  # treating BGR as RGB would show
    assert record['neighbours'] == expected


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
