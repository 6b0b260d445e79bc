"""check_transfer: passes on correct exports, and catches each trap that silently leaves a
downstream backbone at its random init (one test per trap)."""
import json
import os.path as osp
import shutil
import subprocess
import sys

import torch
from mmengine.config import Config
from helpers import ROOT, assert_fails, check, det_config, export, seg_config

FCN_ADE = osp.join(ROOT,
                   'configs/benchmarks/mmsegmentation/ade20k/fcn_r50-d8_80k_ade20k-512x512.py')
MMSEG_VIT = dict(type='VisionTransformer', img_size=64, patch_size=16, embed_dims=48,
                 num_layers=4, num_heads=3, mlp_ratio=2, out_indices=(0, 1, 2, 3),
                 final_norm=True, patch_bias=True, norm_cfg=dict(type='LN', eps=1e-6))


def fcn_r18_config(config=FCN_ADE):
    cfg = Config.fromfile(config)
    cfg.model.backbone.depth = 18
    cfg.model.decode_head.in_channels = 512
    cfg.model.auxiliary_head.in_channels = 256
    return cfg


def test_correct_exports_pass(dino, slotcon):
    reports = [check(det_config(), export(dino, 'mmdet')),
               check(seg_config(), export(dino, 'mmseg')),
               check(seg_config(MMSEG_VIT), export(dino, 'mmseg')),
               check(fcn_r18_config(), export(slotcon, 'mmseg'))]
    for report in reports:
        assert report.ok, report.format()
        assert set(report.statuses.values()) <= {'loaded', 'new'}
        assert not report.unexpected and not report.dropped
    pyramid = reports[0]
    assert pyramid.counts()['layers.3']['loaded'] == 12
    assert {pyramid.groups[n] for n, s in pyramid.statuses.items() if s == 'new'} == {
        'adapter.0', 'adapter.1'}
    assert reports[3].counts()['conv1']['loaded'] == 1


def test_trap_wrong_prefix(dino):
    """A prefix the file does not have; a file whose keys carry a prefix the config omits."""
    cfg = det_config()
    cfg.model.backbone.init_cfg.prefix = 'backbone.'
    assert_fails(check(cfg, export(dino, 'mmdet')), 'backbone. is not in the pretrained model')

    report = check(det_config(), dino.path)  # the pretraining checkpoint itself: nothing loads
    assert_fails(report, 'keep their random init')
    assert set(report.statuses.values()) == {'missing', 'new'}
    assert 'backbone.layers.0.attn.qkv.weight' in report.unexpected


def test_trap_mmseg_vit_key_layout(dino):
    """mmseg's ViT loads keys raw: an mmpretrain-layout file leaves its attention random."""
    report = check(seg_config(MMSEG_VIT), export(dino, 'mmdet'))
    assert_fails(report, 'keep their random init')
    missing = {n for n, s in report.statuses.items() if s == 'missing'}
    assert missing == {f'layers.{i}.attn.attn.{p}' for i in range(4)
                       for p in ('in_proj_weight', 'in_proj_bias', 'out_proj.weight',
                                 'out_proj.bias')}
    # and its default patch_bias=False silently drops the patch-embedding bias
    report = check(seg_config(dict(MMSEG_VIT, patch_bias=False)), export(dino, 'mmseg'))
    assert_fails(report, 'architecture mismatch')
    assert report.dropped == ['patch_embed.projection.bias']


def test_trap_resnet_v1c_stem(slotcon, tmp_path):
    """mmseg's fcn_r50-d8 base: ResNetV1c (deep stem) and pretrained='open-mmlab://...'."""
    path = export(slotcon, 'mmseg')
    config = tmp_path / 'fcn_as_in_mmseg.py'
    config.write_text("_base_ = 'mmseg::fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py'\n"
                      "custom_imports = dict(imports=['mmdense.transfer'])\n")
    base = fcn_r18_config(str(config))
    assert_fails(check(base, path), "model.pretrained='open-mmlab://resnet50_v1c' is set")

    base.model.pretrained = None  # still ResNetV1c: its stem finds nothing to load
    report = check(base, path)
    assert_fails(report, 'keep their random init')
    assert set(report.counts()['stem']) == {'missing'}  # 3 conv + 3 BN layers
    assert report.counts()['layer4']['loaded'] > 0
    assert {'conv1.weight', 'bn1.weight'} <= set(report.unexpected)


def test_trap_wrong_branch(dino, tmp_path):
    student = export(dino, 'mmdet', branch='student')
    assert_fails(check(det_config(), student), 'holds the student backbone of DINO but the '
                 'teacher one is wanted')
    assert check(det_config(), student, branch='student').ok  # when asked for

    orphan = tmp_path / 'no_sidecar.pth'  # a file without its sidecar cannot prove its branch
    shutil.copy(export(dino, 'mmdet', branch='student'), orphan)
    assert_fails(check(det_config(), str(orphan)), 'no sidecar JSON')
    report = check(det_config(), str(orphan), branch='teacher')  # the user vouches for it
    assert report.ok and 'taking --branch teacher on trust' in report.format()


def test_file_changed_after_export(dino, tmp_path):
    path = export(dino, 'mmdet', name='changed.pth')
    weights = torch.load(path, weights_only=True)
    weights['ln1.bias'] += 1
    torch.save(weights, path)
    assert_fails(check(det_config(), path), 'was changed after export')


def test_extra_backbone_parts_are_reported_not_failed(dino, tmp_path):
    """CoTAP-like: the last block holds an object-aware filter a plain downstream ViT lacks."""
    checkpoint = torch.load(dino.path, weights_only=True)
    extra = {'layers.3.prototypes': torch.randn(8, 48), 'layers.3.out_norm.weight': torch.ones(96)}
    checkpoint['state_dict'].update({'teacher.module.backbone.' + k: v for k, v in extra.items()})
    torch.save(checkpoint, tmp_path / 'cotap_like.pth')
    from mmdense.transfer import export_backbone
    sidecar = export_backbone(str(tmp_path / 'cotap_like.pth'), str(tmp_path / 'out.pth'), 'mmdet')
    assert sidecar['extra_keys'] == sorted(extra)
    report = check(det_config(), str(tmp_path / 'out.pth'))
    assert report.ok, report.format()
    assert report.unexpected == sorted(extra) and not report.dropped


def test_weights_overwritten_after_loading(dino):
    """A backbone whose own init re-initialises a loaded tensor is caught."""
    from mmdet.registry import MODELS

    from mmdense.transfer import ViTPyramid

    @MODELS.register_module(force=True)
    class ReinitPosEmbedPyramid(ViTPyramid):

        def init_weights(self):
            super().init_weights()
            torch.nn.init.trunc_normal_(self.pos_embed, std=0.02)

    cfg = det_config()
    cfg.model.backbone.type = 'ReinitPosEmbedPyramid'
    report = check(cfg, export(dino, 'mmdet'))
    assert_fails(report, "{'overwritten': 1}")
    assert report.statuses['pos_embed'] == 'overwritten'


def test_command_line_exit_status(dino, tmp_path):
    config = tmp_path / 'det.py'
    det_config().dump(str(config))
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools/analysis_tools/check_transfer.py'), str(config),
         export(dino, 'mmdet', branch='student')], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'FAIL: ' in result.stdout and 'transfer check: FAILED' in result.stdout
    with open(osp.splitext(export(dino, 'mmdet', branch='student'))[0] + '.json') as f:
        assert json.load(f)['branch'] == 'student'
