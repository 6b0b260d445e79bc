"""``init_cfg=dict(type='DINOInit')`` gives the weights facebookresearch/dino starts from
(``vision_transformer.py``): every Linear weight and the cls/pos tokens N(0, 0.02²) (truncated at
±2, an absolute bound: the tails of the normal stay), biases 0, LayerNorm 1/0, the patch
embedding and the prototype layer's direction at torch's default init (U(±1/√fan_in)), the
prototype scale g = 1. The references are those numbers, not mmdense's code."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdense.models.heads.dino_head import WeightNormLinear
from mmdense.registry import MODELS
from helpers import ROOT

STD = 0.02
NORMAL_TAIL = 2 * (1 - 0.5 * (1 + math.erf(2 / math.sqrt(2))))  # P(|z| > 2) = 0.0455


@pytest.fixture(scope='module')
def vit_and_head():
    init_default_scope('mmdense')
    torch.manual_seed(0)
    backbone = MODELS.build(dict(type='VisionTransformer', arch='deit-small', patch_size=16,
                                 img_size=224, drop_path_rate=0.1, out_type='cls_token',
                                 init_cfg=dict(type='DINOInit')))
    head = MODELS.build(dict(type='DINOHead', in_channels=384, out_channels=4096,
                             norm_last_layer=False, init_cfg=dict(type='DINOInit')))
    backbone.init_weights()
    head.init_weights()
    return backbone, head


def assert_dino_normal(tensor, name):
    """Mean 0, std 0.02 (to 3 standard errors of the sample std), normal tails beyond 2 std:
    not truncated at ±2 std (no tail) and not uniform (no tail either).

    The truncated-normal sampler (DINO's ``trunc_normal_``, torch's and mmengine's alike) draws a
    uniform number, maps it through the inverse normal CDF and clamps to [-2, 2]: a float32 draw
    at the end of the uniform's range becomes ±inf, clamped to ±2 (a few among the 22 M weights
    of a ViT-S). Those are counted and left out of the statistics."""
    values = tensor.detach().double().flatten()
    clamped = values.abs() > 10 * STD
    assert (values[clamped].abs() == 2).all() and clamped.double().mean() < 1e-5, name
    values = values[~clamped]
    tolerance = 3 * STD / math.sqrt(2 * values.numel())
    assert abs(values.mean()) < 3 * STD / math.sqrt(values.numel()), name
    assert abs(values.std() - STD) < tolerance, (name, values.std())
    tail = (values.abs() > 2 * STD).double().mean()
    assert abs(tail - NORMAL_TAIL) < 4 * math.sqrt(NORMAL_TAIL / values.numel()) + 1e-3, (
        name, tail)


def test_linear_weights_are_trunc_normal_and_biases_zero(vit_and_head):
    backbone, head = vit_and_head
    linears = [(f'backbone.{n}', m) for n, m in backbone.named_modules()
               if isinstance(m, nn.Linear)]
    linears += [(f'head.{n}', m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]
    # qkv, proj and the two FFN layers of 12 blocks; the head's three MLP layers
    assert len(linears) == 12 * 4 + 3
    for name, linear in linears:  # the smallest is proj, 384 x 384 = 147k values
        assert_dino_normal(linear.weight, name)
        assert linear.bias is not None and not linear.bias.any(), name


def test_layer_norms_tokens_and_patch_embedding(vit_and_head):
    backbone, _ = vit_and_head
    norms = [m for m in backbone.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 12 * 2 + 1
    for norm in norms:
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert not norm.bias.any()
    assert_dino_normal(backbone.pos_embed, 'pos_embed')  # 197 x 384 values
    # 384 values: the std within 10 % (4.7 standard errors), not mmpretrain's zeros
    assert abs(backbone.cls_token.std().item() - STD) < 0.1 * STD
    # patch embedding: nn.Conv2d's default, U(±1/√fan_in) for weight and bias, fan_in 3·16·16
    conv = backbone.patch_embed.projection
    bound = 1 / math.sqrt(3 * 16 * 16)
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.99 * bound
    assert abs(conv.weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound
    assert conv.bias.abs().max() <= bound and conv.bias.any()


def test_prototype_layer_is_torch_default_with_unit_scale(vit_and_head):
    _, head = vit_and_head
    last = head.last_layer
    assert isinstance(last, WeightNormLinear)
    bound = 1 / math.sqrt(256)  # nn.Linear(256, K).reset_parameters(): U(±1/√256)
    v = last.weight_v.detach()
    assert v.abs().max() <= bound and v.abs().max() > 0.99 * bound
    # a row of 256 U(±1/16) values has norm √(256 · (1/16)² / 3) = 1/√3 ≈ 0.577, sd ≈ 0.016
    row_norms = v.norm(dim=1)
    assert abs(row_norms.mean().item() - 1 / math.sqrt(3)) < 0.005
    assert (row_norms - 1 / math.sqrt(3)).abs().max() < 0.1
    assert torch.equal(last.weight_g, torch.ones_like(last.weight_g))


def test_the_children_init_does_not_overwrite_it():
    """mmpretrain's encoder layers re-draw their FFN with Xavier (std √(2 / (384 + 1536)) ≈
    0.032) in their own init_weights, which mmengine runs after the parent's init_cfg."""
    init_default_scope('mmdense')
    torch.manual_seed(0)
    default = MODELS.build(dict(type='VisionTransformer', arch='deit-small'))
    default.init_weights()
    ffn = default.layers[0].ffn.layers[0][0].weight
    assert abs(ffn.std().item() - math.sqrt(2 / (384 + 1536))) < 1e-3  # what DINOInit replaces
    dino = MODELS.build(dict(type='VisionTransformer', arch='deit-small',
                             init_cfg=dict(type='DINOInit')))
    dino.init_weights()
    assert_dino_normal(dino.layers[0].ffn.layers[0][0].weight, 'ffn')


@pytest.mark.parametrize('config', ['vit-s_in1k-100e.py', 'vit-s_in1k-300e.py'])
def test_the_dino_recipes_start_from_dinos_init(config):
    init_default_scope('mmdense')
    cfg = Config.fromfile(osp.join(ROOT, 'configs/dino', config))
    cfg.model.head.out_channels = cfg.model.loss.out_channels = 1024  # K does not matter here
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert_dino_normal(model.backbone.layers[5].ffn.layers[1].weight, 'fc2')
    assert_dino_normal(model.backbone.layers[5].attn.qkv.weight, 'qkv')
    assert abs(model.backbone.cls_token.std().item() - STD) < 0.1 * STD
    row_norms = model.head.last_layer.weight_v.detach().norm(dim=1)
    assert abs(row_norms.mean().item() - 1 / math.sqrt(3)) < 0.01
    assert not model.head.mlp[0].bias.any()
