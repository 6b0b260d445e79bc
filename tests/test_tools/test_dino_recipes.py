"""configs/dino/vit-s_in1k-100e.py and vit-s_in1k-300e.py are the two ViT-S/16 runs that the
facebookresearch/dino README documents with logs, argument by argument. The official values are
typed from that repository: the defaults of ``main_dino.py``'s argument parser (unchanged since
its first commit), the README's commands (vanilla: ``main_dino.py --arch vit_small`` on 8 GPUs;
boost: ``run_with_submitit.py --arch vit_small --epochs 300 --teacher_temp 0.07
--warmup_teacher_temp_epochs 30 --norm_last_layer false``, whose ``--nodes 2 --ngpus 8`` defaults
make 16 GPUs) and ``DataAugmentationDINO``. configs/dino/README.md tabulates them."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

from mmdense.engine.hooks import TeacherTempWarmupHook
from mmdense.registry import MODELS, PARAM_SCHEDULERS, TRANSFORMS
from helpers import ROOT

MAIN_DINO_DEFAULTS = dict(
    arch='vit_small', patch_size=16, out_dim=65536, norm_last_layer=True,
    momentum_teacher=0.996, use_bn_in_head=False, warmup_teacher_temp=0.04, teacher_temp=0.04,
    warmup_teacher_temp_epochs=0, weight_decay=0.04, weight_decay_end=0.4, clip_grad=3.0,
    batch_size_per_gpu=64, epochs=100, freeze_last_layer=1, lr=0.0005, warmup_epochs=10,
    min_lr=1e-6, optimizer='adamw', drop_path_rate=0.1, global_crops_scale=(0.4, 1.0),
    local_crops_number=8, local_crops_scale=(0.05, 0.4))
RUNS = {
    'vit-s_in1k-100e.py': dict(MAIN_DINO_DEFAULTS, gpus=8),
    'vit-s_in1k-300e.py': dict(MAIN_DINO_DEFAULTS, gpus=16, epochs=300, teacher_temp=0.07,
                               warmup_teacher_temp_epochs=30, norm_last_layer=False),
}
PUBLISHED = {'vit-s_in1k-100e.py': ('69.3', '74.0'), 'vit-s_in1k-300e.py': ('73.3', '76.0')}
# DataAugmentationDINO and the fixed values of main_dino.py / vision_transformer.py
FIXED = dict(global_crops_number=2, global_size=224, local_size=96, ratio=(3 / 4, 4 / 3),
             interpolation='bicubic', flip_prob=0.5, student_temp=0.1, center_momentum=0.9,
             embed_dim=384, depth=12, heads=6, hidden_dim=2048, bottleneck_dim=256, nlayers=3)


def load(config):
    return Config.fromfile(osp.join(ROOT, 'configs/dino', config))


def hook(cfg, name):
    hooks = [h for h in cfg.custom_hooks if h.type == name]
    return hooks[0] if hooks else None


def as_dino_arguments(cfg):
    """The config's values under main_dino.py's argument names."""
    model, crop = cfg.model, cfg.train_pipeline[1]
    optimizer = cfg.optim_wrapper.optimizer
    schedulers = {s.type: s for s in cfg.param_scheduler}
    warmup = hook(cfg, 'TeacherTempWarmupHook')
    total_batch = cfg.auto_scale_lr.base_batch_size
    gpus = total_batch // cfg.train_dataloader.batch_size
    assert model.head.out_channels == model.loss.out_channels
    assert schedulers['CosineAnnealingWeightDecay'].T_max == cfg.train_cfg.max_epochs
    assert cfg.optim_wrapper.clip_grad.type == 'per_param'
    return dict(
        arch={'deit-small': 'vit_small'}[model.backbone.arch], patch_size=model.backbone.patch_size,
        out_dim=model.head.out_channels, norm_last_layer=model.head.norm_last_layer,
        momentum_teacher=model.teacher_momentum,
        use_bn_in_head=False,  # DINOHead has no BatchNorm option
        warmup_teacher_temp=warmup.start if warmup else model.teacher_temp,
        teacher_temp=model.teacher_temp,
        # DINO's warm-up of n epochs reaches its end in epoch n - 1 (see the test below)
        warmup_teacher_temp_epochs=warmup.warmup_epochs + 1 if warmup else 0,
        weight_decay=optimizer.weight_decay,
        weight_decay_end=schedulers['CosineAnnealingWeightDecay'].eta_min,
        clip_grad=cfg.optim_wrapper.clip_grad.max_norm,
        batch_size_per_gpu=cfg.train_dataloader.batch_size, epochs=cfg.train_cfg.max_epochs,
        freeze_last_layer=hook(cfg, 'FreezeLastLayerHook').freeze_epochs,
        lr=optimizer.lr * 256 / total_batch, warmup_epochs=schedulers['LinearLR'].end,
        min_lr=schedulers['CosineAnnealingLR'].eta_min, optimizer=optimizer.type.lower(),
        drop_path_rate=model.backbone.drop_path_rate,
        global_crops_scale=tuple(crop.global_crops.scale),
        local_crops_number=crop.local_crops.num, local_crops_scale=tuple(crop.local_crops.scale),
        gpus=gpus)


def same(ours, official):
    if isinstance(official, (str, bool)):
        return ours == official
    return np.allclose(ours, official, rtol=1e-12, atol=0)


@pytest.mark.parametrize('config', sorted(RUNS))
def test_every_argument_is_the_official_runs(config):
    cfg = load(config)
    arguments = as_dino_arguments(cfg)
    differ = {k: (arguments[k], v) for k, v in RUNS[config].items() if not same(arguments[k], v)}
    assert not differ, f'{config}: (config, official) {differ}'
    assert cfg.model.end_teacher_momentum == 1.0
    if arguments['warmup_teacher_temp_epochs']:
        assert hook(cfg, 'TeacherTempWarmupHook').end == cfg.model.teacher_temp


@pytest.mark.parametrize('config', sorted(RUNS))
def test_the_fixed_choices_are_dinos(config):
    init_default_scope('mmdense')
    cfg = load(config)
    model = cfg.model
    crop = TRANSFORMS.build(cfg.train_pipeline[1])
    backbone = MODELS.build(model.backbone)
    values = dict(
        global_crops_number=crop.global_crops['num'], global_size=crop.global_crops['size'],
        local_size=crop.local_crops['size'], ratio=tuple(crop.ratio),
        interpolation=crop.interpolation, flip_prob=crop.flip_prob,
        student_temp=model.loss.student_temp, center_momentum=model.loss.center_momentum,
        embed_dim=backbone.embed_dims, depth=backbone.num_layers,
        heads=backbone.layers[0].attn.num_heads, hidden_dim=model.head.hidden_channels,
        bottleneck_dim=model.head.bottleneck_channels, nlayers=model.head.num_layers)
    assert values == FIXED
    assert model.head.in_channels == backbone.embed_dims
    assert model.backbone.init_cfg.type == model.head.init_cfg.type == 'DINOInit'


@pytest.mark.parametrize('config', sorted(RUNS))
def test_teacher_temperature_per_epoch_is_dinos(config):
    """main_dino.py's DINOLoss: τ_t of epoch e is np.concatenate((np.linspace(w, t, n),
    np.ones(epochs - n) * t))[e]; the config's value at the first iteration of every epoch."""
    args, cfg = RUNS[config], load(config)
    n = args['warmup_teacher_temp_epochs']
    official = np.concatenate((np.linspace(args['warmup_teacher_temp'], args['teacher_temp'], n),
                               np.ones(args['epochs'] - n) * args['teacher_temp']))
    iters_per_epoch = 7
    warmup = hook(cfg, 'TeacherTempWarmupHook')
    if warmup is None:
        ours = np.full(args['epochs'], cfg.model.teacher_temp)
    else:
        temperature = TeacherTempWarmupHook(**{k: v for k, v in warmup.items() if k != 'type'})
        temperature.warmup_iters = int(round(warmup.warmup_epochs * iters_per_epoch))
        ours = np.array([temperature.value_at(e * iters_per_epoch)
                         for e in range(args['epochs'])])
    np.testing.assert_allclose(ours, official, rtol=0, atol=1e-12)


