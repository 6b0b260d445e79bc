"""Export round trips: pretraining checkpoint → exported file → target backbone, same outputs.

A tiny DINO ViT (4 blocks, 48 dims) and a SlotCon ResNet-18 are built with random weights (the
teacher perturbed away from the student, so a branch mix-up shows) and saved as MMEngine
checkpoints; every target backbone loaded from an export must reproduce the teacher's features.
"""
import argparse
import copy
import io
import json
import os.path as osp
import pickletools
import zipfile

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DefaultScope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VIT_ARCH = dict(embed_dims=48, num_layers=4, num_heads=3, feedforward_channels=96)
IMG = 64


def pretrained(path):
    return dict(type='Pretrained', checkpoint=str(path))


def build_algorithm(config, edit):
    from mmdense.registry import MODELS
    from mmdense.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(osp.join(ROOT, config))
    edit(cfg)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdense'):
        model = MODELS.build(cfg.model)
    with torch.no_grad():  # a teacher unlike the student, BN statistics included
        for param in model.teacher.parameters():
            param.add_(0.05 * torch.randn_like(param))
        for name, buffer in model.teacher.named_buffers():
            if name.endswith('running_mean'):
                buffer.add_(0.1 * torch.randn_like(buffer))
            elif name.endswith('running_var'):
                buffer.mul_(1.5)
    return cfg, model.eval()


def save_runner_checkpoint(cfg, model, path):
    """What MMEngine's CheckpointHook stores that matters here: the config text and weights."""
    torch.save(dict(meta=dict(cfg=cfg.pretty_text, epoch=1), state_dict=model.state_dict()),
               path)


def tiny_dino(cfg):
    cfg.model.backbone.update(arch=VIT_ARCH, img_size=IMG)
    cfg.model.head.update(in_channels=48, hidden_channels=64, bottleneck_channels=32,
                          out_channels=128)
    cfg.model.loss.out_channels = 128


def tiny_slotcon(cfg):
    cfg.model.neck.hidden_channels = 64
    cfg.model.head.num_prototypes = 8
    cfg.model.predictor.hidden_channels = 64


@pytest.fixture(scope='module')
def dino(tmp_path_factory):
    cfg, model = build_algorithm('configs/dino/vit-s_toy.py', tiny_dino)
    path = tmp_path_factory.mktemp('dino') / 'epoch_1.pth'
    save_runner_checkpoint(cfg, model, path)
    return argparse.Namespace(path=str(path), model=model, dir=path.parent)


@pytest.fixture(scope='module')
def slotcon(tmp_path_factory):
    cfg, model = build_algorithm('configs/slotcon/r18_toy.py', tiny_slotcon)
    path = tmp_path_factory.mktemp('slotcon') / 'epoch_3.pth'
    save_runner_checkpoint(cfg, model, path)
    return argparse.Namespace(path=str(path), model=model, dir=path.parent)


@pytest.fixture(scope='module')
def image():
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


def export(source, target, branch=None, name=None):
    from mmdense.transfer import export_backbone
    out = osp.join(osp.dirname(source.path), name or f'{target}_{branch or "default"}.pth')
    export_backbone(source.path, out, target, branch)
    return out


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


def loaded(module):
    module.init_weights()
    module.eval()  # mmpretrain backbones' train() returns None
    return module


def assert_same(outputs, expected, exact=True):
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected):
        if exact:
            assert torch.equal(out, ref)
        else:
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


class TimmLayoutViT(nn.Module):
    """A pre-norm ViT written against the timm / DINO key layout, independent of mmpretrain:
    the reference for the ``timm`` target and for importing DINO / iBOT / timm checkpoints."""

    def __init__(self, dims=48, depth=4, heads=3, hidden=96, patch=16, img=IMG):
        super().__init__()
        self.heads = heads
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dims, patch, patch)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dims))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, (img // patch)**2 + 1, dims))
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.Module()
            block.norm1, block.norm2 = nn.LayerNorm(dims, eps=1e-6), nn.LayerNorm(dims, eps=1e-6)
            block.attn = nn.Module()
            block.attn.qkv, block.attn.proj = nn.Linear(dims, 3 * dims), nn.Linear(dims, dims)
            block.mlp = nn.Module()
            block.mlp.fc1, block.mlp.fc2 = nn.Linear(dims, hidden), nn.Linear(hidden, dims)
            self.blocks.append(block)
        self.norm = nn.LayerNorm(dims, eps=1e-6)

    def attention(self, attn, x):
        b, n, d = x.shape
        q, k, v = attn.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * (d // self.heads)**-0.5).softmax(dim=-1)
        return attn.proj((weights @ v).transpose(1, 2).reshape(b, n, d))

    def forward(self, x):
        """Final-norm tokens (B, 1 + N, D), class token first."""
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = x + self.attention(block.attn, block.norm1(x))
            x = x + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))
        return self.norm(x)


def torchvision_features(model, image):
    """Stage outputs of a torchvision ResNet (its forward ends in the classifier)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(image))))
    outs = []
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = stage(x)
        outs.append(x)
    return outs


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
def pickle_globals(path):
    """Module.name of every global the file's pickle refers to."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith('data.pkl')))
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
        if opcode.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'UNICODE'):
            strings.append(arg)
        elif opcode.name == 'STACK_GLOBAL':
            found.add('.'.join(strings[-2:]))
        elif opcode.name == 'GLOBAL':
            found.add(arg.replace(' ', '.'))
    return found


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
