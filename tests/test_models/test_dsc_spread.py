"""DSC's instance level keeps the global embeddings of different images apart.

A MoCo-style queue only works while the encoder changes slowly compared with the age of the
queued keys. With the toy config's former lr 0.05 and momentum 0.99 (at batch 8), the encoder
outran its queue: the loss fell by moving every embedding away from the past keys together, and
the global embeddings of all images collapsed onto one direction (mean pairwise cosine 0.993 here,
1.000 on the full toy run; ``configs/dsc/README.md``).
"""
import copy
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from mmdense.datasets.toy_scenes import generate_toy_scenes
from mmdense.registry import MODELS
from mmdense.utils import register_all_modules
from helpers import ROOT

TOY_CONFIG = osp.join(ROOT, 'configs/dsc/r18_toy.py')
R50_CONFIG = osp.join(ROOT, 'configs/dsc/r50_coco-800e.py')


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    """96 toy scenes: enough that the 512-key queue (32 iterations of batch 8) holds no image
    twice, as on the 600-scene toy set."""
    root = str(tmp_path_factory.mktemp('dsc_spread_scenes'))
    generate_toy_scenes(root, num_train=96, num_val=0, img_size=96, seed=0)
    return root + '/'


def shipped_toy_config(data_root):
    """``configs/dsc/r18_toy.py`` with its optimiser, momentum, queue, batch and loss terms, on a
    1/8-width ResNet-18 and 64 px views (2x2 pixel grids)."""
    cfg = Config.fromfile(TOY_CONFIG)
    cfg.train_pipeline[1].global_crops.size = 64
    cfg.train_dataloader.dataset.update(pipeline=cfg.train_pipeline, data_root=data_root)
    cfg.train_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.model.backbone.update(stem_channels=8, base_channels=8)
    cfg.model.neck.update(in_channels=64, hid_channels=64)
    return cfg


def whole_images(data_root, num_images, size):
    """The first training scenes, resized to ``size`` and normalised like the views."""
    with open(osp.join(data_root, 'meta/train.txt')) as f:
        names = f.read().split()[:num_images]
    images = np.stack([mmcv.imresize(mmcv.imread(osp.join(data_root, name),
                                                 channel_order='rgb'), (size, size))
                       for name in names])
    mean = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
    std = torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() - mean) / std


@torch.no_grad()
def mean_pairwise_cosine(model, images, batch_size):
    """Mean cosine between the global embeddings of different images, computed with batch
    statistics in batches of the training size (as the loss sees them), on a copy so that the
    model's running statistics stay untouched."""
    encoder = copy.deepcopy(model).train()
    embeddings = torch.cat([encoder.encode_view(encoder.student_modules(), batch).instance
                            for batch in images.split(batch_size)])
    unit = F.normalize(embeddings, dim=1)
    different = ~torch.eye(len(unit), dtype=torch.bool)
    return float((unit @ unit.t())[different].mean())


def test_toy_training_keeps_the_global_embeddings_of_different_images_apart(
        scenes):
    """40 iterations of the toy recipe (the queue is full from iteration 32; the cosine
    schedule keeps the lr within 8 % of its base value that long).

    Bound: ``1 − cos`` is half the squared distance between unit embeddings. The old toy values
    removed 94 % of the initial mean spread ``1 − mean cos`` within these 40 iterations
    (0.104 → 0.007); the recipe's values kept 99 % here and 82–108 % over three seeds in
    60-iteration runs. The test asks for at least half.
    """
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    torch.manual_seed(0)
    cfg = shipped_toy_config(scenes)
    model = MODELS.build(cfg.model)
    model.init_weights()
    steps = 40
    model.set_teacher_schedule(steps)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    batch_size = cfg.train_dataloader.batch_size
    images = whole_images(scenes, 48, 64)
    spread_at_init = 1 - mean_pairwise_cosine(model, images, batch_size)

    model.train()
    iteration = 0
    while iteration < steps:
        for data in loader:
            losses = model.loss(**model.data_preprocessor(data, training=True))
            optim_wrapper.update_params(sum(losses.values()))
            iteration += 1
            if iteration == steps:
                break
    spread = 1 - mean_pairwise_cosine(model, images, batch_size)
    assert spread > 0.5 * spread_at_init, (
        f'mean pairwise cosine {1 - spread:.4f} after {steps} iterations, '
        f'{1 - spread_at_init:.4f} at initialisation')


def test_toy_recipe_keeps_the_r50_lr_rule_and_momentum():
    """The toy config changes the batch, not the recipe: its lr is the R50 lr scaled linearly
    to its batch (MoCo v2's 0.03 per 256 images) and its momentum encoder is as slow."""
    toy, r50 = Config.fromfile(TOY_CONFIG), Config.fromfile(R50_CONFIG)
    toy_batch = toy.train_dataloader.batch_size
    r50_batch = r50.auto_scale_lr.base_batch_size
    assert toy.optim_wrapper.optimizer.lr == pytest.approx(
        r50.optim_wrapper.optimizer.lr * toy_batch / r50_batch)
    for key in ('teacher_momentum', 'end_teacher_momentum'):
        assert toy.model[key] == r50.model[key] == 0.999
