"""The downstream pieces registered for mmdet and mmseg: ViTPyramid and layer-wise lr decay."""
import pytest
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from helpers import det_config, seg_config


def optimizer_groups(cfg):
    """{parameter name: (lr, weight decay)} of the optimiser ``cfg`` builds for its model."""
    from mmdense.transfer.downstream import build_model
    model = build_model(cfg)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (group['lr'], group['weight_decay'])
            for group in optimizer.param_groups for p in group['params']}


def test_layer_decay_in_encoder_decoder():
    """UperNet (mmseg): lr × 0.9 per block below the top, weights of the 4-block ViT decay."""
    groups = optimizer_groups(seg_config())
    base = 2e-4
    expected_lr = {
        'backbone.patch_embed.projection.weight': base * 0.9**5,
        'backbone.cls_token': base * 0.9**5,
        'backbone.layers.0.attn.qkv.weight': base * 0.9**4,
        'backbone.layers.3.ffn.layers.1.weight': base * 0.9,
        'backbone.ln1.weight': base,
        'backbone.adapter.0.0.weight': base,
        'decode_head.conv_seg.weight': base,
        'auxiliary_head.convs.0.conv.weight': base,
    }
    for name, lr in expected_lr.items():
        assert groups[name][0] == pytest.approx(lr), name
    no_decay = ['backbone.pos_embed', 'backbone.cls_token', 'backbone.layers.1.ln2.weight',
                'backbone.layers.1.attn.qkv.bias', 'decode_head.conv_seg.bias']
    assert all(groups[name][1] == 0.0 for name in no_decay)
    assert groups['backbone.layers.1.attn.qkv.weight'][1] == 0.05
    assert groups['decode_head.conv_seg.weight'][1] == 0.05


def test_layer_decay_in_mask_rcnn():
    """Mask R-CNN (mmdet) at decay 1.0: one lr, weight decay off for tokens, norms, biases."""
    groups = optimizer_groups(det_config())
    assert all(lr == pytest.approx(1e-4) for lr, _ in groups.values())
    assert groups['backbone.pos_embed'][1] == 0.0
    assert groups['roi_head.mask_head.convs.0.conv.weight'][1] == 0.05
    assert groups['neck.lateral_convs.0.conv.bias'][1] == 0.0


def test_layer_decay_needs_layer_depths():
    cfg = det_config()
    cfg.model.backbone = dict(type='ResNet', depth=18)  # mmdet's ResNet has no get_layer_depth
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    cfg.optim_wrapper.paramwise_cfg.layer_decay_rate = 0.9
    with pytest.raises(TypeError, match='layer decay needs a backbone with get_layer_depth'):
        optimizer_groups(cfg)


def test_layer_decay_rejects_unknown_options():
    cfg = seg_config()
    cfg.optim_wrapper.paramwise_cfg.decay_rate = 0.9  # mmseg's name for it
    with pytest.raises(KeyError, match=r"takes paramwise_cfg keys .* got also \['decay_rate'\]"):
        optimizer_groups(cfg)


def test_vit_pyramid_arguments():
    from mmdense.transfer import ViTPyramid
    with pytest.raises(ValueError, match='needs 4 out_indices'):
        ViTPyramid(arch='deit-tiny', out_indices=(5, 11))
    with pytest.raises(ValueError, match="needs out_type='featmap'"):
        ViTPyramid(arch='deit-tiny', out_type='cls_token')
