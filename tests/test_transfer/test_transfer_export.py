"""Export round trips: pretraining checkpoint → exported file → target backbone, same outputs.

A tiny DINO ViT (4 blocks, 48 dims) and a SlotCon ResNet-18 are built with random weights (the
teacher perturbed away from the student, so a branch mix-up shows) and saved as MMEngine
checkpoints; every target backbone loaded from an export must reproduce the teacher's features.
"""
import argparse
import copy
import json
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from helpers import (IMG, VIT_ARCH, TimmLayoutViT, assert_same, export, loaded, pickle_globals,
                     pretrained, torchvision_features)


@pytest.fixture(scope='module')
def image():
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


def vit_features(backbone, image, out_indices, out_type='featmap'):
    reference = copy.deepcopy(backbone)
    reference.eval()
    reference.out_indices, reference.out_type = list(out_indices), out_type
    with torch.no_grad():
        return reference(image)


def resnet_features(backbone, image):
    reference = copy.deepcopy(backbone)
    reference.eval()
    reference.out_indices = (0, 1, 2, 3)
    with torch.no_grad():
        return reference(image)


# ------------------------------------------------------------------------------------ ViT targets
def test_vit_to_mmpretrain(dino, image):
    from mmpretrain.models import VisionTransformer
    path = export(dino, 'mmpretrain')
    target = loaded(VisionTransformer(arch=VIT_ARCH, img_size=IMG, out_indices=[1, 3],
                                      out_type='featmap', init_cfg=pretrained(path)))
    with torch.no_grad():
        outputs = target(image)
    teacher = dino.model.teacher['backbone']
    assert_same(outputs, vit_features(teacher, image, [1, 3]))
    assert not torch.allclose(outputs[-1], vit_features(dino.model.backbone, image, [3])[0])


@pytest.mark.parametrize('target', ['mmdet', 'mmseg', 'timm'])
def test_vit_to_mmdet_pyramid_backbone(dino, image, target):
    """The registered ViTPyramid (mmdet and mmseg) loads an export of any ViT layout."""
    import mmdense.transfer  # noqa: F401  (registers ViTPyramid)
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.registry import DefaultScope
    from mmpretrain.models import VisionTransformer
    from mmseg.registry import MODELS as MMSEG_MODELS
    path = export(dino, target)
    scope, registry = ('mmseg', MMSEG_MODELS) if target == 'mmseg' else ('mmdet', MMDET_MODELS)
    with DefaultScope.overwrite_default_scope(scope):
        pyramid = loaded(registry.build(dict(type='ViTPyramid', arch=VIT_ARCH, img_size=IMG,
                                             out_indices=(0, 1, 2, 3),
                                             init_cfg=pretrained(path))))
    with torch.no_grad():
        blocks = VisionTransformer.forward(pyramid, image)  # the ViT part, before the adapter
        levels = pyramid(image)
    assert_same(blocks, vit_features(dino.model.teacher['backbone'], image, [0, 1, 2, 3]))
    assert [tuple(level.shape) for level in levels] == [(2, 48, 16, 16), (2, 48, 8, 8),
                                                        (2, 48, 4, 4), (2, 48, 2, 2)]
    assert torch.equal(levels[2], blocks[2]) and torch.equal(levels[3], F.max_pool2d(blocks[3], 2))


def test_vit_to_mmseg_vision_transformer(dino, image):
    from mmseg.models.backbones import VisionTransformer as MMSegViT
    path = export(dino, 'mmseg')
    assert 'layers.0.attn.attn.in_proj_weight' in torch.load(path, weights_only=True)
    target = loaded(MMSegViT(img_size=IMG, patch_size=16, embed_dims=48, num_layers=4,
                             num_heads=3, mlp_ratio=2, out_indices=(1, 3), final_norm=True,
                             patch_bias=True, norm_cfg=dict(type='LN', eps=1e-6),
                             init_cfg=pretrained(path)))
    with torch.no_grad():
        outputs = target(image)
    assert_same(outputs, vit_features(dino.model.teacher['backbone'], image, [1, 3]), exact=False)


def test_vit_to_timm_layout_and_back(dino, image):
    from mmdense.transfer import import_published
    from mmdense.transfer.checkpoints import load_file
    path = export(dino, 'timm')
    reference = TimmLayoutViT()
    reference.load_state_dict(torch.load(path, weights_only=True), strict=True)
    with torch.no_grad():
        tokens = reference.eval()(image)
    expected = vit_features(dino.model.teacher['backbone'], image, [3], out_type='raw')[0]
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)

    # re-imported with the importer, it is the mmpretrain export again, tensor for tensor
    reimported = argparse.Namespace(path=str(dino.dir / 'reimported.pth'))
    import_published(path, reimported.path, 'timm')
    again = load_file(export(reimported, 'mmpretrain'))
    original = load_file(export(dino, 'mmpretrain'))
    assert again.keys() == original.keys()
    assert all(torch.equal(again[k], original[k]) for k in original)