def dino_cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0,
                          start_warmup_value=0):
    """The schedule of DINO's utils.cosine_scheduler, written from its definition: a linear
    warm-up from ``start_warmup_value`` over ``warmup_epochs`` (both ends included), then
    ``final + (base - final)(1 + cos(π i / I)) / 2`` over the remaining I iterations."""
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters /
                                                                         len(iters)))
    return np.concatenate((warmup, cosine))


@pytest.mark.parametrize('config', sorted(RUNS))
def test_lr_and_weight_decay_schedules_are_dinos(config):
    """Every iteration's lr and weight decay against DINO's schedules, 40 iterations per epoch.
    The weight decay is equal. mmengine's LinearLR (multiplicative: it cannot start at 0) ramps
    from 0.001 x the peak to (1 - 0.999 / W) x the peak in W warm-up iterations, where DINO's
    ramps from 0 to the peak; the cosine then starts from where the warm-up ended. So the lr
    stays within 1/W of DINO's (W = 400 here; 25020 at ImageNet's 2502 iterations per epoch)."""
    args, cfg = RUNS[config], load(config)
    init_default_scope('mmdense')
    niter = 40
    total_batch = args['batch_size_per_gpu'] * args['gpus']
    peak = args['lr'] * total_batch / 256
    lr = dino_cosine_scheduler(peak, args['min_lr'], args['epochs'], niter,
                               args['warmup_epochs'])
    wd = dino_cosine_scheduler(args['weight_decay'], args['weight_decay_end'], args['epochs'],
                               niter)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=peak,
                                  weight_decay=args['weight_decay'])
    wrapper = OptimWrapper(optimizer)
    schedulers = [PARAM_SCHEDULERS.build(s, default_args=dict(optimizer=wrapper,
                                                              epoch_length=niter))
                  for s in cfg.param_scheduler]
    ours_lr, ours_wd = [], []
    for _ in range(args['epochs'] * niter):
        ours_lr.append(optimizer.param_groups[0]['lr'])
        ours_wd.append(optimizer.param_groups[0]['weight_decay'])
        for scheduler in schedulers:
            scheduler.step()
    warmup_iters = args['warmup_epochs'] * niter
    np.testing.assert_allclose(ours_lr[:warmup_iters], lr[:warmup_iters], rtol=0,
                               atol=peak / warmup_iters)
    np.testing.assert_allclose(ours_lr[warmup_iters:], lr[warmup_iters:], rtol=1 / warmup_iters)
    np.testing.assert_allclose(ours_wd, wd, rtol=1e-6)


@pytest.mark.parametrize('config', sorted(RUNS))
def test_the_readme_row_gives_that_runs_published_numbers(config):
    with open(osp.join(ROOT, 'configs/dino/README.md'), encoding='utf-8') as f:
        rows = [line for line in f if line.startswith(f'| `{config}`')]
    assert len(rows) == 1, rows
    knn, linear = PUBLISHED[config]
    assert f'{knn} % k-NN' in rows[0] and f'{linear} % linear' in rows[0], rows[0]
