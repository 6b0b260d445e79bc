import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.models import VisionTransformer
from mmpretrain.structures import DataSample

from mmdense.datasets.transforms import BlockwisePatchMasks
from helpers import ROOT, TINY_ARCH, build_seeded

pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_ibot_cfg(**kwargs):
    """A 2-block iBOT for 32 px global views (2 x 2 patches)."""
    return dict(
        type='iBOT',
        backbone=dict(type='QueryVisionTransformer', img_size=32, patch_size=16,
                      drop_path_rate=0.1, arch=TINY_ARCH, mask_token=True),
        head=dict(type='DINOHead', in_channels=48, out_channels=64, hidden_channels=48,
                  bottleneck_channels=16, norm_last_layer=False),
        loss=dict(type='DINOLoss', out_channels=64),
        patch_loss=dict(type='iBOTPatchLoss', out_channels=64),
        teacher_momentum=0.9,
        **kwargs)


def ibot_batch(batch_size=3, seed=0):
    """2 global views of 32 px with (2, 2, 2) masks per image, 2 local views of 16 px."""
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(batch_size, 3, 32, 32, generator=g) for _ in range(2)]
    views += [torch.randn(batch_size, 3, 16, 16, generator=g) for _ in range(2)]
    masks = torch.rand(batch_size, 2, 2, 2, generator=g) < 0.5
    masks[0, 0] = torch.tensor([[True, False], [False, True]])
    masks[1, 1] = False  # an image view without masked patches
    return views, [DataSample(masks=m) for m in masks], masks


def test_mask_token_replaces_exactly_the_masked_patch_embeddings():
    """Reference: mmpretrain's own ViT forward with its patch embedding's output edited by a
    hook (masked rows set to the mask token)."""
    model = build_seeded(tiny_ibot_cfg())
    backbone = model.backbone
    backbone.eval()
    with torch.no_grad():
        backbone.mask_token.normal_()
    plain = VisionTransformer(img_size=32, patch_size=16, arch=TINY_ARCH, out_type='raw')
    plain.load_state_dict({k: v for k, v in backbone.state_dict().items() if k != 'mask_token'})
    plain.eval()
    images = torch.randn(2, 3, 48, 32)  # 3 x 2 patches
    mask = torch.tensor([[[True, False], [False, False], [False, True]],
                         [[False, False], [False, False], [False, False]]])

    def replace(module, inputs, output):
        tokens, grid = output
        tokens = tokens.clone()
        tokens[mask.flatten(1)] = backbone.mask_token[0, 0]
        return tokens, grid

    handle = plain.patch_embed.register_forward_hook(replace)
    with torch.no_grad():
        expected = plain(images)[0]
        handle.remove()
        torch.testing.assert_close(backbone.forward_all_tokens(images, mask), expected,
                                   atol=1e-5, rtol=0)
        assert not torch.allclose(backbone.forward_all_tokens(images), expected, atol=1e-3)


def test_ibot_loss_matches_a_hand_computation():
    """CLS term: every (teacher global view, other student view) pair; patch term: each
    global view's masked patches against the teacher's unmasked view, per-image means."""
    model = build_seeded(tiny_ibot_cfg(patch_loss_weight=0.5, teacher_temp=0.04,
                                       teacher_patch_temp=0.05))
    model.eval()  # no drop-path: the student forward can be repeated exactly
    model.loss_module.center.fill_(0.1)
    model.patch_loss_module.center.fill_(-0.2)
    views, samples, masks = ibot_batch()
    losses = model.loss(views, samples)
    assert set(losses) == {'loss_cls', 'loss_mim'}

    with torch.no_grad():
        teacher = [model.teacher['head'](model.teacher['backbone'].forward_all_tokens(v))
                   for v in views[:2]]
        student = [model.head(model.backbone.forward_all_tokens(v, masks[:, i]))
                   for i, v in enumerate(views[:2])]
        student_cls = [s[:, 0] for s in student] + [model.head(model.backbone(v)[0])
                                                    for v in views[2:]]
    cls_sum, cls_terms = 0.0, 0
    for t in range(2):
        for s in range(4):
            if s == t:
                continue
            for b in range(3):
                target = F.softmax((teacher[t][b, 0] - 0.1) / 0.04, dim=-1)
                cls_sum += -(target * F.log_softmax(student_cls[s][b] / 0.1, dim=-1)).sum()
            cls_terms += 1
    assert math.isclose(losses['loss_cls'].item(), cls_sum.item() / (3 * cls_terms),
                        rel_tol=1e-5)
    mim_sum = 0.0
    for v in range(2):
        for b in range(3):
            image_sum, masked = 0.0, 0
            for n in range(4):
                if masks[b, v].flatten()[n]:
                    target = F.softmax((teacher[v][b, 1 + n] + 0.2) / 0.05, dim=-1)
                    log_probs = F.log_softmax(student[v][b, 1 + n] / 0.1, dim=-1)
                    image_sum += -(target * log_probs).sum()
                    masked += 1
            mim_sum += image_sum / max(masked, 1)
    assert math.isclose(losses['loss_mim'].item(), 0.5 * mim_sum.item() / 6, rel_tol=1e-5)


