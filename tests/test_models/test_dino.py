import pytest
import torch
from mmengine.registry import init_default_scope

from mmdense.registry import MODELS
from mmdense.utils import register_all_modules
from helpers import dino_views, tiny_dino


def test_loss_is_finite_and_only_the_student_gets_gradients():
    model = tiny_dino()
    model.init_weights()
    losses = model.loss(dino_views(), None)
    assert set(losses) == {'loss'} and torch.isfinite(losses['loss'])
    losses['loss'].backward()
    assert all(p.grad is not None for n, p in model.named_parameters()
               if p.requires_grad and not n.startswith('teacher'))
    assert all(p.grad is None for p in model.teacher.parameters())
    assert int(model.teacher.steps) == 1


def test_teacher_sees_only_global_views_and_centre_moves():
    model = tiny_dino()
    seen = []
    model.teacher['backbone'].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    model.loss(dino_views(batch=3), None)
    assert seen == [torch.Size([6, 3, 32, 32])]  # two global views in one pass
    assert model.loss_module.center.abs().sum() > 0


def test_teacher_temperature_attribute_is_used():
    model = tiny_dino()
    model.eval()  # no drop-path noise: same inputs, same student output
    model.teacher_temp = 0.04
    sharp = model.loss(dino_views(), None)['loss']
    model.loss_module.center.zero_()
    model.teacher_temp = 1.0
    soft = model.loss(dino_views(), None)['loss']
    assert not torch.isclose(sharp, soft)


def test_too_few_views_is_a_clear_error():
    with pytest.raises(ValueError, match='views'):
        tiny_dino().loss(dino_views()[:1], None)


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = tiny_dino()
    model.init_weights()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = dino_views(batch=8, seed=1)
    history = []
    for _ in range(60):
        loss = model.loss(batch, None)['loss']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert sum(history[-10:]) / 10 < 0.7 * sum(history[:10]) / 10


def test_mismatched_dims_fail_at_build_time():
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdense')
    backbone = dict(type='VisionTransformer', img_size=32, patch_size=16,
                    arch=dict(embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64))
    with pytest.raises(ValueError, match='in_channels=48.*embed_dims=32'):
        MODELS.build(dict(type='DINO', backbone=backbone,
                          head=dict(type='DINOHead', in_channels=48, out_channels=8),
                          loss=dict(type='DINOLoss', out_channels=8)))
    with pytest.raises(ValueError, match='loss out_channels=16.*head out_channels=8'):
        MODELS.build(dict(type='DINO', backbone=backbone,
                          head=dict(type='DINOHead', in_channels=32, out_channels=8),
                          loss=dict(type='DINOLoss', out_channels=16)))
