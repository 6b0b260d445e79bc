"""Importing published checkpoints, built here with their published key layouts: the imported
backbones reproduce the originals' outputs, and training can continue from them."""
import argparse

import pytest
import torch
import torchvision
from mmengine.runner import load_checkpoint
from helpers import (IMG, VIT_ARCH, TimmLayoutViT, assert_same, build_algorithm, four_block_dino,
                     loaded, pretrained, torchvision_features)

ARGS = argparse.Namespace(arch='vit_small', patch_size=16, lr=5e-4)  # as training scripts pickle


@pytest.fixture(scope='module')
def image():
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(2))


def seeded(factory, seed):
    torch.manual_seed(seed)
    model = factory()
    model.eval()
    return model


def prefixed(prefix, state_dict):
    return {prefix + k: v for k, v in state_dict.items()}


def import_and_export(tmp_path, checkpoint, source_format, target, branch=None):
    from mmdense.transfer import export_backbone, import_published
    source, imported = tmp_path / 'published.pth', tmp_path / 'imported.pth'
    torch.save(checkpoint, source)
    meta = import_published(str(source), str(imported), source_format)
    out = tmp_path / f'{target}_{branch}.pth'
    export_backbone(str(imported), str(out), target, branch)
    return meta, str(out), imported


def mmpretrain_vit_tokens(path, image):
    from mmpretrain.models import VisionTransformer
    vit = loaded(VisionTransformer(arch=VIT_ARCH, img_size=IMG, out_type='raw',
                                   init_cfg=pretrained(path)))
    with torch.no_grad():
        return vit(image)[0]


def test_dino_training_checkpoint(tmp_path, image):
    teacher, student = seeded(TimmLayoutViT, 0), seeded(TimmLayoutViT, 1)
    head = {'head.mlp.0.weight': torch.randn(64, 48), 'head.last_layer.weight_g': torch.ones(8, 1)}
    checkpoint = dict(teacher={**prefixed('backbone.', teacher.state_dict()), **head},
                      student={**prefixed('module.backbone.', student.state_dict()),
                               **prefixed('module.', head)},
                      epoch=100, args=ARGS)
    for branch, reference in (('teacher', teacher), ('student', student)):
        meta, path, _ = import_and_export(tmp_path, checkpoint, 'dino', 'mmpretrain', branch)
        with torch.no_grad():
            expected = reference(image)
        torch.testing.assert_close(mmpretrain_vit_tokens(path, image), expected, rtol=1e-5,
                                   atol=1e-5)
    assert meta['algorithm'] == 'DINO' and meta['source_branches'] == ['student', 'teacher']
    assert {'head.mlp.0.weight', 'head.last_layer.weight_g'} <= set(meta['dropped_keys'])


def test_continue_training_from_an_import(tmp_path):
    teacher, student = seeded(TimmLayoutViT, 0), seeded(TimmLayoutViT, 1)
    checkpoint = dict(teacher=prefixed('backbone.', teacher.state_dict()),
                      student=prefixed('module.backbone.', student.state_dict()))
    _, _, imported = import_and_export(tmp_path, checkpoint, 'dino', 'timm')
    assert set(torch.load(imported, weights_only=True)) == {'meta', 'state_dict'}
    _, model = build_algorithm('configs/dino/vit-s_toy.py', four_block_dino)
    load_checkpoint(model, str(imported), map_location='cpu', logger='silent')
    for module, reference in ((model.backbone, student), (model.teacher['backbone'], teacher)):
        assert torch.equal(module.layers[2].attn.qkv.weight, reference.blocks[2].attn.qkv.weight)
        assert torch.equal(module.ln1.bias, reference.norm.bias)


@pytest.mark.parametrize('wrap', ['bare', 'state_dict'])
def test_ibot_backbone_release(tmp_path, image, wrap):
    """A backbone-only release (the teacher) fills both branches; masked_embed is dropped."""
    teacher = seeded(TimmLayoutViT, 3)
    weights = {**teacher.state_dict(), 'masked_embed': torch.zeros(1, 48)}
    checkpoint = weights if wrap == 'bare' else dict(state_dict=prefixed('backbone.', weights))
    meta, path, imported = import_and_export(tmp_path, checkpoint, 'ibot', 'mmpretrain',
                                             'student')
    with torch.no_grad():
        expected = teacher(image)
    torch.testing.assert_close(mmpretrain_vit_tokens(path, image), expected, rtol=1e-5,
                               atol=1e-5)
    assert meta['source_branches'] == ['teacher'] and meta['dropped_keys'] == ['masked_embed']


def test_slotcon_training_checkpoint(tmp_path, image):
    from mmdet.models.backbones import ResNet
    encoder_q = seeded(torchvision.models.resnet18, 4)
    encoder_k = seeded(torchvision.models.resnet18, 5)
    model = {**prefixed('module.encoder_q.', encoder_q.state_dict()),
             **prefixed('module.encoder_k.', encoder_k.state_dict()),
             'module.projector_k.layers.0.weight': torch.randn(64, 512, 1, 1),
             'module.grouping_k.slot_embed.weight': torch.randn(8, 256)}
    checkpoint = dict(model=model, epoch=800, args=ARGS)
    for branch, reference in ((None, encoder_k), ('student', encoder_q)):
        meta, path, _ = import_and_export(tmp_path, checkpoint, 'slotcon', 'mmdet', branch)
        resnet = loaded(ResNet(depth=18, init_cfg=pretrained(path)))
        with torch.no_grad():
            assert_same(resnet(image), torchvision_features(reference, image))
    assert meta['algorithm'] == 'SlotCon' and meta['default_branch'] == 'teacher'
    assert 'fc.weight' in meta['dropped_keys']


@pytest.mark.parametrize('source_format', ['slotcon', 'torchvision'])
def test_torchvision_layout_backbone(tmp_path, image, source_format):
    """SlotCon's backbone-only release and a torchvision ResNet have the same names."""
    from mmpretrain.models import ResNet
    reference = seeded(torchvision.models.resnet18, 6)
    meta, path, _ = import_and_export(tmp_path, reference.state_dict(), source_format,
                                      'mmpretrain')
    resnet = loaded(ResNet(depth=18, out_indices=(0, 1, 2, 3), init_cfg=pretrained(path)))
    with torch.no_grad():
        assert_same(resnet(image), torchvision_features(reference, image))
    assert meta['dropped_keys'] == ['fc.bias', 'fc.weight']


def test_incomplete_backbone_is_refused(tmp_path):
    from mmdense.transfer import import_published
    weights = seeded(TimmLayoutViT, 0).state_dict()
    del weights['blocks.1.mlp.fc2.weight']
    torch.save(weights, tmp_path / 'broken.pth')
    with pytest.raises(KeyError, match=r"broken.pth: the timm-layout backbone lacks 1 keys.*"
                       r"layers.1.ffn.layers.1.weight"):
        import_published(str(tmp_path / 'broken.pth'), str(tmp_path / 'out.pth'), 'timm')


def test_unknown_format_is_refused(tmp_path):
    from mmdense.transfer import import_published
    with pytest.raises(ValueError, match="unknown source format 'mae'"):
        import_published(str(tmp_path / 'x.pth'), str(tmp_path / 'out.pth'), 'mae')