def test_only_the_student_learns_and_the_mask_token_is_trained():
    model = build_seeded(tiny_ibot_cfg())
    views, samples, _ = ibot_batch()
    model.loss(views, samples)['loss_mim'].backward()
    assert model.backbone.mask_token.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_block_masks_follow_ibots_generator():
    """loader.py ImageFolderMask: ratio 0 masks nothing; a ratio r masks blocks until r·h·w
    patches are reached or no block fits in what remains (a new block masks at most the
    remaining count), so never more than r·h·w and within a block of it; (0, 0.3) ± (0, 0.2)
    leaves about half the views unmasked."""
    img = [np.zeros((224, 224, 3), np.uint8)] * 2 + [np.zeros((96, 96, 3), np.uint8)]
    np.random.seed(0)
    assert not BlockwisePatchMasks(pred_ratio=0.0, pred_ratio_var=0.0).transform(
        dict(img=img))['masks'].any()
    fixed = BlockwisePatchMasks(pred_ratio=0.3, pred_ratio_var=0.0)
    for _ in range(20):
        masks = fixed.transform(dict(img=img))['masks']
        assert masks.shape == (2, 14, 14) and masks.dtype == bool
        counts = masks.sum(axis=(1, 2))
        assert ((counts > 0.3 * 196 - 16) & (counts <= math.ceil(0.3 * 196))).all()
    recipe = BlockwisePatchMasks()
    counts = np.array([recipe.transform(dict(img=img))['masks'].sum(axis=(1, 2))
                       for _ in range(200)]).ravel()
    assert 0.4 < (counts == 0).mean() < 0.6
    masked = counts[counts > 0] / 196
    assert masked.min() > 0.1 - 16 / 196 and masked.max() <= 0.5 + 1 / 196
    assert 0.2 < masked.mean() < 0.35
    with pytest.raises(ValueError, match='2 leading views of one size'):
        recipe.transform(dict(img=img[1:]))
    with pytest.raises(ValueError, match='ranges within'):
        BlockwisePatchMasks(pred_ratio=0.1, pred_ratio_var=0.2)


def test_clear_errors():
    model = build_seeded(tiny_ibot_cfg())
    views, _, _ = ibot_batch()
    with pytest.raises(KeyError, match="'masks' is missing"):
        model.loss(views, [DataSample() for _ in range(3)])
    cfg = tiny_ibot_cfg()
    cfg['backbone']['mask_token'] = False
    with pytest.raises(TypeError, match='mask_token=True'):
        build_seeded(cfg)


def test_recipe_is_the_readmes_vit_s_run():
    """README.md of bytedance/ibot, the ViT-S/16 command (2 nodes x 8 GPUs x 64 images)."""
    cfg = Config.fromfile(f'{ROOT}/configs/ibot/vit-s_in1k.py')
    crops = cfg.train_dataloader.dataset.pipeline[1]
    assert (crops.global_crops.num, crops.global_crops.size, crops.global_crops.scale) == \
        (2, 224, (0.25, 1.0))
    assert (crops.local_crops.num, crops.local_crops.size, crops.local_crops.scale) == \
        (10, 96, (0.05, 0.25))
    masks = cfg.train_dataloader.dataset.pipeline[2]
    assert (masks.pred_ratio, masks.pred_ratio_var) == ((0.0, 0.3), (0.0, 0.2))
    assert cfg.model.head.out_channels == cfg.model.patch_loss.out_channels == 8192
    assert not cfg.model.head.norm_last_layer
    assert cfg.model.teacher_temp == cfg.model.teacher_patch_temp == 0.07
    assert cfg.train_cfg.max_epochs == 800 and cfg.train_dataloader.batch_size == 64
    assert cfg.optim_wrapper.optimizer.lr == 5e-4 * 1024 / 256
    assert cfg.optim_wrapper.clip_grad == dict(type='per_param', max_norm=3.0)
    assert cfg.custom_hooks[0].attributes == ('teacher_temp', 'teacher_patch_temp')