# --------------------------------------------------------------------------------- ResNet targets
def resnet_target(target, path):
    if target == 'mmdet':
        from mmdet.models.backbones import ResNet
    elif target == 'mmseg':
        from mmseg.models.backbones import ResNet
    else:
        from mmpretrain.models import ResNet
    return loaded(ResNet(depth=18, out_indices=(0, 1, 2, 3), init_cfg=pretrained(path)))


@pytest.mark.parametrize('target', ['mmdet', 'mmseg', 'mmpretrain'])
def test_resnet_to_openmmlab_targets(slotcon, image, target):
    path = export(slotcon, target)
    with torch.no_grad():
        outputs = resnet_target(target, path)(image)
    assert_same(outputs, resnet_features(slotcon.model.teacher['backbone'], image))


def test_resnet_to_torchvision(slotcon, image):
    import torchvision
    path = export(slotcon, 'torchvision')
    model = torchvision.models.resnet18()
    result = model.load_state_dict(torch.load(path, weights_only=True), strict=False)
    assert sorted(result.missing_keys) == ['fc.bias', 'fc.weight']
    assert not result.unexpected_keys
    with torch.no_grad():
        outputs = torchvision_features(model.eval(), image)
    assert_same(outputs, resnet_features(slotcon.model.teacher['backbone'], image))


def test_student_branch_on_request(slotcon, image):
    path = export(slotcon, 'mmdet', branch='student')
    with torch.no_grad():
        outputs = resnet_target('mmdet', path)(image)
    assert_same(outputs, resnet_features(slotcon.model.backbone, image))
    with open(osp.splitext(path)[0] + '.json') as f:
        sidecar = json.load(f)
    assert (sidecar['branch'], sidecar['default_branch']) == ('student', 'teacher')


# ------------------------------------------------------------------------- the files themselves
@pytest.mark.parametrize('source,target', [('dino', 'mmdet'), ('dino', 'mmseg'), ('dino', 'timm'),
                                           ('slotcon', 'torchvision'), ('slotcon', 'mmseg')])
def test_exported_files_hold_tensors_only(request, source, target):
    source = request.getfixturevalue(source)
    path = export(source, target)
    state_dict = torch.load(path, map_location='cpu', weights_only=True)
    assert isinstance(state_dict, dict) and state_dict
    assert all(isinstance(k, str) and type(v) is torch.Tensor for k, v in state_dict.items())
    assert all(not k.startswith(('backbone.', 'teacher.')) for k in state_dict)
    allowed = {'collections.OrderedDict', 'torch._utils._rebuild_tensor_v2'}
    assert {g for g in pickle_globals(path) if not g.endswith('Storage')} <= allowed
    with open(osp.splitext(path)[0] + '.json') as f:
        sidecar = json.load(f)
    from mmdense.transfer.checkpoints import sha256sum
    assert sidecar['source_sha256'] == sha256sum(source.path)
    assert sidecar['file_sha256'] == sha256sum(path)
    assert (sidecar['branch'], sidecar['target']) == ('teacher', target)


# --------------------------------------------------------------------------------------- errors
def edited_checkpoint(source, tmp_path, edit):
    checkpoint = torch.load(source.path, weights_only=True)
    edit(checkpoint)
    path = tmp_path / 'edited.pth'
    torch.save(checkpoint, path)
    return argparse.Namespace(path=str(path))


def test_unknown_algorithm_is_refused(dino, tmp_path):
    def rename(checkpoint):
        checkpoint['meta']['cfg'] = checkpoint['meta']['cfg'].replace("type='DINO'",
                                                                      "type='MysteryNet'")

    source = edited_checkpoint(dino, tmp_path, rename)
    with pytest.raises(ValueError, match=r"edited.pth: unknown algorithm 'MysteryNet'.*--branch"):
        export(source, 'mmdet')
    export(source, 'mmdet', branch='teacher')  # an explicit branch is enough


def test_missing_teacher_branch_is_refused(dino, tmp_path):
    def drop_teacher(checkpoint):
        for key in [k for k in checkpoint['state_dict'] if k.startswith('teacher.')]:
            del checkpoint['state_dict'][key]

    source = edited_checkpoint(dino, tmp_path, drop_teacher)
    with pytest.raises(KeyError, match=r"edited.pth: DINO checkpoint has no teacher backbone"):
        export(source, 'mmdet')


def test_unsupported_target_is_refused(dino):
    with pytest.raises(ValueError, match="'torchvision' is not supported for a vit backbone"):
        export(dino, 'torchvision')


def test_checkpoint_without_config_is_refused(dino, tmp_path):
    source = edited_checkpoint(dino, tmp_path, lambda c: c.pop('meta'))
    with pytest.raises(KeyError, match='no meta.cfg or meta.algorithm'):
        export(source, 'mmdet')
